"""One person: skeleton geometry from the attributes, then drawing back to front.

Geometry is in body units (1.0 = head top to sole of an upright person) around an
origin at the head top; ``scale`` turns units into pixels. The person faces the camera,
so the person's left (COCO "left_*", ATR "left-arm") is on the image's right (+x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.synthetic.attributes import PersonTraits
from flywheel.synthetic.canvas import Canvas, apply_pattern

# ATR / SCHP class ids (the protocol file's parsing_classes order)
HAT, HAIR, SUNGLASSES, UPPER, SKIRT, PANTS, DRESS, BELT = 1, 2, 3, 4, 5, 6, 7, 8
LEFT_SHOE, RIGHT_SHOE, FACE, LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM, BAG, SCARF = 9, 10, 11, 12, 13, 14, 15, 16, 17

COLORS = {
    "white": (236, 236, 232), "black": (34, 34, 38), "red": (200, 38, 40), "blue": (40, 78, 190),
    "green": (40, 145, 70), "yellow": (236, 198, 44), "gray": (128, 128, 132), "pink": (240, 150, 182),
    "khaki": (190, 168, 118), "brown": (118, 74, 40),
}
HAIR_COLORS = {"black": (28, 24, 24), "brown": (102, 62, 32), "blond": (226, 196, 120), "red": (176, 70, 30), "gray": (182, 182, 184)}
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
WIDTH_FACTOR = {"slim": 0.84, "average": 1.0, "heavy": 1.28}
ARM_ANGLES = {  # (upper arm, forearm) angles from straight down, outward positive (radians)
    "arms down": (0.14, 0.08),
    "arms raised": (2.75, 2.95),
    "arms outstretched": (1.52, 1.57),
}


def jitter(rng: np.random.Generator, color, amount: int = 10) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


@dataclass
class Skeleton:
    """Joint positions (pixels) and the body measures the drawing needs."""

    head_c: np.ndarray
    head_ax: tuple[float, float]
    neck: tuple[np.ndarray, np.ndarray]
    shoulder: dict[int, np.ndarray]  # side (+1 left, -1 right) -> point
    elbow: dict[int, np.ndarray]
    wrist: dict[int, np.ndarray]
    hip: dict[int, np.ndarray]
    knee: dict[int, np.ndarray]
    ankle: dict[int, np.ndarray]
    toe_down: dict[int, float]  # extra drop of the foot under the ankle (px)
    waist_y: float
    hip_y: float
    crotch_y: float
    shoulder_y: float
    shoulder_half: float
    waist_half: float
    hip_half: float
    unit: float  # pixels per body unit
    wf: float
    cx: float

    def keypoints(self) -> np.ndarray:
        hc = self.head_c
        hw, hh = self.head_ax
        pts = [
            hc + (0, 0.25 * hh),
            hc + (0.38 * hw, -0.08 * hh), hc + (-0.38 * hw, -0.08 * hh),
            hc + (0.98 * hw, 0.05 * hh), hc + (-0.98 * hw, 0.05 * hh),
            self.shoulder[1], self.shoulder[-1], self.elbow[1], self.elbow[-1],
            self.wrist[1], self.wrist[-1], self.hip[1], self.hip[-1],
            self.knee[1], self.knee[-1], self.ankle[1], self.ankle[-1],
        ]
        return np.asarray(pts, dtype=np.float32)


def _dir(angle: float, side: int) -> np.ndarray:
    return np.array([np.sin(angle) * side, np.cos(angle)])


def build_skeleton(answers: dict, traits: PersonTraits, cx: float, top: float, scale: float) -> Skeleton:
    """Place every joint for a figure whose upright height is ``scale`` pixels."""
    u = scale
    child = answers["age"] == "child"
    woman = answers["gender"] == "woman"
    wf = WIDTH_FACTOR[answers["body_shape"]]
    head_h = 0.17 if child else 0.13
    head_w = head_h * (0.74 if woman else 0.8) / 2

    def y_at(t: float) -> float:  # t: 0 at the neck base, 1 at the sole
        return top + u * (head_h + 0.015 + t * (1 - head_h - 0.015))

    head_c = np.array([cx, top + u * head_h / 2])
    stoop = 0.025 * u if answers["age"] == "elderly" else 0.0
    shoulder_y = y_at(0.04) + stoop * 0.4
    if child:
        sh = 0.085 * wf
    else:
        sh = (0.108 if woman else 0.128) * (1 + (wf - 1) * 0.6)
    waist_half = (0.07 if woman else 0.082) * wf * (1.08 if answers["body_shape"] == "heavy" else 1.0)
    hip_half = (0.1 if woman else 0.086) * (1 + (wf - 1) * 0.8)
    if child:
        waist_half *= 0.8
        hip_half *= 0.8
    waist_y, hip_y, crotch_y = y_at(0.31), y_at(0.41), y_at(0.47)
    lean = traits.lean * u
    shoulder = {s: np.array([cx + lean + s * sh * u, shoulder_y]) for s in (1, -1)}
    hip = {s: np.array([cx + s * hip_half * 0.52 * u, hip_y]) for s in (1, -1)}

    # arms
    limb = (1 - head_h) / 0.87
    upper_len, fore_len = 0.165 * limb * u, 0.15 * limb * u
    arm_pose = answers.get("arm_pose") or "arms down"
    elbow, wrist = {}, {}
    for i, s in enumerate((1, -1)):
        j = traits.arm_jitter[i] * (0.5 if arm_pose == "hands on hips" else 1.0)
        if arm_pose == "hands on hips":
            elbow[s] = shoulder[s] + _dir(0.8 + j, s) * upper_len
            wrist[s] = np.array([cx + s * (waist_half + 0.012) * u, waist_y + 0.02 * u])
        else:
            a_up, a_fore = ARM_ANGLES[arm_pose]
            elbow[s] = shoulder[s] + _dir(a_up + j, s) * upper_len
            wrist[s] = elbow[s] + _dir(a_fore + j + traits.arm_jitter[i + 2] * 0.5, s) * fore_len

    # legs
    pose = answers.get("pose") or "standing"
    thigh_len = (y_at(0.70) - hip_y)
    shin_len = (y_at(0.955) - y_at(0.70))
    knee, ankle, toe_down = {}, {}, {1: 0.0, -1: 0.0}
    for s in (1, -1):
        if pose == "sitting":  # thighs point at the camera: foreshortened
            knee[s] = hip[s] + np.array([s * 0.035 * u, 0.07 * u])
            ankle[s] = knee[s] + np.array([s * 0.01 * u, shin_len])
        elif pose == "walking":
            lead = s == traits.stride_side
            a = 0.2 if lead else 0.1
            knee[s] = hip[s] + _dir(a, s) * thigh_len
            ankle[s] = knee[s] + _dir(a * (0.6 if lead else 1.9), s) * shin_len * (1.0 if lead else 0.93)
            toe_down[s] = 0.0 if lead else 0.012 * u
        else:
            a = 0.035 + abs(traits.arm_jitter[0]) * 0.1
            knee[s] = hip[s] + _dir(a, s) * thigh_len
            ankle[s] = knee[s] + _dir(a * 0.5, s) * shin_len
    return Skeleton(
        head_c=head_c, head_ax=(head_w * u, head_h / 2 * u),
        neck=(np.array([cx, top + u * head_h * 0.85]), np.array([cx + lean * 0.5, shoulder_y + 0.01 * u])),
        shoulder=shoulder, elbow=elbow, wrist=wrist, hip=hip, knee=knee, ankle=ankle, toe_down=toe_down,
        waist_y=waist_y, hip_y=hip_y, crotch_y=crotch_y, shoulder_y=shoulder_y,
        shoulder_half=sh * u, waist_half=waist_half * u, hip_half=hip_half * u, unit=u, wf=wf, cx=cx,
    )


def leg_point(sk: Skeleton, s: int, t: float) -> np.ndarray:
    """A point along a leg: t=0 hip, 1 knee, 2 ankle."""
    if t <= 1:
        return sk.hip[s] + (sk.knee[s] - sk.hip[s]) * t
    return sk.knee[s] + (sk.ankle[s] - sk.knee[s]) * (t - 1)


def draw_person(cv: Canvas, answers: dict, traits: PersonTraits, sk: Skeleton, rng: np.random.Generator) -> None:
    u = sk.unit
    skin = traits.skin
    woman = answers["gender"] == "woman"
    hair_len = answers.get("hair_length") or "bald"
    hair_rgb = jitter(rng, HAIR_COLORS[answers.get("hair_color") or "black"], 8)
    hc, (hw, hh) = sk.head_c, sk.head_ax
    pattern_jobs: list[tuple[int, str, tuple]] = []

    # 1. hair that falls behind the shoulders
    if hair_len == "long":
        cv.poly([hc + (-hw * 1.12, -hh * 0.2), hc + (hw * 1.12, -hh * 0.2),
                 (hc[0] + hw * 1.25, sk.shoulder_y + 0.14 * u), (hc[0] - hw * 1.25, sk.shoulder_y + 0.14 * u)], HAIR, hair_rgb)
    elif hair_len == "medium":
        cv.poly([hc + (-hw * 1.1, -hh * 0.2), hc + (hw * 1.1, -hh * 0.2),
                 hc + (hw * 1.12, hh * 1.05), hc + (-hw * 1.12, hh * 1.05)], HAIR, hair_rgb)

    # 2. backpack body, behind the torso
    bag_type = answers.get("bag_type") if answers.get("bag") == "yes" else None
    bag_rgb = jitter(rng, COLORS[answers.get("bag_color") or "black"])
    if bag_type == "backpack":
        cv.rect(sk.cx - sk.shoulder_half * 1.08, sk.shoulder_y + 0.02 * u, sk.cx + sk.shoulder_half * 1.08, sk.waist_y + 0.02 * u, BAG, bag_rgb)

    # 3. legs and feet
    for s, leg_cls in ((1, LEFT_LEG), (-1, RIGHT_LEG)):
        cv.capsule(sk.hip[s], sk.knee[s], 0.052 * sk.wf * u, 0.036 * sk.wf * u, leg_cls, skin)
        cv.capsule(sk.knee[s], sk.ankle[s], 0.036 * sk.wf * u, 0.024 * sk.wf * u, leg_cls, skin)
    shoe_type = answers.get("shoe_type") or "sneakers"
    shoe_rgb = jitter(rng, COLORS[answers.get("shoe_color") or "black"])
    for s, shoe_cls in ((1, LEFT_SHOE), (-1, RIGHT_SHOE)):
        a = sk.ankle[s] + (0, sk.toe_down[s])
        foot_c = a + (s * 0.012 * u, 0.022 * u)
        if shoe_type == "boots":
            cv.capsule(a - (0, 0.07 * u), a, 0.03 * sk.wf * u, 0.03 * sk.wf * u, shoe_cls, shoe_rgb)
            cv.ellipse(foot_c, (0.038 * u, 0.024 * u), shoe_cls, shoe_rgb)
        elif shoe_type == "sandals":
            cv.ellipse(foot_c, (0.034 * u, 0.02 * u), LEFT_LEG if s == 1 else RIGHT_LEG, skin)
            cv.rect(foot_c[0] - 0.036 * u, foot_c[1] + 0.012 * u, foot_c[0] + 0.036 * u, foot_c[1] + 0.024 * u, shoe_cls, shoe_rgb)
            cv.line(foot_c + (-0.03 * u, -0.004 * u), foot_c + (0.03 * u, -0.004 * u), 0.009 * u, shoe_cls, shoe_rgb)
        else:
            cv.ellipse(foot_c, (0.038 * u, 0.023 * u), shoe_cls, shoe_rgb)
            cv.rect(foot_c[0] - 0.038 * u, foot_c[1] + 0.012 * u, foot_c[0] + 0.038 * u, foot_c[1] + 0.022 * u, shoe_cls, (240, 240, 240))

    # 4. lower garment or the skirt of a dress
    dress = answers.get("dress") == "yes" or answers.get("top") == "no"
    garment_rgb = jitter(rng, COLORS[answers.get("dress_color") or "black"]) if dress else None
    if dress:
        hem_t = {"short": 0.55, "long": 1.75}.get(answers.get("dress_length") or "short", 0.55)
        _skirt(cv, sk, hem_t, DRESS, garment_rgb, flare=1.35)
        pattern_jobs.append((DRESS, answers.get("dress_pattern") or "solid", garment_rgb))
    else:
        bottom = answers.get("bottom_type") or "trousers"
        b_rgb = jitter(rng, COLORS[answers.get("bottom_color") or "blue"])
        if bottom == "skirt":
            hem_t = {"mini": 0.45, "knee-length": 1.0, "long": 1.8}[answers.get("skirt_length") or "knee-length"]
            _skirt(cv, sk, hem_t, SKIRT, b_rgb, flare=1.3)
            pattern_jobs.append((SKIRT, answers.get("bottom_pattern") or "solid", b_rgb))
        else:
            end_t = 1.93 if bottom == "trousers" else 0.6
            wide = answers.get("trouser_fit") == "wide"
            cv.poly([(sk.cx - sk.waist_half * 1.02, sk.waist_y), (sk.cx + sk.waist_half * 1.02, sk.waist_y),
                     (sk.cx + sk.hip_half * 1.04, sk.hip_y), (sk.cx + sk.hip_half * 0.2, sk.crotch_y + 0.01 * u),
                     (sk.cx - sk.hip_half * 0.2, sk.crotch_y + 0.01 * u), (sk.cx - sk.hip_half * 1.04, sk.hip_y)], PANTS, b_rgb)
            for s in (1, -1):
                r_end = (0.055 if wide else 0.034) * sk.wf * u if bottom == "trousers" else 0.05 * sk.wf * u
                cv.capsule(sk.hip[s], leg_point(sk, s, min(end_t, 1.0)), 0.058 * sk.wf * u,
                           0.043 * sk.wf * u if end_t > 1 else r_end, PANTS, b_rgb)
                if end_t > 1:
                    cv.capsule(sk.knee[s], leg_point(sk, s, end_t), 0.043 * sk.wf * u, r_end, PANTS, b_rgb)
            pattern_jobs.append((PANTS, answers.get("bottom_pattern") or "solid", b_rgb))

    # 5. torso: the top, or the bodice of a dress
    neck_w = 0.032 * u * (0.8 if answers["age"] == "child" else 1.0)
    cv.capsule(sk.neck[0], sk.neck[1], neck_w, neck_w * 1.05, FACE, skin)
    top_type = answers.get("top_type")
    torso_cls = DRESS if dress else UPPER
    torso_rgb = garment_rgb if dress else jitter(rng, COLORS[answers.get("top_color") or "white"])
    sleeve = answers.get("dress_sleeve") if dress else answers.get("sleeve_length")
    sh_half = sk.shoulder_half * (0.8 if sleeve == "sleeveless" else 1.0)
    bottom_y = sk.hip_y + (0.03 * u if top_type == "jacket" else 0.0)
    if dress:
        bottom_y = sk.waist_y + 0.02 * u
    torso = [
        (sk.cx - sh_half, sk.shoulder_y - 0.008 * u), (sk.cx + sh_half, sk.shoulder_y - 0.008 * u),
        (sk.cx + sk.shoulder_half * 0.95, sk.shoulder_y + 0.1 * u), (sk.cx + sk.waist_half, sk.waist_y),
        (sk.cx + sk.hip_half * 1.02, bottom_y), (sk.cx - sk.hip_half * 1.02, bottom_y),
        (sk.cx - sk.waist_half, sk.waist_y), (sk.cx - sk.shoulder_half * 0.95, sk.shoulder_y + 0.1 * u),
    ]
    # 6. arms (skin) before the torso for sleeveless tops so the straps sit on top
    arm_r = (0.03 * sk.wf * u, 0.026 * sk.wf * u, 0.02 * sk.wf * u)
    for s, arm_cls in ((1, LEFT_ARM), (-1, RIGHT_ARM)):
        cv.capsule(sk.shoulder[s], sk.elbow[s], arm_r[0], arm_r[1], arm_cls, skin)
        cv.capsule(sk.elbow[s], sk.wrist[s], arm_r[1], arm_r[2], arm_cls, skin)
        cv.circle(sk.wrist[s] + (sk.wrist[s] - sk.elbow[s]) * 0.18, 0.024 * u, arm_cls, skin)
    cv.poly(torso, torso_cls, torso_rgb)
    if not dress:
        pattern_jobs.append((UPPER, answers.get("top_pattern") or "solid", torso_rgb))
    _top_details(cv, sk, top_type, torso_rgb, neck_w)
    # 7. sleeves over the arms
    if sleeve in ("short sleeve", "long sleeve"):
        for s in (1, -1):
            if sleeve == "short sleeve":
                end = sk.shoulder[s] + (sk.elbow[s] - sk.shoulder[s]) * 0.6
                cv.capsule(sk.shoulder[s], end, arm_r[0] * 1.35, arm_r[0] * 1.3, torso_cls, torso_rgb)
            else:
                cv.capsule(sk.shoulder[s], sk.elbow[s], arm_r[0] * 1.3, arm_r[1] * 1.3, torso_cls, torso_rgb)
                cv.capsule(sk.elbow[s], sk.wrist[s], arm_r[1] * 1.3, arm_r[2] * 1.35, torso_cls, torso_rgb)
    # 8. belt, bags, scarf
    if answers.get("belt") == "yes":
        belt_rgb = jitter(rng, COLORS[answers.get("belt_color") or "black"])
        cv.rect(sk.cx - sk.waist_half * 1.04, sk.waist_y - 0.013 * u, sk.cx + sk.waist_half * 1.04, sk.waist_y + 0.013 * u, BELT, belt_rgb)
        cv.rect(sk.cx - 0.015 * u, sk.waist_y - 0.011 * u, sk.cx + 0.015 * u, sk.waist_y + 0.011 * u, None, (200, 180, 90))
    if bag_type == "backpack":
        for s in (1, -1):
            cv.line(sk.shoulder[s] - (s * 0.035 * u, 0.005 * u), (sk.cx + s * sk.waist_half * 0.7, sk.waist_y - 0.02 * u), 0.022 * u, BAG, bag_rgb)
    elif bag_type == "shoulder bag":
        s = traits.hand_side
        cv.line(sk.shoulder[-s] + (s * 0.03 * u, 0), (sk.cx + s * sk.hip_half * 1.05, sk.hip_y - 0.02 * u), 0.014 * u, BAG, bag_rgb)
        c = np.array([sk.cx + s * sk.hip_half * 1.2, sk.hip_y + 0.02 * u])
        cv.rect(c[0] - 0.055 * u, c[1] - 0.04 * u, c[0] + 0.055 * u, c[1] + 0.04 * u, BAG, bag_rgb)
    elif bag_type == "handbag":
        s = traits.hand_side
        hand = sk.wrist[s] + (sk.wrist[s] - sk.elbow[s]) * 0.18
        cv.line(hand + (-0.03 * u, 0.005 * u), hand + (0.03 * u, 0.005 * u), 0.012 * u, BAG, bag_rgb)
        cv.rect(hand[0] - 0.05 * u, hand[1] + 0.02 * u, hand[0] + 0.05 * u, hand[1] + 0.1 * u, BAG, bag_rgb)
    if answers.get("scarf") == "yes":
        sc_rgb = jitter(rng, COLORS[answers.get("scarf_color") or "red"])
        cv.ellipse(sk.neck[1] - (0, 0.005 * u), (neck_w * 2.2, 0.03 * u), SCARF, sc_rgb)
        cv.rect(sk.cx + 0.01 * u, sk.neck[1][1], sk.cx + 0.045 * u, sk.neck[1][1] + 0.13 * u, SCARF, sc_rgb)

    # 9. head
    _head(cv, sk, answers, skin, hair_rgb, hair_len, woman, rng)

    # 10. garment patterns on their visible pixels (this person's box only)
    x0, x1 = int(max(0, sk.cx - 0.45 * u)), int(min(cv.width, sk.cx + 0.45 * u))
    period = 0.045 * u
    for cls, pattern, rgb in pattern_jobs:
        if pattern != "solid":
            region = cv.labels[:, x0:x1] == cls
            sub = cv.image[:, x0:x1]
            apply_pattern(sub, region, pattern, rgb, period, rng)


def _skirt(cv: Canvas, sk: Skeleton, hem_t: float, cls: int, rgb, flare: float) -> None:
    u = sk.unit
    hem_y = (leg_point(sk, 1, hem_t)[1] + leg_point(sk, -1, hem_t)[1]) / 2
    spread = abs(leg_point(sk, 1, hem_t)[0] - leg_point(sk, -1, hem_t)[0]) / 2
    half = max(sk.hip_half * flare * (1 + 0.15 * min(hem_t, 1.8)), spread + 0.05 * u)
    cv.poly([(sk.cx - sk.waist_half, sk.waist_y), (sk.cx + sk.waist_half, sk.waist_y),
             (sk.cx + sk.hip_half * 1.05, sk.hip_y), (sk.cx + half, hem_y), (sk.cx - half, hem_y),
             (sk.cx - sk.hip_half * 1.05, sk.hip_y)], cls, rgb)


def _top_details(cv: Canvas, sk: Skeleton, top_type: str | None, rgb, neck_w: float) -> None:
    u = sk.unit
    dark = tuple(int(c * 0.55) for c in rgb)
    ny = sk.shoulder_y
    if top_type == "shirt":  # collar and buttons
        cv.poly([(sk.cx - neck_w * 1.4, ny - 0.01 * u), (sk.cx, ny + 0.035 * u), (sk.cx - neck_w * 0.2, ny + 0.045 * u), (sk.cx - neck_w * 1.6, ny + 0.01 * u)], None, dark)
        cv.poly([(sk.cx + neck_w * 1.4, ny - 0.01 * u), (sk.cx, ny + 0.035 * u), (sk.cx + neck_w * 0.2, ny + 0.045 * u), (sk.cx + neck_w * 1.6, ny + 0.01 * u)], None, dark)
        for k in range(4):
            cv.circle((sk.cx, ny + (0.07 + 0.06 * k) * u), 0.006 * u, None, dark)
    elif top_type == "jacket":  # open front with a zip line
        cv.poly([(sk.cx - 0.03 * u, ny), (sk.cx + 0.03 * u, ny), (sk.cx + 0.01 * u, sk.hip_y + 0.03 * u), (sk.cx - 0.01 * u, sk.hip_y + 0.03 * u)], None, dark)
    elif top_type == "sweater":  # ribbed hem and collar
        cv.rect(sk.cx - sk.hip_half, sk.hip_y - 0.025 * u, sk.cx + sk.hip_half, sk.hip_y, None, dark)
        cv.ellipse((sk.cx, ny - 0.004 * u), (neck_w * 1.3, 0.014 * u), None, dark)
    elif top_type == "t-shirt":
        cv.ellipse((sk.cx, ny - 0.004 * u), (neck_w * 1.2, 0.018 * u), None, dark, start=0, end=180)


def _head(cv: Canvas, sk: Skeleton, answers: dict, skin, hair_rgb, hair_len: str, woman: bool, rng) -> None:
    hc, (hw, hh) = sk.head_c, sk.head_ax
    for s in (1, -1):  # ears
        cv.ellipse(hc + (s * hw * 0.98, hh * 0.05), (hw * 0.16, hh * 0.2), FACE, skin)
    cv.ellipse(hc, (hw, hh), FACE, skin)
    child = answers["age"] == "child"
    # Shading in the places a real face has it (eye sockets, under the nose, the jaw),
    # so classical face detectors see the dark-eye-band / light-nose-bridge pattern.
    # Lighting in absolute terms (a lit forehead, nose and cheekbones; shadowed eye sockets), so
    # darker skin tones keep the light/dark face pattern a real photo has.
    shade = tuple(max(0, int(c * 0.7) - 18) for c in skin)
    light = tuple(int(c + (255 - c) * 0.4) for c in skin)
    cv.ellipse((hc[0], hc[1] + 0.55 * hh), (0.8 * hw, 0.42 * hh), None, tuple(int(c * 0.9) for c in skin))
    cv.ellipse((hc[0], hc[1] + 0.45 * hh), (0.74 * hw, 0.45 * hh), None, skin)
    eye_y = hc[1] - 0.05 * hh
    eye_r = hw * (0.16 if child else 0.13)
    for s in (1, -1):
        cv.ellipse((hc[0] + s * 0.38 * hw, eye_y - 0.02 * hh), (0.3 * hw, 0.16 * hh), None, shade)
    for s in (1, -1):  # cheekbones
        cv.ellipse((hc[0] + s * 0.42 * hw, hc[1] + 0.22 * hh), (0.2 * hw, 0.1 * hh), None, light)
    cv.ellipse((hc[0], hc[1] - 0.55 * hh), (0.45 * hw, 0.12 * hh), None, light)  # forehead
    cv.ellipse((hc[0], hc[1] + 0.02 * hh), (0.1 * hw, 0.3 * hh), None, light)  # nose bridge
    brow = tuple(int(c * 0.5) for c in hair_rgb) if hair_len != "bald" else tuple(int(c * 0.45) for c in skin)
    for s in (1, -1):
        cv.circle((hc[0] + s * 0.38 * hw, eye_y), eye_r, None, (236, 236, 236))
        cv.circle((hc[0] + s * 0.38 * hw, eye_y), eye_r * 0.7, None, (30, 25, 20))
        cv.line((hc[0] + s * 0.16 * hw, eye_y - 0.24 * hh), (hc[0] + s * 0.62 * hw, eye_y - 0.27 * hh), max(1.0, 0.09 * hh), None, brow)
        cv.circle((hc[0] + s * 0.1 * hw, hc[1] + 0.3 * hh), max(0.6, 0.05 * hw), None, tuple(int(c * 0.45) for c in skin))
    cv.ellipse((hc[0], hc[1] + 0.36 * hh), (0.16 * hw, 0.05 * hh), None, shade)  # shadow under the nose
    lip = (178, 40, 60) if woman and not child else tuple(int(c * 0.6) for c in skin)
    mouth_c = (hc[0], hc[1] + 0.5 * hh)
    if answers["expression"] == "smiling":
        cv.ellipse(mouth_c, (0.38 * hw, 0.16 * hh), None, lip, start=0, end=180)
        cv.ellipse((mouth_c[0], mouth_c[1] - 0.02 * hh), (0.32 * hw, 0.06 * hh), None, (245, 245, 245), start=0, end=180)
    else:
        cv.line((mouth_c[0] - 0.28 * hw, mouth_c[1]), (mouth_c[0] + 0.28 * hw, mouth_c[1]), max(1.2, 0.06 * hh), None, lip)
    if answers["age"] == "elderly":  # wrinkles
        for s in (1, -1):
            cv.line((hc[0] + s * 0.55 * hw, hc[1] + 0.3 * hh), (hc[0] + s * 0.45 * hw, hc[1] + 0.55 * hh), max(1.0, 0.03 * hh), None, tuple(int(c * 0.75) for c in skin))
    if hair_len != "bald":
        fringe = {"short": 0.52, "medium": 0.44, "long": 0.42}[hair_len]  # above the eyebrows
        cv.ellipse((hc[0], hc[1] - hh * 0.12), (hw * 1.08, hh * 0.95), HAIR, hair_rgb, start=180, end=360)
        cv.rect(hc[0] - hw * 1.08, hc[1] - hh * 0.14, hc[0] + hw * 1.08, hc[1] - hh * fringe, HAIR, hair_rgb)
        if hair_len in ("medium", "long"):
            for s in (1, -1):
                cv.rect(hc[0] + s * hw * 0.9, hc[1] - hh * 0.2, hc[0] + s * hw * 1.14, hc[1] + hh * (0.9 if hair_len == "long" else 0.7), HAIR, hair_rgb)
    if answers.get("sunglasses") == "yes":
        for s in (1, -1):
            cv.ellipse((hc[0] + s * 0.38 * hw, eye_y), (0.3 * hw, 0.17 * hh), SUNGLASSES, (22, 22, 28))
        cv.line((hc[0] - 0.1 * hw, eye_y), (hc[0] + 0.1 * hw, eye_y), max(1.0, 0.04 * hh), SUNGLASSES, (22, 22, 28))
    if answers.get("hat") == "yes":
        hat_rgb = jitter(rng, COLORS[answers.get("hat_color") or "black"])
        kind = answers.get("hat_type")
        top = hc[1] - hh
        if kind == "sun hat":
            cv.ellipse((hc[0], top + hh * 0.55), (hw * 2.0, hh * 0.2), HAT, hat_rgb)
            cv.ellipse((hc[0], top + hh * 0.5), (hw * 1.05, hh * 0.62), HAT, hat_rgb, start=180, end=360)
        elif kind == "beanie":
            cv.ellipse((hc[0], top + hh * 0.62), (hw * 1.1, hh * 0.78), HAT, hat_rgb, start=180, end=360)
            cv.rect(hc[0] - hw * 1.12, top + hh * 0.5, hc[0] + hw * 1.12, top + hh * 0.72, HAT, tuple(int(c * 0.75) for c in hat_rgb))
        else:  # cap with a brim
            cv.ellipse((hc[0], top + hh * 0.55), (hw * 1.06, hh * 0.62), HAT, hat_rgb, start=180, end=360)
            cv.ellipse((hc[0] + hw * 0.55, top + hh * 0.55), (hw * 0.95, hh * 0.1), HAT, hat_rgb)
