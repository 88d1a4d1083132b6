"""The label protocol: parsing classes, parts, categories (questions) and their hierarchy.

The protocol is data (``protocol.yaml`` beside this module); :func:`load_protocol` reads
and validates it and returns a :class:`Protocol`, the one object every stage uses to know
which questions exist, which answers they allow, when a question applies and which
parsing classes a caption phrase is tied to.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROTOCOL_PATH = Path(__file__).with_name("protocol.yaml")
FAMILIES = ("object", "texture", "shape")
NUM_PARSING_CLASSES = 18
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ProtocolError(ValueError):
    """A protocol file is invalid. ``problems`` lists every (key, problem) found."""

    def __init__(self, path: str | Path, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: {key}: {problem}" for key, problem in problems]
        super().__init__(f"invalid label protocol ({len(problems)} problem(s)):\n" + "\n".join(lines))


@dataclass(frozen=True)
class Part:
    name: str
    class_ids: tuple[int, ...]

    @property
    def has_mask(self) -> bool:
        return bool(self.class_ids)


@dataclass(frozen=True)
class Category:
    name: str
    part: str
    question: str
    answers: tuple[str, ...]
    family: str
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    phrase: str | None = None
    phrases: Mapping[str, str] = field(default_factory=dict)

    def answer_index(self, answer: str) -> int:
        return self.answers.index(answer)


@dataclass(frozen=True)
class Protocol:
    version: int
    name: str
    parsing_classes: tuple[str, ...]
    parts: Mapping[str, Part]
    categories: Mapping[str, Category]  # in topological order: parents before children
    source: str = "<memory>"

    # ---- lookups ---------------------------------------------------------------------
    def class_id(self, class_name: str) -> int:
        return self.parsing_classes.index(class_name)

    @cached_property
    def human_class_ids(self) -> tuple[int, ...]:
        """Every class but background: CosmicMan's body-level mask h1."""
        return tuple(range(1, len(self.parsing_classes)))

    @cached_property
    def body_part_index(self) -> int:
        """Position (in ``parts`` order) of the part covering every human class, the body-level
        group; 0 if the protocol has none."""
        human = set(self.human_class_ids)
        return next((i for i, p in enumerate(self.parts.values()) if set(p.class_ids) == human), 0)

    @cached_property
    def part_index(self) -> dict[str, int]:
        """Category name -> position (in ``parts`` order) of the part it is asked about."""
        parts = list(self.parts)
        return {name: parts.index(c.part) for name, c in self.categories.items()}

    def categories_of_part(self, part: str) -> list[Category]:
        return [c for c in self.categories.values() if c.part == part]

    def family_of(self, category: str) -> str:
        return self.categories[category].family

    # ---- hierarchy -------------------------------------------------------------------
    def applies(self, category: str, answers: Mapping[str, str | None]) -> bool:
        """Whether ``category`` is asked, given the answers to its parents."""
        for parent, allowed in self.categories[category].requires.items():
            if answers.get(parent) not in allowed:
                return False
        return True

    def applicable_categories(self, answers: Mapping[str, str | None]) -> list[str]:
        return [name for name in self.categories if self.applies(name, answers)]

    def check_answers(self, answers: Mapping[str, str | None]) -> list[str]:
        """Problems with a full answer set: unknown categories or answers, a missing
        answer to an applicable question, or an answer to a question that does not apply."""
        problems = [f"unknown category {k!r}" for k in answers if k not in self.categories]
        for name, cat in self.categories.items():
            value = answers.get(name)
            if self.applies(name, answers):
                if value is None:
                    problems.append(f"{name}: applicable but unanswered")
                elif value not in cat.answers:
                    problems.append(f"{name}: answer {value!r} not in {list(cat.answers)}")
            elif value is not None:
                problems.append(f"{name}: answered {value!r} but its parents do not allow it")
        return problems

    # ---- caption phrases -------------------------------------------------------------
    def phrase_for(self, category: str, answers: Mapping[str, str | None]) -> str:
        """The caption text of one answered category ('' when the answer is not voiced)."""
        cat = self.categories[category]
        answer = answers[category]
        if answer is None:
            return ""
        if answer in cat.phrases:
            return cat.phrases[answer]
        if cat.phrase is None:
            return answer
        values = {k: v for k, v in answers.items() if v is not None}
        values["answer"] = answer
        return cat.phrase.format(**values)


# ---- loading and validation ---------------------------------------------------------------


def load_protocol(path: str | Path | None = None) -> Protocol:
    """Load and validate a protocol file; raises :class:`ProtocolError` listing every problem."""
    path = Path(path) if path is not None else DEFAULT_PROTOCOL_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ProtocolError(path, [("<file>", "file not found")]) from None
    except yaml.YAMLError as exc:
        raise ProtocolError(path, [("<file>", f"not valid YAML: {exc}")]) from None
    return parse_protocol(raw, source=str(path))


def parse_protocol(raw: Any, source: str = "<memory>") -> Protocol:
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ProtocolError(source, [("<root>", "expected a mapping at the top level")])

    classes = raw.get("parsing_classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        problems.append(("parsing_classes", "expected a list of class names"))
        classes = []
    else:
        if len(classes) != NUM_PARSING_CLASSES:
            problems.append(("parsing_classes", f"expected {NUM_PARSING_CLASSES} classes (ATR/SCHP convention), got {len(classes)}"))
        if classes and classes[0] != "background":
            problems.append(("parsing_classes[0]", "class 0 must be 'background'"))
        for dup in sorted({c for c in classes if classes.count(c) > 1}):
            problems.append(("parsing_classes", f"duplicate class {dup!r}"))

    parts: dict[str, Part] = {}
    raw_parts = raw.get("parts")
    if not isinstance(raw_parts, dict) or not raw_parts:
        problems.append(("parts", "expected a non-empty mapping of part name to {classes: [...]}"))
        raw_parts = {}
    for pname, pdef in raw_parts.items():
        key = f"parts.{pname}"
        if not isinstance(pdef, dict) or not isinstance(pdef.get("classes"), list):
            problems.append((key, "expected {classes: [class names]}"))
            continue
        ids = []
        for cname in pdef["classes"]:
            if cname not in classes:
                problems.append((f"{key}.classes", f"unknown parsing class {cname!r}"))
            else:
                ids.append(classes.index(cname))
        parts[pname] = Part(pname, tuple(ids))

    raw_cats = raw.get("categories")
    if not isinstance(raw_cats, dict) or not raw_cats:
        problems.append(("categories", "expected a non-empty mapping of category name to definition"))
        raw_cats = {}
    cats: dict[str, Category] = {}
    for cname, cdef in raw_cats.items():
        key = f"categories.{cname}"
        if not _KEY_RE.match(str(cname)):
            problems.append((key, "category names must be lower_snake_case"))
        if not isinstance(cdef, dict):
            problems.append((key, "expected a mapping"))
            continue
        unknown = set(cdef) - {"part", "question", "answers", "family", "requires", "phrase", "phrases"}
        for k in sorted(unknown):
            problems.append((f"{key}.{k}", "unknown field"))
        part = cdef.get("part")
        if part not in parts:
            problems.append((f"{key}.part", f"unknown part {part!r} (known: {', '.join(parts) or 'none'})"))
        answers = cdef.get("answers")
        if not isinstance(answers, list) or not answers:
            problems.append((f"{key}.answers", "answer list is empty or missing"))
            answers = []
        else:
            answers = [str(a) for a in answers]
            if len(answers) < 2:
                problems.append((f"{key}.answers", "a question needs at least two answers"))
            for dup in sorted({a for a in answers if answers.count(a) > 1}):
                problems.append((f"{key}.answers", f"duplicate answer {dup!r}"))
        family = cdef.get("family")
        if family not in FAMILIES:
            problems.append((f"{key}.family", f"expected one of {list(FAMILIES)}, got {family!r}"))
        question = cdef.get("question")
        if not isinstance(question, str) or not question.strip():
            problems.append((f"{key}.question", "missing question text"))
        requires = cdef.get("requires") or {}
        if not isinstance(requires, dict):
            problems.append((f"{key}.requires", "expected a mapping of parent category to allowed answers"))
            requires = {}
        phrases = cdef.get("phrases") or {}
        if not isinstance(phrases, dict):
            problems.append((f"{key}.phrases", "expected a mapping of answer to text"))
            phrases = {}
        phrases = {str(k): str(v) for k, v in phrases.items()}
        for a in phrases:
            if a not in answers:
                problems.append((f"{key}.phrases", f"phrase for unknown answer {a!r}"))
        cats[cname] = Category(
            name=cname,
            part=str(part),
            question=str(question),
            answers=tuple(answers),
            family=str(family),
            requires={str(k): tuple(str(a) for a in (v if isinstance(v, list) else [v])) for k, v in requires.items()},
            phrase=cdef.get("phrase"),
            phrases=phrases,
        )

    # references between categories
    for cname, cat in cats.items():
        for parent, allowed in cat.requires.items():
            key = f"categories.{cname}.requires.{parent}"
            if parent not in cats:
                problems.append((key, f"unknown parent category {parent!r}"))
                continue
            for a in allowed:
                if a not in cats[parent].answers:
                    problems.append((key, f"{a!r} is not an answer of {parent!r}"))
        if cat.phrase is not None:
            for _, fname, _, _ in string.Formatter().parse(cat.phrase):
                if fname is None or fname == "answer":
                    continue
                if fname not in _ancestors(cname, cats):
                    problems.append((f"categories.{cname}.phrase", f"placeholder {{{fname}}} must name an ancestor category"))

    order, cycle = _topological_order(cats)
    if cycle:
        problems.append((f"categories.{cycle[0]}.requires", "cycle in the hierarchy: " + " -> ".join(cycle)))

    if problems:
        raise ProtocolError(source, problems)
    return Protocol(
        version=int(raw.get("version", 1)),
        name=str(raw.get("name", "protocol")),
        parsing_classes=tuple(classes),
        parts=parts,
        categories={name: cats[name] for name in order},
        source=source,
    )


def _ancestors(name: str, cats: Mapping[str, Category]) -> set[str]:
    seen: set[str] = set()
    stack = [p for p in cats[name].requires if p in cats]
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(q for q in cats[p].requires if q in cats and q not in seen)
    return seen


def _topological_order(cats: Mapping[str, Category]) -> tuple[list[str], list[str] | None]:
    """Parents before children, file order otherwise; returns a cycle path when there is one."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        if state.get(node) == 2:
            return None
        if state.get(node) == 1:
            return path[path.index(node):] + [node]
        state[node] = 1
        for parent in cats[node].requires:
            if parent in cats:
                cycle = visit(parent, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        order.append(node)
        return None

    for name in cats:
        cycle = visit(name, [])
        if cycle:
            return order, cycle
    return order, None
