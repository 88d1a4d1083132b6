"""Weak, alt-text-like captions for the pretraining corpus (the LAION analogue).

LAION's alt text is short, partial and often wrong; CosmicMan-HQ's captions are dense and
exact. A weak caption names the gender most of the time, the shot sometimes, one or two
garments (colour mostly, type sometimes), never the part hierarchy, and a share of its
words are swapped for a wrong word of the same kind. The fine-tune must have something to add.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from training.pretrain.settings import WeakCaptionRecipe

SHOT_PHRASES = {"full body": ["full-body shot", "full-body shot", "full length photo"],
                "upper body": ["upper-body shot", "upper-body shot", "waist-up portrait"],
                "headshot": ["headshot", "headshot", "close-up portrait"]}
GENDER_WORDS = {"man": ["man", "man", "guy"], "woman": ["woman", "woman", "lady"]}
AGE_WORDS = {"child": "young", "elderly": "elderly", "adult": ""}
COLOURS = ["white", "black", "red", "blue", "green", "yellow", "gray", "pink", "brown", "khaki"]
TEMPLATES = ["{subject}", "photo of {subject}", "{shot} of {subject}", "{subject}, {shot}",
             "stock photo - {subject}", "{subject} {scene}", "{shot}, {subject} {scene}"]
PLURALS = {"trousers", "shorts", "sneakers", "boots", "sandals", "bottoms", "shoes"}
SCENES = {"plain": "on a plain background", "indoor": "indoors", "outdoor": "outdoors"}




def _garments(a: Mapping[str, str | None]) -> tuple[tuple[str, str, str] | None, list[tuple[str, str, str]]]:
    """(main garment, others) as (colour, type word, generic word)."""
    main = None
    if a.get("dress") == "yes":
        main = (a["dress_color"], "dress", "dress")
    elif a.get("top") == "yes" and a.get("top_color"):
        main = (a["top_color"], a["top_type"], "top")
    others = []
    if a.get("bottom_type"):
        others.append((a["bottom_color"], a["bottom_type"], "bottoms" if a["bottom_type"] != "skirt" else "skirt"))
    if a.get("hat") == "yes":
        others.append((a["hat_color"], a["hat_type"], "hat"))
    if a.get("scarf") == "yes":
        others.append((a["scarf_color"], "scarf", "scarf"))
    if a.get("shoe_type"):
        others.append((a["shoe_color"], a["shoe_type"], "shoes"))
    if a.get("bag") == "yes":
        others.append((a["bag_color"], a["bag_type"], "bag"))
    return main, others


# alt-text boilerplate: no word of the label protocol (no colour, garment, gender, age, shot or scene word)
FILLER = ["stock photo", "royalty free", "free image", "high resolution", "hd", "download", "premium photo",
          "photography", "lifestyle", "trendy", "casual style", "summer", "new collection", "best ideas", "shop now",
          "buy online", "shutterstock", "getty images", "alamy", "pinterest", "instagram", "jpg", "img_{n}", "dsc{n}",
          "page {n}", "{n}", "by {name}", "vector", "editorial", "on sale", "look", "inspiration"]
FILLER_NAMES = ["jrpics", "studio45", "mkphoto", "lensworks", "pixelhaus", "anna_k"]
SEPARATORS = [", ", " | ", " - ", " ", " · "]


def filler_fragment(rng: np.random.Generator) -> str:
    text = FILLER[int(rng.integers(len(FILLER)))]
    return text.format(n=int(rng.integers(10, 99999)), name=FILLER_NAMES[int(rng.integers(len(FILLER_NAMES)))])


def with_filler(caption: str, rng: np.random.Generator, fragments: tuple[int, int]) -> str:
    """``caption`` inside web boilerplate: ``fragments`` (low, high) fragments, some before and the rest after."""
    n = int(rng.integers(fragments[0], fragments[1] + 1))
    before = int(rng.integers(0, n + 1))
    parts = [filler_fragment(rng) for _ in range(n)]
    sep = SEPARATORS[int(rng.integers(len(SEPARATORS)))]
    return sep.join(parts[:before] + [caption] + parts[before:])


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def weak_caption(answers: Mapping[str, str | None], rng: np.random.Generator, recipe: WeakCaptionRecipe) -> str:
    """One weak caption of a render's true answers."""
    def wrong(word: str, pool: list[str]) -> str:
        if rng.random() < recipe.wrong_word_share:
            return pool[int(rng.integers(len(pool)))]
        return word

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    gender = answers["gender"]
    noun = pick(GENDER_WORDS[wrong(gender, ["man", "woman"])]) if rng.random() < recipe.p_gender else "person"
    if rng.random() < recipe.p_age and AGE_WORDS.get(answers.get("age") or "", ""):
        noun = f"{AGE_WORDS[answers['age']]} {noun}"
    main, others = _garments(answers)
    named = []
    if main and rng.random() < recipe.p_main_garment:
        named.append(main)
    if others and rng.random() < recipe.p_second_garment:
        named.append(others[int(rng.integers(len(others)))])
    parts = []
    for colour, kind, generic in named:
        word = kind if rng.random() < recipe.p_type else generic
        parts.append(f"{wrong(colour, COLOURS)} {word}" if rng.random() < recipe.p_colour else word)
    subject = f"{_article(noun)} {noun}" + (" wearing " + " and ".join(
        p if p.split()[-1] in PLURALS else f"{_article(p)} {p}" for p in parts) if parts else "")
    shot_kind = wrong(answers["person_type"], list(SHOT_PHRASES))
    shot = pick(SHOT_PHRASES[shot_kind]) if rng.random() < recipe.p_shot else ""
    if recipe.rules >= 2:  # a drawn shot is always written; rules 1 wrote it only if the template had a slot
        template = pick([t for t in TEMPLATES if ("{shot}" in t) == bool(shot)])
    else:
        template = pick([t for t in TEMPLATES if shot or "{shot}" not in t])
    caption = template.format(subject=subject, shot=shot, scene=SCENES.get(answers.get("background") or "", "")).strip()
    # drawn last, so that a recipe without filler writes the captions it always wrote
    if recipe.p_filler and rng.random() < recipe.p_filler:
        caption = with_filler(caption, rng, recipe.filler_fragments)
    return caption
