"""Synthetic renders shaped like a snapshot's samples (image, parsing map, answers, caption groups,
keypoints), for benchmarks and tests that need snapshot-like data without publishing a snapshot."""

from __future__ import annotations

import cv2
import numpy as np

from flywheel.annotation.captions import caption_groups
from flywheel.snapshot.loader import Sample
from flywheel.synthetic.source import SyntheticConfig, render_sample


def synthetic_samples(protocol, seed: int, count: int) -> list[Sample]:
    cfg = SyntheticConfig(seed=seed, bad_fraction=0.0, width=128, height=192)
    out = []
    for i in range(count):
        s = render_sample(cfg, protocol, i)
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        answers = {k: v for k, v in s.truth["attributes"].items() if v is not None}
        groups = caption_groups(protocol, answers, seed=i, present_classes=set(np.unique(s.parsing).tolist()))
        out.append(Sample(f"k{i}", img, s.parsing, {"caption_groups": [g.as_row() for g in groups],
                                                     "answers": answers, "keypoints": s.keypoints.reshape(-1).tolist()}))
    return out
