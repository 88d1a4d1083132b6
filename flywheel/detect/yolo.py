"""Optional person detector: an ultralytics YOLO model loaded from a local weights file.

Off unless the ``ultralytics`` package is installed and ``weights`` points at a file; the
caller reports why once and falls back to the default detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.backends import BackendUnavailable
from flywheel.detect.boxes import Box


class YoloPersonDetector:
    def __init__(self, weights: str | Path | None, confidence: float = 0.4):
        if not weights or not Path(weights).is_file():
            raise BackendUnavailable(f"YOLO person detector: no weights file at {weights!r}")
        try:
            from ultralytics import YOLO
        except ImportError:
            raise BackendUnavailable("YOLO person detector: the ultralytics package is not installed") from None
        self._model = YOLO(str(weights))
        self.confidence = confidence

    def detect(self, image: np.ndarray) -> list[Box]:
        result = self._model.predict(image, classes=[0], conf=self.confidence, verbose=False)[0]
        return [tuple(float(v) for v in b) for b in result.boxes.xyxy.cpu().numpy()]
