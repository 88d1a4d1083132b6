"""Counting people and measuring the largest face.

Bodies come from the person detector (HOG by default), faces from a Haar cascade. A
face whose centre lies inside a body box belongs to that body; any other face is a
person whose body the detector missed (upper-body shots and headshots, which a
pedestrian detector does not see). When a body has no detected face, its face size is
estimated from the body box and flagged as an estimate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from flywheel.backends import BackendUnavailable
from flywheel.detect.boxes import Box, area, suppress
from flywheel.detect.haar import HaarDetector
from flywheel.detect.hog import HogPersonDetector
from flywheel.detect.yolo import YoloPersonDetector
from flywheel.filters.settings import FilterSettings

log = logging.getLogger(__name__)
FACE_PER_BODY_BOX = 0.1
LARGE_FACE = 0.12  # face height / image height above which the frame is a close-up
MIN_SKIN_SHARE = 0.25  # of a face box's centre that must look like skin  # a standing person's head is ~1/7.5 of their height; HOG boxes add ~25% margin


@dataclass
class PeopleResult:
    n_persons: int
    person_box: Box | None
    face_box: Box | None
    face_size: float | None  # height of the largest face, original pixels
    face_estimated: bool
    bodies: list[Box] = field(default_factory=list)
    faces: list[Box] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # "bodies", "faces": where detection spent its time


class PeopleDetector:
    def __init__(self, settings: FilterSettings | None = None):
        """The backend, pyramid steps, thresholds and working heights are the filter chain's
        (:class:`FilterSettings`, its defaults when None), chosen in ``benchmarks/filter_chain.py``:
        coarser pyramids with looser thresholds keep what the finer, stricter ones found at about half the cost."""
        s = settings or FilterSettings()
        self.body_backend = "hog"
        self._body = None
        if s.person_detector == "yolo":
            try:
                self._body = YoloPersonDetector(str(s.yolo_weights) if s.yolo_weights else None)
                self.body_backend = "yolo"
            except BackendUnavailable as exc:
                log.warning("%s; using the HOG people detector instead", exc)
        if self._body is None:
            self._hog = HogPersonDetector(hit_threshold=s.body_hit_threshold, scale=s.body_scale,
                                          working_height=s.body_working_height)
        self._faces = HaarDetector(scale_factor=s.face_scale_factor, min_neighbors=s.face_min_neighbors,
                                   working_height=s.face_working_height)
        self.face_head_height = s.face_head_height
        self.face_fallback_height = s.face_fallback_height

    def _bodies(self, image: np.ndarray) -> list[Box]:
        if self._body is not None:
            return suppress(self._body.detect(image))
        return suppress([d.box for d in self._hog.detect(image)])

    def detect(self, image: np.ndarray, scale: float = 1.0) -> PeopleResult:
        """``image`` is the working copy; ``scale`` its pixels per original pixel."""
        inv = 1.0 / scale
        t0 = time.perf_counter()
        work_bodies = suppress(self._bodies(image), iou_threshold=0.2, containment=0.4)
        t1 = time.perf_counter()
        heads = [(b[0], b[1], b[2], b[1] + 0.4 * (b[3] - b[1])) for b in work_bodies]  # where a standing person's head is
        bodies = [tuple(v * inv for v in b) for b in work_bodies]
        skin = skin_mask(image)
        faces = self._find_faces(image, heads, skin)
        faces = plausible_faces([tuple(v * inv for v in b) for b in faces], bodies)
        seconds = {"bodies": t1 - t0, "faces": time.perf_counter() - t1}
        H = image.shape[0] * inv
        if faces and max(f[3] - f[1] for f in faces) > LARGE_FACE * H:
            # A face this large means a close-up (upper body or headshot): no whole pedestrian fits in
            # the frame, so pedestrian-detector hits are parts of the people whose faces we see.
            bodies = []
        # a face belongs to a body when it sits above the body's lower edge within its horizontal extent
        lone_faces = [f for f in faces if not any(b[0] <= (f[0] + f[2]) / 2 <= b[2] and (f[1] + f[3]) / 2 <= b[3] for b in bodies)]
        n = len(bodies) + len(lone_faces)
        face = max(faces, key=area) if faces else None
        person = max(bodies, key=area) if bodies else None
        if person is None and face is not None:  # a headshot or upper-body shot: the person extends below the face
            w, h = face[2] - face[0], face[3] - face[1]
            W, H = image.shape[1] * inv, image.shape[0] * inv
            person = (max(0.0, face[0] - w), max(0.0, face[1] - 0.3 * h), min(W, face[2] + w), min(H, face[3] + 3 * h))
        estimated = False
        face_size = (face[3] - face[1]) if face is not None else None
        if face is None and person is not None:
            face_size, estimated = (person[3] - person[1]) * FACE_PER_BODY_BOX, True
        return PeopleResult(n, person, face, face_size, estimated, bodies, faces, seconds)

    def _find_faces(self, image: np.ndarray, heads: list[Box], skin: np.ndarray) -> list[Box]:
        """Skin-coloured faces, each cascade run at the scale its faces need, looking no further than needed:
        each detected body's head region scaled to ``face_head_height`` (a standing person's face is about a third
        of it: small faces reach the cascade's window, large regions are not scanned at more pixels than their face
        needs); when that finds no face, the whole image at ``face_working_height`` (coarse: the large faces of
        close-ups, whose bodies the pedestrian detector misses or mistakes); and, only when neither a body nor a
        face was found, the whole image again at ``face_fallback_height`` (a finer look for a person whose body the
        detector missed). Skipping the whole-image look once the bodies' heads have faces cut the face time from
        5.9 to 5.0 ms per image with the same precision and recall (benchmarks/filter_chain.py)."""
        cascade = self._faces
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image

        def skin_faces(boxes: list[Box]) -> list[Box]:
            return [f for f in suppress(boxes) if skin_share(skin, f) >= MIN_SKIN_SHARE]

        boxes = cascade.head_boxes(gray, heads, self.face_head_height, enlarge_only=False)
        faces = skin_faces(boxes)
        if not faces:
            boxes += cascade.scan(gray, cascade.working_height)
            faces = skin_faces(boxes)
        if not faces and not heads and self.face_fallback_height > cascade.working_height:
            boxes += cascade.scan(gray, self.face_fallback_height)
            faces = skin_faces(boxes)
        return faces


def plausible_faces(faces: list[Box], bodies: list[Box], min_relative_size: float = 0.4) -> list[Box]:
    """Drop cascade hits that cannot be the head of a subject:
    - one below a larger face's chin and within a few face widths of it: patterns, pockets,
      hands and sleeves on that person's body (people side by side have faces at one height);
    - one in the lower part of a detected body;
    - one under 40% of the largest face's height: posters, pictures, distant bystanders, which
      are not the photo's subjects."""
    kept: list[Box] = []
    for f in sorted(faces, key=area, reverse=True):
        cx, cy, h = (f[0] + f[2]) / 2, (f[1] + f[3]) / 2, f[3] - f[1]
        if kept and h < min_relative_size * (kept[0][3] - kept[0][1]):
            continue
        if any(abs(cx - (k[0] + k[2]) / 2) < 3 * (k[2] - k[0]) and cy > k[3] for k in kept):
            continue
        if any(b[0] <= cx <= b[2] and cy > b[1] + 0.4 * (b[3] - b[1]) for b in bodies):
            continue
        kept.append(f)
    return kept


def skin_mask(image: np.ndarray) -> np.ndarray:
    """Skin-coloured pixels by the classical YCrCb rule (Chai & Ngan): 133 <= Cr <= 173, 77 <= Cb <= 127,
    which holds across skin tones because it ignores luminance."""
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)


def skin_share(skin: np.ndarray, box: Box) -> float:
    """Share of skin pixels in the central 60% of a box (the cheeks, nose and mouth of a face)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a0, a1 = int(y0 + 0.2 * h), int(np.ceil(y1 - 0.2 * h))
    b0, b1 = int(x0 + 0.2 * w), int(np.ceil(x1 - 0.2 * w))
    region = skin[max(0, a0):max(0, a1), max(0, b0):max(0, b1)]
    return float(region.mean()) if region.size else 0.0
