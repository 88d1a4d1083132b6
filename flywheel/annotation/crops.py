"""Part crops chosen by the parsing map: what the attribute annotator looks at.

For every part of the protocol, the crop is the bounding box of the part's classes in
the parsing map (padded), resized to a square, with the part's mask as a fourth channel.
A part with no pixels gives an empty crop (all zeros), which is itself evidence (no hat).
The body-level part covers every human class; a part without classes (the scene) is the
whole image.
"""

from __future__ import annotations

import cv2
import numpy as np

from flywheel.protocol import Protocol


def part_crops(image: np.ndarray, parsing: np.ndarray, protocol: Protocol, size: int = 48, pad: float = 0.12) -> np.ndarray:
    """(n_parts, 4, size, size) uint8: RGB + part mask, parts in protocol order."""
    if parsing.shape != image.shape[:2]:
        parsing = cv2.resize(parsing, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((len(protocol.parts), 4, size, size), np.uint8)
    h, w = parsing.shape
    for i, part in enumerate(protocol.parts.values()):
        if part.class_ids:
            mask = np.isin(parsing, part.class_ids)
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        else:
            mask = np.ones((h, w), bool)
            y0, y1, x0, x1 = 0, h, 0, w
        side = max(y1 - y0, x1 - x0) * (1 + 2 * pad)  # square crops keep shapes (lengths) comparable
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        a0, a1 = int(round(cy - side / 2)), int(round(cy + side / 2))
        b0, b1 = int(round(cx - side / 2)), int(round(cx + side / 2))
        crop = np.zeros((a1 - a0, b1 - b0, 4), np.uint8)
        sy0, sy1, sx0, sx1 = max(0, a0), min(h, a1), max(0, b0), min(w, b1)
        crop[sy0 - a0:sy1 - a0, sx0 - b0:sx1 - b0, :3] = image[sy0:sy1, sx0:sx1]
        crop[sy0 - a0:sy1 - a0, sx0 - b0:sx1 - b0, 3] = mask[sy0:sy1, sx0:sx1] * 255
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return out


N_PART_FEATURES = 16


def part_features(image: np.ndarray, parsing: np.ndarray, protocol: Protocol) -> np.ndarray:
    """(n_parts, 16) float32 statistics of each part's mask: presence, area and box relative
    to the body, colour mean/spread, dark/bright/red shares and texture energy. They give the
    annotator what a 48 px crop blurs (relative lengths, exact colours, fine patterns)."""
    if parsing.shape != image.shape[:2]:
        parsing = cv2.resize(parsing, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    out = np.zeros((len(protocol.parts), N_PART_FEATURES), np.float32)
    human = parsing > 0
    ys, xs = np.nonzero(human)
    if len(ys):
        by0, by1, bx0, bx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    else:
        by0, by1, bx0, bx1 = 0, parsing.shape[0], 0, parsing.shape[1]
    bh, bw = max(1, by1 - by0), max(1, bx1 - bx0)
    img = image.astype(np.float32) / 255.0
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    texture = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    body_area = max(1, int(human.sum()))
    for i, part in enumerate(protocol.parts.values()):
        mask = np.isin(parsing, part.class_ids) if part.class_ids else np.ones_like(human)
        n = int(mask.sum())
        if n == 0:
            continue
        py, px = np.nonzero(mask)
        px_ = img[mask]
        mean, std = px_.mean(0), px_.std(0)
        lum = px_.mean(1)
        out[i] = [1.0, n / body_area, ((px.min() + px.max()) / 2 - bx0) / bw, ((py.min() + py.max()) / 2 - by0) / bh,
                  (px.max() - px.min() + 1) / bw, (py.max() - py.min() + 1) / bh, *mean, *std,
                  (lum < 0.25).mean(), (lum > 0.8).mean(), ((px_[:, 0] > 0.5) & (px_[:, 1] < 0.35)).mean(),
                  float(texture[mask].mean())]
    return out


class Views:
    """What the annotator sees of N images: part crops (N, P, 4, S, S) and part statistics (N, P, F)."""

    def __init__(self, crops: np.ndarray, stats: np.ndarray):
        if len(crops) != len(stats):
            raise ValueError("crops and statistics differ in length")
        self.crops, self.stats = crops, stats

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, idx) -> "Views":
        return Views(self.crops[idx], self.stats[idx])

    @classmethod
    def of(cls, images_and_maps, protocol: Protocol, size: int = 48) -> "Views":
        crops, stats = [], []
        for image, parsing in images_and_maps:
            crops.append(part_crops(image, parsing, protocol, size))
            stats.append(part_features(image, parsing, protocol))
        n = len(protocol.parts)
        return cls(np.stack(crops) if crops else np.zeros((0, n, 4, size, size), np.uint8),
                   np.stack(stats) if stats else np.zeros((0, n, N_PART_FEATURES), np.float32))

    @classmethod
    def concat(cls, views: list["Views"]) -> "Views":
        return cls(np.concatenate([v.crops for v in views]), np.concatenate([v.stats for v in views]))
