"""The registered model's ``champion`` aliases: moved only to a version that beats the holder.

``champion`` is the best version of every variant; ``champion-<variant>`` the best of one
variant (the variants share one registered model, so the MLflow UI compares them on one page).
Among the evaluated versions considered, the best by the configured metric
becomes champion if there is none yet or if it beats the current champion's value of that
metric (read from the champion's run). A missing or NaN value never wins. The decision and
its reason are recorded as version tags and returned for the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALIAS = "champion"


@dataclass
class ChampionDecision:
    registered_model: str
    alias: str
    metric: str
    champion: str | None  # version holding the alias afterwards
    moved: bool
    reason: str


def _value(metrics: dict, metric: str) -> float | None:
    v = metrics.get(metric)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def variant_alias(variant: str) -> str:
    return f"{ALIAS}-{variant}"


def decide_champion(client, registered_model: str, candidates: dict[str, dict], metric: str,
                    greater_is_better: bool = True, metric_prefix: str = "eval.", alias: str = ALIAS) -> ChampionDecision:
    """``candidates``: version -> its evaluation metrics; ``alias``: the alias to move."""
    scored = {str(v): s for v, m in candidates.items() if (s := _value(m, metric)) is not None}
    from mlflow.exceptions import MlflowException

    try:
        current = str(client.get_model_version_by_alias(registered_model, alias).version)
    except MlflowException:  # no alias yet (RESOURCE_DOES_NOT_EXIST)
        current = None
    if not scored:
        return ChampionDecision(registered_model, alias, metric, current, False, f"no evaluated version has {metric}")
    better = (lambda a, b: a > b) if greater_is_better else (lambda a, b: a < b)
    best = max(scored, key=lambda v: scored[v] if greater_is_better else -scored[v])
    if current is not None:
        cur_value = scored.get(current)
        if cur_value is None:
            cur_value = _value(client.get_run(client.get_model_version(registered_model, current).run_id).data.metrics,
                               metric_prefix + metric)
        if best == current:
            return ChampionDecision(registered_model, alias, metric, current, False,
                                    f"v{current} stays champion: best {metric} {scored[best]:.4f}")
        if cur_value is not None and not better(scored[best], cur_value):
            return ChampionDecision(registered_model, alias, metric, current, False,
                                    f"v{best} {metric} {scored[best]:.4f} does not beat champion v{current} ({cur_value:.4f})")
        was = f"champion v{current} ({cur_value:.4f})" if cur_value is not None else f"champion v{current} (no {metric})"
        reason = f"v{best} {metric} {scored[best]:.4f} beats {was}"
    else:
        reason = f"v{best} has the best {metric} ({scored[best]:.4f}); no champion before"
    client.set_registered_model_alias(registered_model, alias, best)
    client.set_model_version_tag(registered_model, best, f"{alias}.reason", reason)
    return ChampionDecision(registered_model, alias, metric, best, True, reason)
