"""Settings of the filter chain (pydantic only: cheap to import, as the profile loader and every spawned worker
does; the people detector derives its defaults from them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class FilterSettings(BaseModel):
    """Thresholds and backends of the filter chain (paper defaults; profiles override)."""

    min_short_side: int = Field(640, ge=1, description="paper: images smaller than 640x1280 are removed")
    min_long_side: int = Field(1280, ge=1)
    max_pixels: int = Field(64_000_000, ge=1, description="decompression-bomb cap, checked from the header")
    max_decode_mb: float = Field(160, gt=0, description="memory one image may take to decode (full resolution for "
                                 "formats without reduced decoding; JPEGs decode at up to 1/8 scale), checked from the "
                                 "header: bounds the per-image memory of a worker")
    working_side: int = Field(512, ge=64, description="longest side of the decoded working copy")
    max_aspect: float = Field(4.0, ge=1, description="longer / shorter side above which an image is rejected before any "
                              "detector runs (detectors rescale to a fixed height: a 40000x2 strip would cost GBs)")
    min_analysed_side: int = Field(16, ge=1, description="shorter side of the working copy below which no detector runs")
    near_duplicate_bits: int = Field(48, ge=0, le=256, description="pHash-256 distance that counts as a near duplicate")
    person_detector: Literal["hog", "yolo"] = "hog"
    yolo_weights: Path | None = None
    min_face: float = Field(224, ge=0, description="paper: largest face at least 224x224")
    # the detectors' pyramids: each coarser step with a looser threshold keeps (within 0.01 of precision and recall
    # on the synthetic defects) what 1.05 steps found at twice the cost (benchmarks/filter_chain.py)
    body_scale: float = Field(1.2, gt=1, description="HOG people detector's pyramid step")
    body_hit_threshold: float = Field(-1.5, description="HOG SVM margin a window needs (lower: more hits; a coarser "
                                      "pyramid sees each person at fewer scales)")
    body_working_height: int = Field(240, ge=128, description="height the HOG people detector scales the image "
                                     "(padded by a quarter on each side) to; its window is 128 high (256: 0.25 ms more "
                                     "per image for the same recall; 224: 0.6 ms less, recall 0.007 lower on 2000 "
                                     "synthetic images)")
    face_scale_factor: float = Field(1.1, gt=1, description="the face cascade's pyramid step")
    face_min_neighbors: int = Field(1, ge=0, description="overlapping cascade hits a face needs (fewer pyramid levels, "
                                    "fewer hits per face); false hits are removed by the skin and placement rules")
    # the face search runs at the scale each look needs (was: the whole image at 256, head regions only enlarged to
    # 96): 2.5x less face time within 0.01 of precision and recall (benchmarks/filter_chain.py)
    face_working_height: int = Field(112, ge=24, description="height the whole image is scaled to for the face "
                                     "cascade, when the head regions of detected bodies had no face: its 20 px window "
                                     "finds faces from 20/112 of the image height up (the close-ups'); smaller faces "
                                     "are looked for in the head regions (128: recall 0.003 higher, 0.6 ms more per image)")
    face_head_height: float = Field(56, ge=24, description="height each detected body's head region (its top 40%) is "
                                    "scaled to for the face cascade (enlarged or reduced; 72 found no more on 2000 "
                                    "synthetic images, at 0.3 ms more per image)")
    face_fallback_height: int = Field(256, ge=0, description="when neither a body nor a face was found, the whole image "
                                      "again at this height, for a person whose body the detector missed (0: never)")
    quality_metric: str = "piqe"
    quality_weights: Path | None = None
    quality_threshold: float = Field(55.0, description="in the metric's own direction (PIQE: lower is better)")
    fake_classifier_dir: Path | None = Field(None, description="local CLIP checkpoint; off when unset")
    fake_threshold: float = 0.5
    workers: int = Field(2, ge=1)
    chunk_size: int = Field(16, ge=1)

    def analysis_key(self) -> str:
        """Identifies the settings that change an analysis; a cached analysis is reused only under the same key."""
        relevant = self.model_dump(mode="json", include={"max_pixels", "max_decode_mb", "working_side", "max_aspect", "min_analysed_side", "person_detector", "yolo_weights",
                                                          "body_scale", "body_hit_threshold", "body_working_height", "face_scale_factor", "face_min_neighbors",
                                                          "face_working_height", "face_head_height", "face_fallback_height",
                                                          "quality_metric", "quality_weights", "fake_classifier_dir"})
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]
