"""Running a Great Expectations suite on a manifest and summarising the result.

Suites are built in code (one function per manifest) and run in an ephemeral GX context
on the manifest as a pandas DataFrame; ``ValidationSummary`` is what asset checks show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass
class ValidationSummary:
    suite: str
    success: bool
    evaluated: int
    failed: list[dict] = field(default_factory=list)  # expectation, column, details

    def as_markdown(self) -> str:
        if self.success:
            return f"All {self.evaluated} expectations of `{self.suite}` passed."
        lines = [f"{len(self.failed)} of {self.evaluated} expectations of `{self.suite}` failed:", "",
                 "| expectation | column | observed |", "|---|---|---|"]
        lines += [f"| {f['expectation']} | {f.get('column') or ''} | {f.get('observed', '')} |" for f in self.failed]
        return "\n".join(lines)


def run_suite(name: str, df: pd.DataFrame, build: Callable[[object], list]) -> ValidationSummary:
    """``build(gx.expectations)`` returns the expectations; they run on ``df``."""
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_def = (context.data_sources.add_pandas(f"{name}_source")
                 .add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole"))
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for expectation in build(gx.expectations):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite))
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
    return ValidationSummary(name, bool(result.success), len(result.results), failed)
