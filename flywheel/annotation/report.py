"""Human-readable views of the iterations: the per-category table and the accuracy plot
(CosmicMan Fig. 2 style: accuracy per category against iteration, with the target)."""

from __future__ import annotations

import io

from flywheel.annotation.iterations import IterationResult

ACCURACY_COLUMNS = [("category", "string"), ("accuracy_before", "float"), ("accuracy_after", "float"),
                    ("labelled_by_people", "bool"), ("below_target", "bool")]


def accuracy_rows(result: IterationResult, target: float) -> list[tuple]:
    """Per category: accuracy before and after the iteration, whether people labelled it, whether
    it is still below target (``ACCURACY_COLUMNS``)."""
    rows = []
    for c in sorted(result.accuracy_after or result.accuracy_before):
        after = result.accuracy_after.get(c)
        rows.append((c, result.accuracy_before.get(c), after, c in result.categories,
                     after is not None and after < target))
    return rows


def accuracy_plot(results: list[IterationResult], target: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    cats = sorted({c for r in results for c in r.accuracy_after})
    xs = [r.iteration for r in results]
    for c in cats:
        ax.plot(xs, [r.accuracy_after.get(c, float("nan")) for r in results], color="0.7", lw=0.8)
    means = [sum(r.accuracy_after.values()) / max(1, len(r.accuracy_after)) for r in results]
    ax.plot(xs, means, color="C0", lw=2.5, marker="o", label="mean over categories")
    ax.axhline(target, color="C3", ls="--", label=f"target {target:.0%}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy on I_e")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(xs)
    ax2 = ax.twinx()
    ax2.bar(xs, [r.labels for r in results], alpha=0.2, color="C2", label="human labels")
    ax2.set_ylabel("human labels this iteration")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
