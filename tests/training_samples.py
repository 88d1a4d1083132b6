"""Synthetic samples shaped like a snapshot's (image, parsing map, caption groups, keypoints)."""

from __future__ import annotations

import numpy as np

from flywheel.annotation.captions import caption_groups
from flywheel.synthetic.samples import synthetic_samples  # noqa: F401 (re-exported for the tests)
from flywheel.synthetic.source import SyntheticConfig, render_sample


def snapshot_rows(protocol, store, indices, seed: int = 5, width: int = 96, height: int = 144) -> list[dict]:
    """Annotated-pool rows of clean renders (bytes and parsing maps put in ``store``), ready to publish."""
    from flywheel.annotation.captions import join_caption
    from flywheel.synthetic.source import encode_parsing

    cfg = SyntheticConfig(seed=seed, bad_fraction=0.0, width=width, height=height)
    rows = []
    for i in indices:
        s = render_sample(cfg, protocol, i)
        answers = {k: v for k, v in s.truth["attributes"].items() if v is not None}
        groups = caption_groups(protocol, answers, seed=i, present_classes=set(np.unique(s.parsing).tolist()))
        rows.append({"record_id": f"rec{i:05d}", "sha256": store.put(s.data), "media_type": s.media_type,
                     "parsing_sha256": store.put(encode_parsing(s.parsing)), "height": s.height, "width": s.width,
                     "person_type": answers.get("person_type"), "caption_groups": [g.as_row() for g in groups],
                     "caption": join_caption(groups), "answers": answers, "keypoints": s.keypoints.reshape(-1).tolist(),
                     "person_box": [0.0, 0.0, float(s.width), float(s.height)], "face_box": None, "quality": 60.0,
                     "face_quality": None, "source": "synthetic", "licence": "CC0-1.0", "attribution": "renderer"})
    return rows
