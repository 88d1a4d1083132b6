"""Counting people and measuring the largest face.

Bodies come from the person detector (HOG by default), faces from a Haar cascade. A
face whose centre lies inside a body box belongs to that body; any other face is a
person whose body the detector missed (upper-body shots and headshots, which a
pedestrian detector does not see). When a body has no detected face, its face size is
estimated from the body box and flagged as an estimate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from flywheel.detect.boxes import Box, area, suppress
from flywheel.detect.haar import HaarDetector
from flywheel.detect.hog import HogPersonDetector
from flywheel.detect.yolo import BackendUnavailable, YoloPersonDetector

log = logging.getLogger(__name__)
FACE_PER_BODY_BOX = 0.1
LARGE_FACE = 0.12  # face height / image height above which the frame is a close-up  # a standing person's head is ~1/7.5 of their height; HOG boxes add ~25% margin


@dataclass
class PeopleResult:
    n_persons: int
    person_box: Box | None
    face_box: Box | None
    face_size: float | None  # height of the largest face, original pixels
    face_estimated: bool
    bodies: list[Box] = field(default_factory=list)
    faces: list[Box] = field(default_factory=list)


class PeopleDetector:
    def __init__(self, body_backend: str = "hog", yolo_weights: str | None = None):
        self.body_backend = "hog"
        self._body = None
        if body_backend == "yolo":
            try:
                self._body = YoloPersonDetector(yolo_weights)
                self.body_backend = "yolo"
            except BackendUnavailable as exc:
                log.warning("%s; using the HOG people detector instead", exc)
        elif body_backend != "hog":
            raise ValueError(f"unknown person detector {body_backend!r} (hog or yolo)")
        if self._body is None:
            self._hog = HogPersonDetector()
        self._faces = HaarDetector()

    def _bodies(self, image: np.ndarray) -> list[Box]:
        if self._body is not None:
            return suppress(self._body.detect(image))
        return suppress([d.box for d in self._hog.detect(image)])

    def detect(self, image: np.ndarray, scale: float = 1.0) -> PeopleResult:
        """``image`` is the working copy; ``scale`` its pixels per original pixel."""
        inv = 1.0 / scale
        work_bodies = suppress(self._bodies(image), iou_threshold=0.2, containment=0.4)
        heads = [(b[0], b[1], b[2], b[1] + 0.4 * (b[3] - b[1])) for b in work_bodies]  # where a standing person's head is
        bodies = [tuple(v * inv for v in b) for b in work_bodies]
        faces = plausible_faces([tuple(v * inv for v in b) for b in self._faces.detect(image, heads)], bodies)
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
        return PeopleResult(n, person, face, face_size, estimated, bodies, faces)


def plausible_faces(faces: list[Box], bodies: list[Box]) -> list[Box]:
    """Drop cascade hits that cannot be a head: one below a larger face in the same column
    (polka dots, collars and hands under a real face), or one in the lower part of a body box."""
    kept: list[Box] = []
    for f in sorted(faces, key=area, reverse=True):
        cx, cy, w = (f[0] + f[2]) / 2, (f[1] + f[3]) / 2, f[2] - f[0]
        if any(abs(cx - (k[0] + k[2]) / 2) < (k[2] - k[0]) and cy > k[3] for k in kept):
            continue
        if any(b[0] <= cx <= b[2] and cy > b[1] + 0.4 * (b[3] - b[1]) for b in bodies):
            continue
        kept.append(f)
    return kept
