"""Running a Great Expectations suite on a manifest and summarising the result.

Suites are built in code (one function per manifest) and run in an ephemeral GX context
on the manifest as a pandas DataFrame; ``ValidationSummary`` is what asset checks show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass
class ValidationSummary:
    suite: str
    success: bool
    evaluated: int
    failed: list[dict] = field(default_factory=list)  # expectation, column, details
    docs: Path | None = None  # the data docs site, when built

    def as_markdown(self) -> str:
        if self.success:
            return f"All {self.evaluated} expectations of `{self.suite}` passed."
        lines = [f"{len(self.failed)} of {self.evaluated} expectations of `{self.suite}` failed:", "",
                 "| expectation | column | observed |", "|---|---|---|"]
        lines += [f"| {f['expectation']} | {f.get('column') or ''} | {f.get('observed', '')} |" for f in self.failed]
        return "\n".join(lines)


def run_suite(name: str, df: pd.DataFrame, build: Callable[[object], list], docs_dir: Path | None = None) -> ValidationSummary:
    """``build(gx.expectations)`` returns the expectations; they run on ``df``.

    Without ``docs_dir`` the suite runs in an ephemeral context. With it, a file context in
    ``docs_dir`` keeps every validation result and a checkpoint rebuilds the HTML data docs
    there (``<docs_dir>/gx/uncommitted/data_docs/local_site/index.html``)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(docs_dir)) if docs_dir else gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_or_update_pandas(f"{name}_source")
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch_def = next((b for b in asset.batch_definitions if b.name == "whole"), None) or asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=build(gx.expectations)))
    definition = context.validation_definitions.add_or_update(gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite))
    if docs_dir:
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[definition],
                                                                     actions=[UpdateDataDocsAction(name="update_data_docs")]))
        result = next(iter(checkpoint.run(batch_parameters={"dataframe": df}).run_results.values()))
    else:
        result = definition.run(batch_parameters={"dataframe": df})
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            res = r.result or {}
            observed = res.get("observed_value", res.get("unexpected_count", ""))
            if res.get("partial_unexpected_list"):
                observed = f"{res.get('unexpected_count')} unexpected, e.g. {res['partial_unexpected_list'][:3]}"
            failed.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"), "observed": observed})
    docs = docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html" if docs_dir else None
    return ValidationSummary(name, bool(result.success), len(result.results), failed, docs)
