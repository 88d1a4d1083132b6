"""Sampling a person's attributes: the protocol answers plus the render-only traits.

The answers follow the protocol's hierarchy exactly (a child question is answered only
when its parents allow it) and carry a few real-world couplings (elderly people have
gray hair, a tank top is sleeveless...) so that every answer has a visible cue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flywheel.protocol import Protocol

SKIN_TONES = [(241, 214, 190), (228, 188, 156), (205, 160, 122), (170, 120, 86), (128, 86, 60), (94, 62, 44)]


@dataclass
class PersonTraits:
    """Render-only traits: what the protocol does not ask but the image must vary in."""

    skin: tuple[int, int, int]
    height_jitter: float  # relative size variation of the figure
    lean: float  # small torso tilt in radians
    stride_side: int  # which leg leads when walking (+1 left, -1 right)
    arm_jitter: tuple[float, float, float, float]  # per-limb angle noise (radians)
    hand_side: int  # which hand holds a handbag
    extras: dict = field(default_factory=dict)


def _pick(rng: np.random.Generator, options: dict[str, float] | list[str]) -> str:
    if isinstance(options, list):
        return options[int(rng.integers(len(options)))]
    names = list(options)
    p = np.asarray([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_answers(
    rng: np.random.Generator,
    protocol: Protocol,
    person_type: str | None = None,
    person_type_weights: dict[str, float] | None = None,
) -> dict[str, str | None]:
    """Sample one person's answers to every protocol category (None where not asked)."""
    a: dict[str, str | None] = {name: None for name in protocol.categories}
    a["gender"] = _pick(rng, ["man", "woman"])
    a["age"] = _pick(rng, {"child": 0.2, "adult": 0.6, "elderly": 0.2})
    a["body_shape"] = _pick(rng, {"slim": 1, "average": 1.2, "heavy": 1})
    a["person_type"] = person_type or _pick(rng, person_type_weights or {"full body": 0.6, "upper body": 0.25, "headshot": 0.15})
    full = a["person_type"] == "full body"
    if full:
        a["pose"] = _pick(rng, {"standing": 0.55, "walking": 0.3, "sitting": 0.15})
    if a["person_type"] in ("full body", "upper body"):
        a["arm_pose"] = _pick(rng, {"arms down": 0.4, "arms raised": 0.2, "hands on hips": 0.2, "arms outstretched": 0.2})
    a["background"] = _pick(rng, ["plain", "indoor", "outdoor"])
    a["expression"] = _pick(rng, ["smiling", "neutral"])

    woman = a["gender"] == "woman"
    a["hair_length"] = _pick(
        rng,
        {"bald": 0.03, "short": 0.2, "medium": 0.35, "long": 0.42} if woman else {"bald": 0.2, "short": 0.55, "medium": 0.18, "long": 0.07},
    )
    if a["hair_length"] != "bald":
        a["hair_color"] = "gray" if a["age"] == "elderly" else _pick(rng, {"black": 1, "brown": 1, "blond": 0.8, "red": 0.5})
    a["hat"] = _pick(rng, {"yes": 0.3, "no": 0.7})
    if a["hat"] == "yes":
        a["hat_type"] = _pick(rng, ["cap", "beanie", "sun hat"])
        a["hat_color"] = _pick(rng, ["black", "white", "red", "blue", "yellow", "green"])
    a["sunglasses"] = _pick(rng, {"yes": 0.25, "no": 0.75})

    wears_dress = woman and a["age"] != "elderly" and rng.random() < 0.4
    if a["person_type"] in ("full body", "upper body"):
        a["dress"] = "yes" if wears_dress else "no"
    a["top"] = "no" if wears_dress else "yes"
    if a["top"] == "yes":
        a["top_type"] = _pick(rng, ["t-shirt", "shirt", "sweater", "jacket", "tank top"])
        a["sleeve_length"] = {
            "t-shirt": "short sleeve",
            "tank top": "sleeveless",
            "sweater": "long sleeve",
            "jacket": "long sleeve",
        }.get(a["top_type"]) or _pick(rng, ["short sleeve", "long sleeve"])
        a["top_color"] = _pick(rng, ["white", "black", "red", "blue", "green", "yellow", "gray", "pink"])
        a["top_pattern"] = _pick(rng, {"solid": 0.45, "striped": 0.2, "plaid": 0.17, "dotted": 0.18})
    if a.get("dress") == "yes":
        if full:
            a["dress_length"] = _pick(rng, ["short", "long"])
        a["dress_color"] = _pick(rng, ["white", "black", "red", "blue", "green", "yellow", "pink"])
        a["dress_pattern"] = _pick(rng, {"solid": 0.5, "striped": 0.25, "dotted": 0.25})
        a["dress_sleeve"] = _pick(rng, ["sleeveless", "short sleeve", "long sleeve"])
    if full and a.get("dress") == "no":
        a["bottom_type"] = _pick(rng, {"trousers": 0.55, "shorts": 0.25, "skirt": 0.2} if woman else {"trousers": 0.7, "shorts": 0.28, "skirt": 0.02})
        a["bottom_color"] = _pick(rng, ["black", "blue", "gray", "khaki", "white", "red"])
        a["bottom_pattern"] = _pick(rng, {"solid": 0.6, "striped": 0.2, "plaid": 0.2})
        if a["bottom_type"] == "skirt":
            a["skirt_length"] = _pick(rng, ["mini", "knee-length", "long"])
        if a["bottom_type"] == "trousers":
            a["trouser_fit"] = _pick(rng, ["slim", "wide"])
    if a["person_type"] in ("full body", "upper body"):
        a["belt"] = _pick(rng, {"yes": 0.3, "no": 0.7})
        if a["belt"] == "yes":
            a["belt_color"] = _pick(rng, ["black", "brown", "white"])
        a["bag"] = _pick(rng, {"yes": 0.35, "no": 0.65})
        if a["bag"] == "yes":
            a["bag_type"] = _pick(rng, ["handbag", "backpack", "shoulder bag"])
            a["bag_color"] = _pick(rng, ["black", "brown", "red", "blue"])
    if full:
        a["shoe_type"] = _pick(rng, ["sneakers", "boots", "sandals"])
        a["shoe_color"] = _pick(rng, ["white", "black", "brown", "red"])
    a["scarf"] = _pick(rng, {"yes": 0.2, "no": 0.8})
    if a["scarf"] == "yes":
        a["scarf_color"] = _pick(rng, ["red", "blue", "green", "yellow", "white"])

    problems = protocol.check_answers(a)
    if problems:  # the sampler and the protocol file disagree: a programming error
        raise ValueError(f"synthetic sampler produced answers the protocol rejects: {problems}")
    return a


def sample_traits(rng: np.random.Generator) -> PersonTraits:
    return PersonTraits(
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        height_jitter=float(rng.uniform(-0.06, 0.06)),
        lean=float(rng.normal(0, 0.03)),
        stride_side=int(rng.choice([-1, 1])),
        arm_jitter=tuple(float(x) for x in rng.normal(0, 0.08, size=4)),
        hand_side=int(rng.choice([-1, 1])),
    )
