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


N_BASE_FEATURES = 16
DETAIL_GRID = 4
N_PART_FEATURES = N_BASE_FEATURES + 2 + DETAIL_GRID * DETAIL_GRID


def part_features(image: np.ndarray, parsing: np.ndarray, protocol: Protocol) -> np.ndarray:
    """(n_parts, 34) float32 statistics of each part's mask, read at the image's full resolution:
    presence, area and box relative to the body, colour mean/spread, dark/bright/red shares and
    texture energy; the box's width and height as logs of multiples of the face's height (the head
    is the body's yardstick: a build or a hem length is a ratio to it, and a linear model adds
    logs); and where the part's dark details are (:func:`detail_grid`: a collar, a zip, buttons, a
    ribbed hem are a few pixels each, lost in a 48 px crop). They give the annotator what a crop
    blurs."""
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
    face_ys = np.nonzero(np.isin(parsing, protocol.parts["face"].class_ids))[0] if "face" in protocol.parts else ()
    face_h = float(face_ys.max() - face_ys.min() + 1) if len(face_ys) else 0.0
    for i, part in enumerate(protocol.parts.values()):
        mask = np.isin(parsing, part.class_ids) if part.class_ids else np.ones_like(human)
        n = int(mask.sum())
        if n == 0:
            continue
        py, px = np.nonzero(mask)
        px_ = img[mask]
        mean, std = px_.mean(0), px_.std(0)
        lum = px_.mean(1)
        w, h = px.max() - px.min() + 1, py.max() - py.min() + 1
        relative = [np.log(w / face_h), np.log(h / face_h)] if face_h and part.class_ids else [0.0, 0.0]
        out[i] = [1.0, n / body_area, ((px.min() + px.max()) / 2 - bx0) / bw, ((py.min() + py.max()) / 2 - by0) / bh,
                  w / bw, h / bh, *mean, *std,
                  (lum < 0.25).mean(), (lum > 0.8).mean(), ((px_[:, 0] > 0.5) & (px_[:, 1] < 0.35)).mean(),
                  float(texture[mask].mean()), *relative,
                  *(detail_grid(gray, mask, (py.min(), py.max() + 1, px.min(), px.max() + 1)) if part.class_ids
                    else np.zeros(DETAIL_GRID * DETAIL_GRID))]
    return out


def detail_grid(gray: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], cells: int = DETAIL_GRID) -> np.ndarray:
    """(cells * cells,) share of the part's pixels in each cell of its box that are clearly darker
    than the part's median (below 0.75 of it): where its seams, collar, buttons or hem band are."""
    y0, y1, x0, x1 = box
    g, m = gray[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    dark = (g < 0.75 * np.median(g[m])) & m
    ey, ex = np.linspace(0, g.shape[0], cells + 1).astype(int), np.linspace(0, g.shape[1], cells + 1).astype(int)
    out = np.zeros(cells * cells, np.float32)
    for a in range(cells):
        for b in range(cells):
            total = m[ey[a]:ey[a + 1], ex[b]:ex[b + 1]].sum()
            if total:
                out[a * cells + b] = dark[ey[a]:ey[a + 1], ex[b]:ex[b + 1]].sum() / total
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
