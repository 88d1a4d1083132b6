"""Daring's data discretization (CosmicMan Sec. 4.2): snapshot samples to training tensors.

Per sample: the caption is rebuilt from its stored groups — the body group first, then the
scene ("other") group, then the garment groups shuffled, each garment group dropped with
``group_dropout`` and the whole caption with ``caption_dropout`` (as CosmicMan's public
training code does, for classifier-free guidance). Each masked group gets a mask slot:
the body-level mask h_1 (every human class) and one outfit-level mask per garment group
(its parsing classes); the other group has no mask. Token spans come from the tokenizer's
offset mapping: a token belongs to the group whose character span holds it — no phrase is
searched for in re-tokenised text. Image, parsing map and masks flip together, with left
and right classes swapped so "left shoe" stays the person's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from flywheel.protocol import Protocol


@dataclass
class DiscretizeSettings:
    height: int = 96
    width: int = 64
    mask_height: int = 96  # masks at the UNet input's resolution (latent size for a VAE model)
    mask_width: int = 64
    max_groups: int = 8
    shuffle_groups: bool = True
    group_dropout: float = 0.1
    caption_dropout: float = 0.05
    flip: bool = True

    @classmethod
    def for_model(cls, base, **overrides) -> "DiscretizeSettings":
        """Images at the model's size, masks at its UNet input's (latent) size."""
        (h, w), (mh, mw) = base.image_size, base.latent_size
        return cls(**{"height": h, "width": w, "mask_height": mh, "mask_width": mw, **overrides})

    @classmethod
    def for_evaluation(cls, base) -> "DiscretizeSettings":
        """Held-out items as they are: no flip, no dropout, groups in stored order."""
        return cls.for_model(base, shuffle_groups=False, group_dropout=0.0, caption_dropout=0.0, flip=False)


def flip_table(protocol: Protocol) -> np.ndarray:
    """Class id lookup that swaps left-X and right-X."""
    names = list(protocol.parsing_classes)
    table = np.arange(max(256, len(names)), dtype=np.uint8)
    for i, n in enumerate(names):
        if n.startswith("left-") and (other := "right-" + n[5:]) in names:
            j = names.index(other)
            table[i], table[j] = j, i
    return table


Span = tuple[int, int, int, tuple[int, ...]]  # start char, end char, mask slot, parsing class ids


def build_caption(groups: list[dict], rng: np.random.Generator, s: DiscretizeSettings, human: set[int]
                  ) -> tuple[str, list[Span]]:
    """Caption text and its masked groups' spans."""
    if rng.random() < s.caption_dropout:
        return "", []
    head = [g for g in groups if set(g["class_ids"] or []) >= human and g["class_ids"]]
    other = [g for g in groups if not g["class_ids"]]
    garments = [g for g in groups if g not in head and g not in other]
    if s.shuffle_groups:
        garments = [garments[i] for i in rng.permutation(len(garments))]
    garments = [g for g in garments if rng.random() >= s.group_dropout]
    text, spans, slot = "", [], 0
    for g in head + other + garments:
        if text:
            text += ", "
        start = len(text)
        text += g["text"]
        if g["class_ids"] and slot < s.max_groups:
            spans.append((start, len(text), slot, tuple(g["class_ids"])))
            slot += 1
    return text, spans


def token_groups(offsets: list[tuple[int, int]], spans: list[Span]) -> np.ndarray:
    out = np.full(len(offsets), -1, np.int64)
    for t, (a, b) in enumerate(offsets):
        if b <= a:  # special tokens and padding
            continue
        for start, end, slot, _ in spans:
            if start <= a and b <= end:
                out[t] = slot
                break
    return out


class DaringDataset(torch.utils.data.Dataset):
    """Snapshot samples (images, parsing maps, caption groups) as Daring training items."""

    def __init__(self, samples, protocol: Protocol, tokenizer, settings: DiscretizeSettings | None = None):
        self.s = settings or DiscretizeSettings()
        self.tokenizer = tokenizer
        self.human = set(protocol.human_class_ids)
        self.flip = flip_table(protocol)
        self.items = []
        for smp in samples:  # resized once, kept small
            img = cv2.resize(smp.image, (self.s.width, self.s.height), interpolation=cv2.INTER_AREA)
            par = cv2.resize(smp.parsing, (self.s.mask_width, self.s.mask_height), interpolation=cv2.INTER_NEAREST)
            self.items.append((smp.key, img, par, list(smp.meta["caption_groups"] or [])))

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, text: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_offsets_mapping=True)
        return torch.tensor(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def __getitem__(self, i: int) -> dict:
        key, img, par, groups = self.items[i]
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        if self.s.flip and rng.random() < 0.5:
            img, par = img[:, ::-1], self.flip[par[:, ::-1]]
        text, spans = build_caption(groups, rng, self.s, self.human)
        ids, offsets = self.encode(text)
        masks = np.zeros((self.s.max_groups, self.s.mask_height, self.s.mask_width), np.float32)
        valid = np.zeros(self.s.max_groups, bool)
        for _, _, slot, class_ids in spans:
            masks[slot] = np.isin(par, class_ids)
            valid[slot] = masks[slot].any()
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0,
                "input_ids": ids, "token_group": torch.from_numpy(token_groups(offsets, spans)),
                "masks": torch.from_numpy(masks), "group_valid": torch.from_numpy(valid), "caption": text, "key": key}


def collate(batch: list[dict]) -> dict:
    out = {k: torch.stack([b[k] for b in batch]) for k in ("pixel_values", "input_ids", "token_group", "masks", "group_valid")}
    out["caption"] = [b["caption"] for b in batch]
    out["key"] = [b["key"] for b in batch]
    return out
