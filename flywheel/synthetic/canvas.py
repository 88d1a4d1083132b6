"""Drawing into an RGB image and its parsing label map at once.

Every primitive paints the same geometry into both arrays, so the parsing map is exact
by construction; ``cls=None`` paints the image only (eyes, buttons, background props).
Coordinates are float pixels; OpenCV's fixed-point ``shift`` keeps sub-pixel precision.
"""

from __future__ import annotations

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fix(pts) -> np.ndarray:
    return np.round(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32)


class Canvas:
    def __init__(self, image: np.ndarray, labels: np.ndarray):
        if image.shape[:2] != labels.shape:
            raise ValueError("image and label map differ in size")
        self.image = image
        self.labels = labels

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    def poly(self, pts, cls: int | None, color) -> None:
        p = _fix(pts).reshape(-1, 1, 2)
        cv2.fillPoly(self.image, [p], _c(color), lineType=cv2.LINE_AA, shift=_SHIFT)
        if cls is not None:
            cv2.fillPoly(self.labels, [p], int(cls), lineType=cv2.LINE_8, shift=_SHIFT)

    def ellipse(self, center, axes, cls: int | None, color, angle: float = 0.0, start: float = 0.0, end: float = 360.0) -> None:
        c = tuple(int(v) for v in _fix(center))
        ax = tuple(max(1, int(v)) for v in _fix(np.maximum(axes, 0.5)))
        cv2.ellipse(self.image, c, ax, angle, start, end, _c(color), -1, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.ellipse(self.labels, c, ax, angle, start, end, int(cls), -1, cv2.LINE_8, _SHIFT)

    def circle(self, center, radius: float, cls: int | None, color) -> None:
        self.ellipse(center, (radius, radius), cls, color)

    def capsule(self, p0, p1, r0: float, r1: float, cls: int | None, color) -> None:
        """A tapered limb: a trapezoid between two joints with round ends."""
        p0 = np.asarray(p0, dtype=float)
        p1 = np.asarray(p1, dtype=float)
        d = p1 - p0
        n = np.linalg.norm(d)
        if n < 1e-6:
            self.circle(p0, max(r0, r1), cls, color)
            return
        perp = np.array([-d[1], d[0]]) / n
        self.poly([p0 + perp * r0, p1 + perp * r1, p1 - perp * r1, p0 - perp * r0], cls, color)
        self.circle(p0, r0, cls, color)
        self.circle(p1, r1, cls, color)

    def line(self, p0, p1, thickness: float, cls: int | None, color) -> None:
        self.capsule(p0, p1, thickness / 2, thickness / 2, cls, color)

    def rect(self, x0, y0, x1, y1, cls: int | None, color) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, color)


def _c(color) -> tuple[int, int, int]:
    return tuple(int(v) for v in color)


def apply_pattern(image: np.ndarray, mask: np.ndarray, pattern: str, base, period: float, rng: np.random.Generator) -> None:
    """Paint a garment pattern inside ``mask`` (the garment's visible pixels)."""
    if pattern == "solid" or not mask.any():
        return
    period = max(4, int(round(period)))
    base = np.asarray(base, dtype=float)
    accent = np.where(base.mean() > 140, base * 0.35, np.minimum(255, base * 0.4 + 150))
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    off = rng.integers(0, period, size=2)
    if pattern == "striped":
        sel = ((yy + off[0]) // max(2, period // 2)) % 2 == 1
    elif pattern == "plaid":
        band = max(2, period // 4)
        sel = ((yy + off[0]) % period < band) | ((xx + off[1]) % period < band)
    elif pattern == "dotted":
        cy = (yy + off[0]) % period - period / 2
        cx = (xx + off[1]) % period - period / 2
        sel = cy * cy + cx * cx <= (period * 0.22) ** 2
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    sel &= mask
    image[sel] = accent.astype(np.uint8)


def draw_outlines(image: np.ndarray, labels: np.ndarray, strength: float = 0.55) -> None:
    """Darken pixels on a boundary between two parsing classes: the cartoon ink line."""
    edge = np.zeros(labels.shape, dtype=bool)
    dv = labels[1:, :] != labels[:-1, :]
    dh = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    image[edge] = (image[edge].astype(np.float32) * strength).astype(np.uint8)
