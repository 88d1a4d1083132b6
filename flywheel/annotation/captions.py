"""CosmicMan-style captions: grouped phrases, each group tied to its parsing classes.

Each part of the protocol becomes one group whose text joins the caption phrases of its
answered categories (protocol order) and whose class ids are the part's parsing classes,
so training can map a group's tokens to its mask (the paper's aa_text / aa_ids). Global
groups come first (the body-level group, then the scene group, which has no mask and is
the "other" group), garment and accessory groups follow in a shuffled order (seeded per
image, so a caption is reproducible). Trailing groups are dropped until the caption fits
the token budget (77 for CLIP); the body group is never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from flywheel.protocol import Protocol

_WORD = re.compile(r"\w+|[^\w\s]")


def approx_clip_tokens(text: str) -> int:
    """A conservative count of CLIP tokens without the tokenizer files: one per word or
    punctuation mark, plus start and end tokens. (CLIP's BPE splits a rare word into several
    tokens; pass the real tokenizer's count where it is at hand.)"""
    return len(_WORD.findall(text)) + 2


@dataclass(frozen=True)
class CaptionGroup:
    part: str
    text: str
    class_ids: tuple[int, ...]

    def as_row(self) -> dict:
        return {"part": self.part, "text": self.text, "class_ids": list(self.class_ids)}


def caption_groups(protocol: Protocol, answers: Mapping[str, str | None], seed: int = 0, budget: int = 77,
                   count_tokens: Callable[[str], int] = approx_clip_tokens,
                   present_classes: Collection[int] | None = None) -> list[CaptionGroup]:
    """``present_classes``: the classes in the image's parsing map; a part whose classes are
    all absent gets no group (the caption must not name a garment the map has no mask for)."""
    groups: dict[str, list[str]] = {}
    for name, cat in protocol.categories.items():
        if answers.get(name) is None:
            continue
        phrase = protocol.phrase_for(name, answers).strip()
        part_classes = protocol.parts[cat.part].class_ids
        if present_classes is not None and part_classes and not set(part_classes) & set(present_classes):
            continue
        if phrase:
            groups.setdefault(cat.part, []).append(phrase)
    body = [p for p, part in protocol.parts.items() if set(part.class_ids) == set(protocol.human_class_ids)]
    scene = [p for p, part in protocol.parts.items() if not part.class_ids]
    head = [p for p in body + scene if p in groups]
    rest = [p for p in protocol.parts if p in groups and p not in head]
    order = np.random.default_rng(seed).permutation(len(rest)) if rest else []
    ordered = head + [rest[i] for i in order]
    out = [CaptionGroup(p, ", ".join(groups[p]), protocol.parts[p].class_ids)
           for p in ordered]
    while len(out) > 1 and count_tokens(join_caption(out)) > budget:
        out.pop()
    return out


def join_caption(groups: list[CaptionGroup]) -> str:
    return ", ".join(g.text for g in groups)
