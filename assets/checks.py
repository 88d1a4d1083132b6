"""Turning a Great Expectations summary into a Dagster asset-check result."""

import dagster as dg

from flywheel.validation.suites import ValidationSummary


def suite_result(summary: ValidationSummary | None, missing: str) -> dg.AssetCheckResult:
    """``summary`` None means there was nothing to validate (``missing`` says what)."""
    if summary is None:
        return dg.AssetCheckResult(passed=False, metadata={"problem": missing})
    return dg.AssetCheckResult(passed=summary.success, metadata={
        "expectations": dg.MetadataValue.int(summary.evaluated),
        "failed": dg.MetadataValue.int(len(summary.failed)),
        "summary": dg.MetadataValue.md(summary.as_markdown()),
        **({"data_docs": dg.MetadataValue.path(str(summary.docs))} if summary.docs else {}),
    })
