"""Scenes: a background, one or more people framed in it, and their ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.protocol import Protocol
from flywheel.synthetic.attributes import PersonTraits, sample_answers, sample_traits
from flywheel.synthetic.canvas import Canvas, draw_outlines
from flywheel.synthetic.figure import build_skeleton, draw_person, jitter

WALLS = [(214, 204, 186), (190, 200, 210), (226, 222, 214), (200, 214, 196), (222, 200, 200)]
FLOORS = [(150, 110, 72), (120, 120, 124), (176, 150, 110), (96, 80, 70)]
PLAINS = [(232, 232, 232), (200, 210, 224), (236, 226, 206), (180, 186, 190), (222, 236, 230), (90, 96, 110)]


@dataclass
class PersonTruth:
    answers: dict
    keypoints: np.ndarray  # (17, 3): x, y, visibility (2 visible, 0 outside the image)
    person_box: tuple[float, float, float, float]  # x0, y0, x1, y1
    face_box: tuple[float, float, float, float]


def draw_background(cv: Canvas, kind: str, rng: np.random.Generator) -> float:
    """Paint the background; returns the floor/horizon line (pixels)."""
    h, w = cv.height, cv.width
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    if kind == "plain":
        base = np.array(jitter(rng, PLAINS[int(rng.integers(len(PLAINS)))], 12), dtype=np.float32)
        cv.image[:] = np.clip(base * (1.04 - 0.08 * ramp), 0, 255).astype(np.uint8)
        return h * 0.92
    if kind == "indoor":
        floor_y = h * rng.uniform(0.74, 0.86)
        cv.image[:] = jitter(rng, WALLS[int(rng.integers(len(WALLS)))], 10)
        cv.rect(0, floor_y, w, h, None, jitter(rng, FLOORS[int(rng.integers(len(FLOORS)))], 10))
        # a window or a picture frame on the wall, off to one side
        fx = rng.uniform(0.02, 0.3) * w if rng.random() < 0.5 else rng.uniform(0.62, 0.8) * w
        fy, fw, fh = rng.uniform(0.08, 0.25) * h, rng.uniform(0.14, 0.2) * w, rng.uniform(0.12, 0.2) * h
        cv.rect(fx - 3, fy - 3, fx + fw + 3, fy + fh + 3, None, (90, 70, 50))
        cv.rect(fx, fy, fx + fw, fy + fh, None, jitter(rng, (170, 200, 230), 20))
        return floor_y
    # outdoor: sky, ground, a tree or two near the edges
    horizon = h * rng.uniform(0.55, 0.72)
    sky = np.array(jitter(rng, (120, 170, 225), 15), dtype=np.float32)
    cv.image[:] = np.clip(sky + (np.array([110, 70, 25], dtype=np.float32) * ramp), 0, 255).astype(np.uint8)
    ground = (70, 140, 60) if rng.random() < 0.6 else (150, 150, 146)
    cv.rect(0, horizon, w, h, None, jitter(rng, ground, 12))
    for _ in range(int(rng.integers(0, 3))):
        tx = rng.uniform(0.02, 0.18) * w if rng.random() < 0.5 else rng.uniform(0.82, 0.98) * w
        th = rng.uniform(0.15, 0.3) * h
        cv.rect(tx - 0.012 * w, horizon - th * 0.5, tx + 0.012 * w, horizon + 0.02 * h, None, (96, 66, 40))
        cv.circle((tx, horizon - th * 0.6), th * 0.3, None, jitter(rng, (40, 110, 50), 15))
    return horizon


def frame(person_type: str, answers: dict, traits: PersonTraits, w: int, h: int, rng: np.random.Generator,
          height_frac: float | None = None, cx: float | None = None) -> tuple[float, float, float]:
    """(centre x, head-top y, scale in pixels) that frame the person as asked."""
    head_h = 0.17 if answers["age"] == "child" else 0.13
    if person_type == "full body":
        frac = height_frac if height_frac is not None else rng.uniform(0.74, 0.86) * (1 + traits.height_jitter)
        if answers["age"] == "child" and height_frac is None:
            frac *= 0.85
        scale = h * frac
        visible = scale * (0.86 if answers.get("pose") == "sitting" else 1.0)
        top = rng.uniform(0.03 * h, max(0.031 * h, h - visible - 0.03 * h))
    elif person_type == "upper body":
        scale = h / (head_h + 0.5 * (1 - head_h)) * rng.uniform(0.88, 0.98)
        top = rng.uniform(0.02, 0.06) * h
    elif person_type == "headshot":
        scale = h / (head_h + 0.13) * rng.uniform(0.82, 0.92)
        top = rng.uniform(0.04, 0.08) * h
    else:
        raise ValueError(f"unknown person type {person_type!r}")
    if cx is None:
        cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    return cx, top, scale


def _fit_in_frame(sk, answers: dict, traits: PersonTraits, w: int, h: int, top: float):
    """Keep a full-body figure (raised or outstretched hands and the soles included) in the frame."""
    for _ in range(5):
        kp = sk.keypoints()
        m = 0.05 * sk.unit
        x0, x1 = kp[:, 0].min() - m, kp[:, 0].max() + m
        y0, y1 = min(kp[:, 1].min() - m, top), kp[:, 1].max() + 0.06 * sk.unit
        if x0 >= 0 and x1 <= w and y0 >= 0 and y1 <= h:
            break
        f = min(1.0, 0.98 * w / (x1 - x0), 0.98 * h / (y1 - y0))
        dx = -x0 if x0 < 0 else min(0.0, w - x1)
        dy = -y0 if y0 < 0 else min(0.0, h - y1)
        top = top + dy
        sk = build_skeleton(answers, traits, sk.cx + dx, top, sk.unit * f)
    return sk


def render_people(rng: np.random.Generator, protocol: Protocol, w: int, h: int, n_people: int = 1,
                  person_type: str | None = None, height_frac: float | None = None,
                  person_type_weights: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray, list[PersonTruth], str]:
    """Render a scene with ``n_people`` (0 for an empty scene). Returns image (RGB),
    parsing labels, each person's ground truth and the background kind."""
    image = np.zeros((h, w, 3), np.uint8)
    labels = np.zeros((h, w), np.uint8)
    cv = Canvas(image, labels)
    people: list[tuple[dict, PersonTraits]] = []
    for k in range(n_people):
        pt = person_type if (person_type or n_people > 1) else None
        answers = sample_answers(rng, protocol, person_type=pt or ("full body" if n_people > 1 else None),
                                 person_type_weights=person_type_weights)
        people.append((answers, sample_traits(rng)))
    background = people[0][0]["background"] if people else ["plain", "indoor", "outdoor"][int(rng.integers(3))]
    if n_people > 1:  # one scene, one background
        for answers, _ in people[1:]:
            answers["background"] = background
    floor = draw_background(cv, background, rng)
    if not people and rng.random() < 0.5:  # an empty stool now and then
        sx = rng.uniform(0.3, 0.7) * w
        cv.rect(sx - 0.1 * w, floor - 0.18 * h, sx + 0.1 * w, floor - 0.15 * h, None, (110, 80, 50))

    truths: list[PersonTruth] = []
    for k, (answers, traits) in enumerate(people):
        cx = None if n_people == 1 else w * (k + 0.5) / n_people + rng.uniform(-0.03, 0.03) * w
        cx, top, scale = frame(answers["person_type"], answers, traits, w, h, rng, height_frac=height_frac, cx=cx)
        sk = build_skeleton(answers, traits, cx, top, scale)
        if answers["person_type"] == "full body":
            sk = _fit_in_frame(sk, answers, traits, w, h, top)
        if answers.get("pose") == "sitting":  # a stool under the hips
            cv.rect(cx - 0.16 * scale, sk.hip_y + 0.01 * scale, cx + 0.16 * scale, sk.hip_y + 0.05 * scale, None, (110, 80, 50))
            for s in (1, -1):
                cv.rect(cx + s * 0.14 * scale - 0.012 * scale, sk.hip_y + 0.04 * scale, cx + s * 0.14 * scale + 0.012 * scale, sk.ankle[s][1] + 0.03 * scale, None, (100, 72, 46))
        before = labels.copy()
        draw_person(cv, answers, traits, sk, rng)
        drawn = np.argwhere(labels != before)
        box = (float(drawn[:, 1].min()), float(drawn[:, 0].min()), float(drawn[:, 1].max() + 1), float(drawn[:, 0].max() + 1)) if len(drawn) else (0.0, 0.0, 0.0, 0.0)
        kp = sk.keypoints()
        inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
        kps = np.zeros((17, 3), np.float32)
        kps[inside, :2] = kp[inside]
        kps[inside, 2] = 2
        hw, hh = sk.head_ax
        fx0, fy0 = max(0.0, sk.head_c[0] - hw), max(0.0, sk.head_c[1] - hh)
        fx1, fy1 = min(float(w), sk.head_c[0] + hw), min(float(h), sk.head_c[1] + hh)
        truths.append(PersonTruth(answers, kps, box, (float(fx0), float(fy0), float(fx1), float(fy1))))

    draw_outlines(image, labels)
    noise = rng.normal(0, 2.5, image.shape)
    image[:] = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, labels, truths, background
