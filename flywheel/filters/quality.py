"""No-reference image quality through pyiqa.

PIQE needs no weights and is the default; it runs as :mod:`flywheel.filters.piqe` (pyiqa's
algorithm in NumPy/OpenCV, double precision, several times faster on one core). Learned metrics (LIQE, MUSIQ, ...) run only
from a local weights file (``weights``); pyiqa would otherwise download them, which this
system never does at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.backends import BackendUnavailable

WEIGHT_FREE = {"piqe"}


class QualityScorer:
    def __init__(self, metric: str = "piqe", weights: str | Path | None = None):
        self.metric = metric
        if metric == "piqe":
            from flywheel.filters.piqe import piqe

            self._piqe, self.lower_better = piqe, True
            return
        import pyiqa
        import torch

        self._piqe = None
        if metric not in WEIGHT_FREE:
            if not weights or not Path(weights).is_file():
                raise BackendUnavailable(f"quality metric {metric!r} needs local weights (none at {weights!r})")
            self._metric = pyiqa.create_metric(metric, device="cpu", pretrained_model_path=str(weights))
        else:
            self._metric = pyiqa.create_metric(metric, device="cpu")
        self.lower_better = bool(self._metric.lower_better)
        self._torch = torch

    def score(self, image: np.ndarray) -> float:
        if self._piqe is not None:
            return self._piqe(image)
        x = self._torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
        with self._torch.inference_mode():
            return float(self._metric(x))

    def passes(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.lower_better else value >= threshold
