"""Human labelling: requests for (image, category) pairs, answers, and the ledger that counts them.

A labelling backend takes a batch of requests and later returns the answers. ``OracleLabeller``
answers from ground truth where a source has it (the synthetic source, benchmark sets) and
stands in for people so that the flywheel's cost can be measured: every answered request
counts as one human label. The ledger stores each iteration's answers in its own Parquet file,
written atomically once the batch is complete, so a killed run never loses collected labels
and a re-run never requests or counts them twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

import pyarrow as pa
import pyarrow.parquet as pq

NOT_APPLICABLE = "__not_applicable__"  # a person's answer when the question does not apply to the image


@dataclass(frozen=True)
class LabelRequest:
    record_id: str
    category: str


@dataclass(frozen=True)
class Label:
    record_id: str
    category: str
    answer: str  # one of the category's answers, or NOT_APPLICABLE
    labeller: str


class Labeller(TypingProtocol):
    name: str

    def submit(self, requests: list[LabelRequest], batch: str,
               hints: Mapping[str, Mapping[str, tuple[str, float]]] | None = None) -> None:
        """Hand the requests to people (or a tool they use); ``hints`` are the annotator's
        answers and confidences, shown as pre-annotations where the tool supports them."""

    def collect(self, batch: str) -> list[Label] | None:
        """The batch's answers once every request is answered, else None (not finished yet)."""


class OracleLabeller:
    """Answers from ground truth: ``truth[record_id][category]`` (None = not applicable)."""

    name = "oracle"

    def __init__(self, truth: Mapping[str, Mapping[str, str | None]]):
        self._truth = truth
        self._pending: dict[str, list[LabelRequest]] = {}

    def submit(self, requests: list[LabelRequest], batch: str,
               hints: Mapping[str, Mapping[str, tuple[str, float]]] | None = None) -> None:
        missing = [r.record_id for r in requests if r.record_id not in self._truth]
        if missing:
            raise KeyError(f"oracle labeller: no ground truth for {len(missing)} record(s), e.g. {missing[0]}")
        self._pending[batch] = list(requests)

    def collect(self, batch: str) -> list[Label] | None:
        requests = self._pending.get(batch)
        if requests is None:
            return None
        return [Label(r.record_id, r.category, self._truth[r.record_id].get(r.category) or NOT_APPLICABLE, self.name)
                for r in requests]


_SCHEMA = pa.schema([("record_id", pa.string()), ("category", pa.string()), ("answer", pa.string()),
                     ("labeller", pa.string()), ("batch", pa.string())])


class LabelLedger:
    """Every human label collected so far, one Parquet file per labelling batch."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, batch: str) -> Path:
        return self.folder / f"{batch}.parquet"

    def has(self, batch: str) -> bool:
        return self._path(batch).exists()

    def record(self, batch: str, labels: Iterable[Label]) -> int:
        """Store a complete batch (atomically); returns how many labels it added."""
        if self.has(batch):
            raise FileExistsError(f"{self._path(batch)}: labels of batch {batch!r} are already recorded")
        rows = [{"record_id": l.record_id, "category": l.category, "answer": l.answer, "labeller": l.labeller, "batch": batch}
                for l in labels]
        tmp = self.folder / f".{batch}.{uuid.uuid4().hex}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), tmp)
        os.replace(tmp, self._path(batch))
        return len(rows)

    def batch_count(self, batch: str) -> int:
        return pq.read_metadata(self._path(batch)).num_rows

    def labels(self) -> list[Label]:
        out: dict[tuple[str, str], Label] = {}
        for path in sorted(self.folder.glob("*.parquet")):
            for r in pq.read_table(path).to_pylist():
                out[(r["record_id"], r["category"])] = Label(r["record_id"], r["category"], r["answer"], r["labeller"])
        return list(out.values())

    def count(self) -> int:
        return len(self.labels())

    def by_record(self) -> dict[str, dict[str, str]]:
        """record -> category -> answer, with not-applicable answers left out."""
        out: dict[str, dict[str, str]] = {}
        for l in self.labels():
            if l.answer != NOT_APPLICABLE:
                out.setdefault(l.record_id, {})[l.category] = l.answer
        return out

    def answers_by_record(self) -> dict[str, dict[str, str | None]]:
        """record -> category -> answer, a not-applicable answer as None (it rules out the children)."""
        out: dict[str, dict[str, str | None]] = {}
        for l in self.labels():
            out.setdefault(l.record_id, {})[l.category] = None if l.answer == NOT_APPLICABLE else l.answer
        return out

    def labelled_pairs(self) -> set[tuple[str, str]]:
        return {(l.record_id, l.category) for l in self.labels()}
