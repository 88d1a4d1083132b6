"""The fixed held-out prompt set: captions of a snapshot's test split, each with its questions.

DSG-style (CosmicMan Sec. 9.1): a caption's questions are the protocol categories it voices,
each expecting the answer the caption states ("hat_color: red" for "red hat"). Categories
whose answer is not voiced (an unvoiced "no") or whose part has no group in the caption
(dropped for the token budget or for a missing mask) are not asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flywheel.protocol import Protocol


@dataclass(frozen=True)
class EvalPrompt:
    key: str
    caption: str
    questions: dict[str, str]  # category -> expected answer


def noise_seed(prompt_key: str, seed: int) -> int:
    """The initial-noise seed of one (prompt, seed) sample: its own per prompt, the same for every model.
    One noise shared by all prompts would make every prompt's image the same layout (a small base's
    framing follows its noise as much as its prompt), so the figures would measure two noise draws and
    the intervals, which resample prompts, would treat correlated samples as independent."""
    return int.from_bytes(hashlib.sha256(f"{prompt_key}:{seed}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def caption_questions(protocol: Protocol, answers: Mapping[str, str | None], parts: Iterable[str]) -> dict[str, str]:
    """The questions a caption with these groups (parts) and answers voices."""
    parts = set(parts)
    out = {}
    for name, cat in protocol.categories.items():
        if name not in answers or answers[name] is None or cat.part not in parts:
            continue
        if protocol.phrase_for(name, answers).strip():
            out[name] = answers[name]
    return out


def prompt_set(rows: list[dict], protocol: Protocol, limit: int) -> list[EvalPrompt]:
    """The first ``limit`` rows of a split (manifest order is stable across versions' reads)."""
    out = []
    for row in rows[:limit]:
        answers = dict(row["answers"])
        parts = [g["part"] for g in row["caption_groups"]]
        out.append(EvalPrompt(row["key"], row["caption"], caption_questions(protocol, answers, parts)))
    return out
