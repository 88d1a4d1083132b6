"""OpenCV's Haar cascades (shipped with OpenCV): frontal faces, and upper bodies."""

from __future__ import annotations

import cv2
import numpy as np

from flywheel.detect.boxes import Box, suppress


class HaarDetector:
    """A cascade run on a grayscale copy scaled so that small faces reach the cascade's window."""

    def __init__(self, cascade: str = "haarcascade_frontalface_alt2.xml", working_height: int = 256,
                 min_neighbors: int = 2, scale_factor: float = 1.05, min_size: int = 20):
        path = cv2.data.haarcascades + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"could not load OpenCV cascade {path}")
        self.cascade = cascade
        self.working_height = working_height
        self.min_neighbors = min_neighbors
        self.scale_factor = scale_factor
        self.min_size = min_size

    def _run(self, gray: np.ndarray, f: float, ox: float = 0.0, oy: float = 0.0) -> list[Box]:
        work = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR if f > 1 else cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(work, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(self.min_size, self.min_size))
        return [(ox + x / f, oy + y / f, ox + (x + w) / f, oy + (y + h) / f) for (x, y, w, h) in np.asarray(found).reshape(-1, 4)]

    def detect(self, image: np.ndarray, heads: list[Box] = (), head_height: int = 96, enlarge_only: bool = True
               ) -> list[Box]:
        """Faces in the whole image, plus a closer look at ``heads`` (regions where a head is
        expected, e.g. the top of each detected body), each scaled to ``head_height`` rows so a small
        face fills the window (``enlarge_only``: never shrunk)."""
        return suppress(self.raw_boxes(image, heads, head_height, enlarge_only))

    def raw_boxes(self, image: np.ndarray, heads: list[Box] = (), head_height: int = 96, enlarge_only: bool = True
                  ) -> list[Box]:
        """:meth:`detect`'s boxes before overlapping ones are merged."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        return self.scan(gray, self.working_height) + self.head_boxes(gray, heads, head_height, enlarge_only)

    def head_boxes(self, image: np.ndarray, heads: list[Box], head_height: float, enlarge_only: bool = True
                   ) -> list[Box]:
        """Unmerged boxes of each head region, scaled to ``head_height`` rows (``enlarge_only``: never shrunk)."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        boxes: list[Box] = []
        for x0, y0, x1, y1 in heads:
            x0, y0 = max(0, int(x0)), max(0, int(y0))
            x1, y1 = min(gray.shape[1], int(np.ceil(x1))), min(gray.shape[0], int(np.ceil(y1)))
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            scale = head_height / (y1 - y0)
            boxes += self._run(gray[y0:y1, x0:x1], max(1.0, scale) if enlarge_only else scale, x0, y0)
        return boxes

    def scan(self, image: np.ndarray, height: int) -> list[Box]:
        """Unmerged boxes of the whole image searched at ``height`` rows."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        return self._run(gray, height / gray.shape[0])
