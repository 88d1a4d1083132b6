"""One pipeline stage in a process of its own, for the fault-injection tests: the test kills it
(``COSMICMAN_KILL_AT``, see :mod:`flywheel.faults`) and runs it again.

    python -m tests.fault_driver <stage>     # with COSMICMAN_PROFILE / COSMICMAN_WORKSPACE set
"""

from __future__ import annotations

import sys

STAGES = ("source", "filter", "iteration-0", "iteration-1", "pool", "publish", "train", "evaluate")


def run(stage: str) -> None:
    from flywheel import stages
    from flywheel.settings import load_settings

    settings = load_settings()
    if stage == "source":
        stages.source_batch(settings, "synthetic", "b1", workers=2)  # a process pool, so orphans would show
    elif stage == "filter":
        stages.filter_pool(settings, workers=1)
    elif stage.startswith("iteration-"):
        result, _, _ = stages.annotation_iteration(settings, int(stage.split("-")[1]))
        if result.status != "done":
            raise SystemExit(f"{stage}: {result.status}")
    elif stage == "pool":
        stages.annotate_pool(settings)
    elif stage == "publish":
        stages.publish_snapshot(settings)
    elif stage == "train":
        from training.stages import train_variant

        train_variant(settings, "daring")
    elif stage == "evaluate":
        from evaluation.stages import evaluate

        evaluate(settings)
    else:
        raise SystemExit(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


if __name__ == "__main__":
    run(sys.argv[1])
