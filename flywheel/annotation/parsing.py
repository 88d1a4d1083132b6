"""Human parsing maps (the protocol's 18 ATR classes) for every annotated image.

Backends, tried in order for each image:
- ``source``: the map shipped with the image (synthetic source, academic folders).
- ``segformer``: a transformers semantic-segmentation checkpoint on the same 18 classes,
  from a local directory (off without one; no download).
- ``fallback``: no weights: the person's silhouette by GrabCut inside the detected person
  box, split into parts by geometry around the detected face (face and hair at the head,
  upper clothes and arms in the torso band, pants and legs below, shoes at the feet). It is
  coarse by design; its mIoU against the synthetic ground truth is printed by the
  annotation benchmark.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from flywheel.backends import BackendUnavailable

# ATR class ids used by the fallback
HAIR, UPPER, PANTS, LEFT_SHOE, RIGHT_SHOE, FACE, LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM = 2, 4, 6, 9, 10, 11, 12, 13, 14, 15


def decode_parsing(data: bytes) -> np.ndarray:
    arr = np.array(Image.open(io.BytesIO(data)))
    if arr.ndim != 2:
        raise ValueError(f"a parsing map must be single-channel class ids, got shape {arr.shape}")
    return arr.astype(np.uint8)


def geometric_parsing(image: np.ndarray, person_box, face_box=None, iterations: int = 4) -> np.ndarray:
    """The no-weights fallback (see module docstring). Boxes are in ``image`` pixels."""
    h, w = image.shape[:2]
    out = np.zeros((h, w), np.uint8)
    if person_box is None:
        return out
    x0, y0, x1, y1 = (int(round(v)) for v in person_box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return out
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models from OpenCV's RNG: the same image, the same map, in any process
    try:
        cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), mask, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_RECT)
        person = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    except cv2.error:
        person = np.zeros((h, w), bool)
        person[y0:y1, x0:x1] = True
    ys, xs = np.nonzero(person)
    if not len(ys):
        return out
    top, bottom = ys.min(), ys.max() + 1
    if face_box is not None:
        fx0, fy0, fx1, fy1 = face_box
    else:  # a standing person's head: the top eighth of the silhouette, centred
        fh = (bottom - top) / 8
        cx = xs[ys < top + fh].mean() if (ys < top + fh).any() else (x0 + x1) / 2
        fx0, fy0, fx1, fy1 = cx - fh * 0.4, top + fh * 0.15, cx + fh * 0.4, top + fh
    fw, fh = fx1 - fx0, fy1 - fy0
    cx = (fx0 + fx1) / 2
    yy, xx = np.mgrid[0:h, 0:w]
    torso_top, torso_bottom = fy1 + 0.2 * fh, fy1 + 3.2 * fh
    feet = bottom - 0.05 * (bottom - top)
    head = person & (yy < torso_top)
    out[head] = HAIR
    face = ((xx - cx) / (fw / 2 + 1e-6)) ** 2 + ((yy - (fy0 + fy1) / 2) / (fh / 2 + 1e-6)) ** 2 <= 1.0
    out[head & face] = FACE
    torso_band = person & (yy >= torso_top) & (yy < torso_bottom)
    central = np.abs(xx - cx) <= 1.25 * fw
    out[torso_band & central] = UPPER
    out[torso_band & ~central & (xx > cx)] = LEFT_ARM  # the person's left is the image's right
    out[torso_band & ~central & (xx <= cx)] = RIGHT_ARM
    legs = person & (yy >= torso_bottom) & (yy < feet)
    out[legs] = PANTS
    shoes = person & (yy >= feet)
    out[shoes & (xx > cx)] = LEFT_SHOE
    out[shoes & (xx <= cx)] = RIGHT_SHOE
    return out


class SegformerParser:
    """A local transformers semantic-segmentation checkpoint with the protocol's 18 classes."""

    def __init__(self, model_dir: str | Path | None):
        if not model_dir or not Path(model_dir).is_dir():
            raise BackendUnavailable(f"segformer parser: no checkpoint directory at {model_dir!r}")
        import torch
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        self._torch = torch
        self._processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self._model = AutoModelForSemanticSegmentation.from_pretrained(str(model_dir), local_files_only=True).eval()
        if self._model.config.num_labels != 18:
            raise BackendUnavailable(f"segformer parser: {model_dir} predicts {self._model.config.num_labels} classes, not 18")

    def parse(self, image: np.ndarray) -> np.ndarray:
        inputs = self._processor(images=image, return_tensors="pt")
        with self._torch.inference_mode():
            logits = self._model(**inputs).logits
        up = self._torch.nn.functional.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        return up.argmax(1)[0].numpy().astype(np.uint8)


def mean_iou(predicted: np.ndarray, truth: np.ndarray, n_classes: int = 18) -> dict[int, float]:
    """Per-class IoU over the classes present in either map."""
    out = {}
    for c in range(n_classes):
        p, t = predicted == c, truth == c
        union = (p | t).sum()
        if union:
            out[c] = float((p & t).sum() / union)
    return out
