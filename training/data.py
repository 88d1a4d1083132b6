"""Daring's data discretization (CosmicMan Sec. 4.2): snapshot samples to training tensors.

Per sample: the caption is rebuilt from its stored groups — the body group first, then the
scene ("other") group, then the garment groups shuffled, each garment group dropped with
``group_dropout`` and the whole caption with ``caption_dropout`` (as CosmicMan's public
training code does, for classifier-free guidance). Each masked group gets a mask slot:
the body-level mask h_1 (every human class) and one outfit-level mask per garment group
(its parsing classes); the other group has no mask. Token spans come from the tokenizer's
offset mapping: a token belongs to the group whose character span holds it — no phrase is
searched for in re-tokenised text. Image, parsing map and masks flip together, with left
and right classes swapped so "left shoe" stays the person's left. An SDXL base's second
tokenizer gives ``input_ids_2`` for the same caption (same vocabulary, so token positions match).

Aspect: images are never squashed. Training runs at an aspect bucket (:func:`bucket_size`: the
snapshot's median aspect at the base's pixel count, in multiples the UNet can halve), and an
image of another aspect is centre-cropped to it (:func:`crop_box`), image and parsing alike, as
diffusers' training examples crop.
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
    def for_model(cls, base, samples=None, **overrides) -> "DiscretizeSettings":
        """Images at the model's size, or at the aspect bucket of ``samples`` when given; masks at the
        UNet input's (latent) size."""
        h, w = bucket_size(base, median_aspect(samples)) if samples else base.image_size
        return cls(**{"height": h, "width": w, "mask_height": h // base.vae_scale, "mask_width": w // base.vae_scale,
                      **overrides})

    @classmethod
    def for_evaluation(cls, base, samples=None) -> "DiscretizeSettings":
        """Held-out items as they are: no flip, no dropout, groups in stored order."""
        return cls.for_model(base, samples, shuffle_groups=False, group_dropout=0.0, caption_dropout=0.0, flip=False)


def median_aspect(samples) -> float:
    """Median height / width of the samples' images."""
    return float(np.median([smp.image.shape[0] / smp.image.shape[1] for smp in samples]))


def size_multiple(base) -> int:
    """Pixel sizes must be multiples of this: the VAE's scale times every UNet halving."""
    return base.vae_scale * 2 ** (len(base.unet.config.block_out_channels) - 1)


def bucket_size(base, aspect: float, tolerance: float = 0.05) -> tuple[int, int]:
    """(h, w) with about the base's pixel count at ``aspect`` (h / w), in multiples of
    :func:`size_multiple`; the base's own size when its aspect is within ``tolerance``."""
    h0, w0 = base.image_size
    if abs(h0 / w0 - aspect) <= tolerance * aspect:
        return h0, w0
    f = size_multiple(base)
    area = h0 * w0
    best = None
    for w in range(f, 4 * max(h0, w0) + f, f):
        h = max(f, round(aspect * w / f) * f)
        score = (abs(np.log((h / w) / aspect)), abs(np.log(h * w / area)))
        if best is None or score < best[0]:
            best = (score, (h, w))
        if w * h > 2 * area:
            break
    return best[1]


def crop_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the centred region of a ``source`` (h, w) image with ``target``'s aspect."""
    sh, sw = source
    th, tw = target
    if sh * tw > th * sw:  # taller than the target: crop rows
        h = max(1, round(sw * th / tw))
        return (sh - h) // 2, 0, h, sw
    w = max(1, round(sh * tw / th))
    return 0, (sw - w) // 2, sh, w


def fit(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], interpolation: int) -> np.ndarray:
    """``image`` cropped to ``box`` and resized to ``size`` (h, w)."""
    y0, x0, h, w = box
    return cv2.resize(image[y0:y0 + h, x0:x0 + w], (size[1], size[0]), interpolation=interpolation)


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

    def __init__(self, samples, protocol: Protocol, tokenizer, settings: DiscretizeSettings | None = None, tokenizer_2=None):
        self.s = settings or DiscretizeSettings()
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.human = set(protocol.human_class_ids)
        self.flip = flip_table(protocol)
        self.items, self.boxes = [], []
        for smp in samples:  # cropped to the aspect and resized once, kept small
            box = crop_box(smp.image.shape[:2], (self.s.height, self.s.width))
            img = fit(smp.image, box, (self.s.height, self.s.width), cv2.INTER_AREA)
            par = fit(smp.parsing, box, (self.s.mask_height, self.s.mask_width), cv2.INTER_NEAREST)
            self.items.append((smp.key, img, par, list(smp.meta["caption_groups"] or [])))
            self.boxes.append(box)

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, text: str) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        enc = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                             return_offsets_mapping=True)
        return torch.tensor(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def second_ids(self, text: str) -> dict:
        """``input_ids_2`` for an SDXL base's second tokenizer (nothing otherwise)."""
        if self.tokenizer_2 is None:
            return {}
        return {"input_ids_2": torch.tensor(self.tokenizer_2(text, padding="max_length", truncation=True,
                                                             max_length=self.tokenizer_2.model_max_length)["input_ids"])}

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
                "masks": torch.from_numpy(masks), "group_valid": torch.from_numpy(valid), "caption": text, "key": key,
                **self.second_ids(text)}


def collate(batch: list[dict]) -> dict:
    keys = ("pixel_values", "input_ids", "token_group", "masks", "group_valid") + (("input_ids_2",) if "input_ids_2" in batch[0] else ())
    out = {k: torch.stack([b[k] for b in batch]) for k in keys}
    out["caption"] = [b["caption"] for b in batch]
    out["key"] = [b["key"] for b in batch]
    return out
