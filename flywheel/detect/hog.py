"""OpenCV's HOG + linear-SVM people detector (Dalal & Triggs), weights shipped with OpenCV.

The detector's window sees a 64x128 crop in which the person fills about three quarters
of the height, so a person filling most of a photo is larger than the largest window of
the image pyramid. Padding the image with a replicated border before detection restores
that margin; detection runs on a reduced grayscale copy for speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the input image's pixels
    score: float


class HogPersonDetector:
    def __init__(self, pad_fraction: float = 0.25, hit_threshold: float = -0.5, working_height: int = 256,
                 scale: float = 1.05, win_stride: int = 8):
        self.pad_fraction = pad_fraction
        self.hit_threshold = hit_threshold
        self.working_height = working_height
        self.scale = scale
        self.win_stride = win_stride
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: np.ndarray) -> list[Detection]:
        """People in an RGB (or grayscale) uint8 image, largest first."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        h, w = gray.shape
        ph, pw = int(h * self.pad_fraction), int(w * self.pad_fraction)
        padded = cv2.copyMakeBorder(gray, ph, ph, pw, pw, cv2.BORDER_REPLICATE)
        f = self.working_height / padded.shape[0]
        small = cv2.resize(padded, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        rects, weights = self._hog.detectMultiScale(
            small, winStride=(self.win_stride, self.win_stride), padding=(8, 8), scale=self.scale,
            hitThreshold=self.hit_threshold,
        )
        out = []
        for (x, y, rw, rh), score in zip(rects, np.asarray(weights).reshape(-1)):
            x0, y0 = x / f - pw, y / f - ph
            x1, y1 = (x + rw) / f - pw, (y + rh) / f - ph
            out.append(Detection((max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)), float(score)))
        out.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
        return out
