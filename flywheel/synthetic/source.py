"""The embedded synthetic human source: deterministic samples with exact ground truth.

``render_sample(config, protocol, index)`` depends only on (seed, index), so any sample
can be re-rendered alone, and a duplicate can point at an earlier index by re-rendering it.
A configurable fraction of samples is deliberately bad; each records its defect.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from flywheel.protocol import Protocol
from flywheel.synthetic.scene import render_people

DEFECTS = (
    "no_person", "multiple_people", "too_small", "blurred", "noisy",
    "compressed", "tiny_face", "truncated", "exact_duplicate", "near_duplicate",
)


class SyntheticConfig(BaseModel):
    """How the synthetic source renders (part of the `synthetic` source settings)."""

    seed: int = 0
    width: int = Field(256, ge=32)
    height: int = Field(384, ge=32)
    bad_fraction: float = Field(0.25, ge=0, le=1)
    defect_weights: dict[str, float] = Field(default_factory=lambda: {d: 1.0 for d in DEFECTS})
    person_type_weights: dict[str, float] = Field(default_factory=lambda: {"full body": 0.6, "upper body": 0.25, "headshot": 0.15})
    png_fraction: float = Field(0.25, ge=0, le=1)
    jpeg_quality: int = Field(92, ge=1, le=100)

    def model_post_init(self, _ctx) -> None:
        unknown = set(self.defect_weights) - set(DEFECTS)
        if unknown:
            raise ValueError(f"defect_weights: unknown defect(s) {sorted(unknown)}; known: {list(DEFECTS)}")


@dataclass
class SyntheticSample:
    index: int
    data: bytes  # the encoded image file, as a source would deliver it
    media_type: str
    width: int
    height: int
    parsing: np.ndarray | None  # (H, W) uint8 class ids, None where no exact map exists
    keypoints: np.ndarray | None  # (17, 3) of the main person
    truth: dict = field(default_factory=dict)

    @property
    def item(self) -> str:
        return f"synthetic-{self.index:08d}"


def _encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"could not encode synthetic image as {fmt}")
    return buf.tobytes()


def encode_parsing(labels: np.ndarray) -> bytes:
    """Parsing maps are single-channel PNGs whose pixel values are class ids."""
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def plan_defect(config: SyntheticConfig, index: int) -> str | None:
    rng = np.random.default_rng([config.seed, index, 7])
    if rng.random() >= config.bad_fraction:
        return None
    names = [d for d in DEFECTS if config.defect_weights.get(d, 0) > 0]
    if index == 0:
        names = [d for d in names if not d.endswith("duplicate")]
    if not names:
        return None
    p = np.asarray([config.defect_weights[d] for d in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def render_sample(config: SyntheticConfig, protocol: Protocol, index: int) -> SyntheticSample:
    defect = plan_defect(config, index)
    rng = np.random.default_rng([config.seed, index])
    w, h = config.width, config.height
    fmt = "png" if rng.random() < config.png_fraction else "jpeg"

    if defect in ("exact_duplicate", "near_duplicate"):
        j = index - 1 - int(rng.integers(min(index, 50)))
        original = render_sample(config, protocol, j)
        truth = dict(original.truth, defect=defect, duplicate_of=j)
        if defect == "exact_duplicate":
            return SyntheticSample(index, original.data, original.media_type, original.width, original.height,
                                   original.parsing, original.keypoints, truth)
        img = cv2.imdecode(np.frombuffer(original.data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:  # the original was a truncated file: duplicate its bytes with one changed
            data = original.data[:-1] + bytes([original.data[-1] ^ 1])
            return SyntheticSample(index, data, original.media_type, original.width, original.height, None, None, truth)
        crop = int(rng.integers(2, 6))
        img = img[crop: img.shape[0] - crop, crop: img.shape[1] - crop]
        img = cv2.resize(img, (original.width, original.height), interpolation=cv2.INTER_AREA)
        img = np.clip(img.astype(np.int16) + int(rng.integers(-8, 9)), 0, 255).astype(np.uint8)
        data = _encode(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), "jpeg", 85)
        return SyntheticSample(index, data, "image/jpeg", original.width, original.height, None, None, truth)

    n_people, person_type, height_frac = 1, None, None
    if defect == "no_person":
        n_people = 0
    elif defect == "multiple_people":
        n_people = int(rng.integers(2, 4))
    elif defect == "tiny_face":
        person_type, height_frac = "full body", float(rng.uniform(0.16, 0.26))
    if defect == "too_small":
        w, h = max(16, w // 3), max(16, h // 3)
    image, labels, people, background = render_people(
        rng, protocol, w, h, n_people=n_people, person_type=person_type, height_frac=height_frac,
        person_type_weights=config.person_type_weights,
    )
    if defect == "blurred":
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(2.5, 4.0)))
    elif defect == "noisy":
        noise = rng.normal(0, rng.uniform(30, 45), image.shape)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if defect == "compressed":
        fmt, quality = "jpeg", int(rng.integers(3, 8))
    else:
        quality = config.jpeg_quality
    data = _encode(image, fmt, quality)
    if defect == "truncated":
        data = data[: int(len(data) * rng.uniform(0.3, 0.7))]

    main = people[0] if people else None
    truth = {
        "defect": defect,
        "duplicate_of": None,
        "n_persons": len(people),
        "background": background,
        "person_type": main.answers["person_type"] if main else None,
        "attributes": main.answers if main else None,
        "person_boxes": [list(p.person_box) for p in people],
        "face_boxes": [list(p.face_box) for p in people],
    }
    return SyntheticSample(
        index, data, "image/png" if fmt == "png" else "image/jpeg", w, h, labels,
        main.keypoints if main else None, truth,
    )
