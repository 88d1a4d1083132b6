"""When each asset of the chain runs by itself (declarative automation, evaluated by the
``flywheel_automation`` sensor).

Data-version aware: a step runs when an input's *data version* changed, so a refresh that
brings nothing new (same kept pool, same annotations, same published snapshot) stops there
instead of retraining on identical data; and only once every blocking check on its inputs
passed. A dependency that will be requested in the same tick counts as changed, so a model
and its evaluation go in one run instead of two."""

import dagster as dg

AC = dg.AutomationCondition


def after_new_batches() -> dg.AutomationCondition:
    """Eager on the raw batches, without eager's wait for *every* batch: one failed batch is
    reported on its own run and skipped, not a missing dependency that blocks the pool forever."""
    return (AC.eager().without(~AC.any_deps_missing()) & AC.all_deps_blocking_checks_passed()) \
        .with_label("after new batches, checks passed")


def on_new_data(same_run_as: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """An input's data version changed (or one of the inputs named in ``same_run_as`` is requested this
    tick: then this asset runs after it in the same run), no input is running, missing or failing a
    blocking check, and this asset is not running."""
    changed = AC.any_deps_match(AC.data_version_changed())
    if same_run_as:
        changed = changed | AC.any_deps_match(AC.will_be_requested()).allow(
            dg.AssetSelection.assets(*same_run_as))
    return (
        changed.since_last_handled()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    ).with_label("on new input data, checks passed")
