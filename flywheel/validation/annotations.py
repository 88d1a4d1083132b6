"""The annotation manifest's suite: every applicable category answered, answers allowed,
hierarchy consistent, captions within budget and their groups tied to known classes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from flywheel.annotation.captions import approx_clip_tokens
from flywheel.protocol import Protocol
from flywheel.validation.suites import ValidationSummary, run_suite


def validate_annotations(table: pa.Table, protocol: Protocol, budget: int = 77, docs_dir: Path | None = None) -> ValidationSummary:
    df = table.to_pandas()
    answers = [dict(a) if a is not None else {} for a in table.column("answers").to_pylist()]
    df["protocol_problems"] = [len(protocol.check_answers({k: v for k, v in a.items()})) for a in answers]
    df["caption_tokens"] = [approx_clip_tokens(c or "") for c in df["caption"]]
    n_classes = len(protocol.parsing_classes)
    df["bad_group_classes"] = [sum(1 for g in (gs if gs is not None else []) for c in g["class_ids"] if not 0 < c < n_classes)
                               for gs in df["caption_groups"]]
    df["n_groups"] = [0 if gs is None else len(gs) for gs in df["caption_groups"]]

    def build(E):
        return [E.ExpectColumnValuesToNotBeNull(column="record_id"),
                E.ExpectColumnValuesToBeUnique(column="record_id"),
                E.ExpectColumnValuesToNotBeNull(column="parsing_sha256"),
                E.ExpectColumnValuesToBeInSet(column="parsing_source", value_set=["source", "segformer", "fallback"]),
                E.ExpectColumnValuesToBeBetween(column="protocol_problems", max_value=0),
                E.ExpectColumnValuesToBeBetween(column="caption_tokens", max_value=budget),
                E.ExpectColumnValuesToBeBetween(column="n_groups", min_value=1),
                E.ExpectColumnValuesToBeBetween(column="bad_group_classes", max_value=0)]

    return run_suite("annotations", df, build, docs_dir=docs_dir)
