"""The filtered pool's suite: schema, value ranges, and what every kept image promises."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from flywheel.filters.settings import FilterSettings
from flywheel.manifests import FILTERED_POOL
from flywheel.validation.suites import ValidationSummary, run_suite



def validate_filtered_pool(table: pa.Table, settings: FilterSettings, docs_dir: Path | None = None) -> ValidationSummary:
    df = table.to_pandas()
    df["n_reasons"] = df["reasons"].map(lambda r: 0 if r is None else len(r))

    def build(E):
        from great_expectations.expectations.row_conditions import Column  # GX 1.9+: conditions as objects

        kept = {"row_condition": Column("verdict") == "keep"}
        out = [E.ExpectTableColumnsToMatchSet(column_set=list(FILTERED_POOL.schema.names) + ["n_reasons"], exact_match=True),
               E.ExpectColumnValuesToNotBeNull(column="record_id"),
               E.ExpectColumnValuesToBeUnique(column="record_id"),
               E.ExpectColumnValuesToBeInSet(column="verdict", value_set=["keep", "reject", "error"]),
               E.ExpectColumnValuesToBeBetween(column="n_reasons", max_value=0, **kept),
               E.ExpectColumnValuesToBeBetween(column="n_reasons", min_value=1, row_condition=Column("verdict") != "keep"),
               E.ExpectColumnValuesToBeUnique(column="sha256", **kept),
               E.ExpectColumnValuesToBeBetween(column="n_persons", min_value=1, max_value=1, **kept),
               E.ExpectColumnValuesToBeBetween(column="face_size", min_value=settings.min_face, **kept),
               E.ExpectColumnValuesToBeBetween(column="width", min_value=1, **kept),
               E.ExpectColumnValuesToBeBetween(column="height", min_value=1, **kept)]
        if settings.quality_metric == "piqe":
            out.append(E.ExpectColumnValuesToBeBetween(column="quality", min_value=0, max_value=settings.quality_threshold, **kept))
        return out

    return run_suite("filtered_pool", df, build, docs_dir=docs_dir)
