"""The filtered pool's Great Expectations suite: its conditional expectations (GX 1.9+ row
conditions) hold for kept rows only, and a broken promise fails the suite naming the column."""

import warnings

from flywheel.filters.settings import FilterSettings
from flywheel.manifests import FILTERED_POOL
from flywheel.validation.filtered_pool import validate_filtered_pool


def _row(i: int, verdict: str, reasons: list[str] | None = None, **extra) -> dict:
    return {"record_id": f"r{i}", "sha256": f"{i:064x}", "verdict": verdict, "reasons": reasons, "width": 64,
            "height": 96, "n_persons": 1, "face_size": 30.0, **extra}


def test_conditional_expectations_apply_to_kept_rows_only():
    settings = FilterSettings(min_face=10, quality_metric="brisque")
    rows = [_row(0, "keep"), _row(1, "keep"), _row(2, "reject", ["too_small"], n_persons=3, face_size=1.0)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*row_condition.*|.*condition_parser.*", category=DeprecationWarning)
        ok = validate_filtered_pool(FILTERED_POOL.table(rows), settings)
    assert ok.success, ok.failed  # the rejected row's 3 persons and tiny face are not a kept image's promise

    bad = rows + [_row(3, "keep", ["face_too_small"], face_size=2.0), _row(4, "reject", [])]
    summary = validate_filtered_pool(FILTERED_POOL.table(bad), settings)
    assert not summary.success
    failed = {(f["expectation"], f["column"]) for f in summary.failed}
    assert ("expect_column_values_to_be_between", "face_size") in failed  # a kept image with a tiny face
    assert ("expect_column_values_to_be_between", "n_reasons") in failed  # kept with reasons; rejected without
    assert ("expect_column_values_to_be_between", "n_persons") not in failed
