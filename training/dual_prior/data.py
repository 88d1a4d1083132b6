"""Stage 1/2 training items: the caption with the pose token appended, the person mask
M_shape, the skeleton mask M_pose (both at the fixed supervision size) and which tokens
are human-related and which is the pose token. Image, parsing and keypoints flip together."""

from __future__ import annotations

import numpy as np
import torch

from training.data import DaringDataset, build_caption, token_groups
from training.dual_prior.binding import HUMAN_WORDS, flip_keypoints, skeleton_mask


class DualPriorDataset(DaringDataset):
    def __init__(self, samples, protocol, tokenizer, settings, pose_token: str = "<sds>", map_size: tuple[int, int] = (96, 64),
                 human_words: tuple[str, ...] = HUMAN_WORDS, body_group: bool = False, thickness: int = 2, tokenizer_2=None):
        samples = list(samples)
        super().__init__(samples, protocol, tokenizer, settings, tokenizer_2)
        self.pose_token, self.map_size, self.body_group, self.thickness = pose_token, map_size, body_group, thickness
        self.pose_id = tokenizer.convert_tokens_to_ids(pose_token)
        if self.pose_id is None or self.pose_id == tokenizer.unk_token_id:
            raise ValueError(f"pose token {pose_token!r} is not in the tokenizer (add it first)")
        human_ids = set()
        for w in human_words:
            ids = tokenizer(w, add_special_tokens=False).input_ids
            if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
                human_ids.add(ids[0])
        self.human_ids = torch.tensor(sorted(human_ids) or [-1])
        # keypoints in the cropped region's pixels (see training.data.crop_box)
        self.keypoints = [(crop_keypoints(s.meta.get("keypoints"), box), box[2:]) for s, box in zip(samples, self.boxes)]

    def __getitem__(self, i: int) -> dict:
        key, img, par, groups = self.items[i]
        kp, source = self.keypoints[i]
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        if self.s.flip and rng.random() < 0.5:
            img, par = img[:, ::-1], self.flip[par[:, ::-1]]
            kp = flip_keypoints(kp, source[1])
        text, spans = build_caption(groups, rng, self.s, self.human)
        text = f"{text}, {self.pose_token}" if text else self.pose_token  # the pose token goes on every caption
        ids, offsets = self.encode(text)
        h, w = self.map_size
        import cv2

        shape = (cv2.resize(par, (w, h), interpolation=cv2.INTER_NEAREST) > 0).astype(np.float32)
        pose = skeleton_mask(kp, h, w, source, self.thickness)
        human_tokens = torch.isin(ids, self.human_ids)
        if self.body_group:
            human_tokens |= torch.from_numpy(token_groups(offsets, spans) == 0)
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0,
                "input_ids": ids, "human_tokens": human_tokens, "pose_tokens": ids == self.pose_id,
                "shape_mask": torch.from_numpy(shape), "pose_mask": torch.from_numpy(pose), "caption": text, "key": key,
                **self.second_ids(text)}


def crop_keypoints(keypoints, box: tuple[int, int, int, int]) -> list[float] | None:
    """COCO keypoints (x, y, v) shifted into a crop box's pixels; those outside it become invisible."""
    if keypoints is None or len(keypoints) < 51:
        return keypoints
    y0, x0, h, w = box
    k = np.asarray(keypoints, np.float32).reshape(17, 3).copy()
    k[:, 0] -= x0
    k[:, 1] -= y0
    outside = (k[:, 0] < 0) | (k[:, 1] < 0) | (k[:, 0] >= w) | (k[:, 1] >= h)
    k[outside, 2] = 0
    return k.reshape(-1).tolist()


def collate_dual(batch: list[dict]) -> dict:
    keys = ("pixel_values", "input_ids", "human_tokens", "pose_tokens", "shape_mask", "pose_mask") \
        + (("input_ids_2",) if "input_ids_2" in batch[0] else ())
    out = {k: torch.stack([b[k] for b in batch]) for k in keys}
    out["caption"] = [b["caption"] for b in batch]
    return out
