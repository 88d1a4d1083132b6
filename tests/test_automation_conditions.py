"""The chain's automation conditions, evaluated tick by tick against a real (ephemeral) instance:
a failed batch does not block the pool, and a re-materialization with the same data version
starts nothing downstream while a new one does."""

import dagster as dg

from assets.partitions import source_batches
from orchestration.definitions import defs


def _tick(instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}, result.cursor


def _materialize(instance, key: str, version: str | None = None, partition: str | None = None) -> None:
    tags = {"dagster/data_version": version} if version else None
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition, tags=tags))


def test_one_failed_batch_does_not_block_the_pool():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(source_batches.name, ["synthetic--a", "web--b"])
        requested, cursor = _tick(instance)
        assert "filtered_pool" not in requested
        _materialize(instance, "raw_images", "r1", partition="synthetic--a")  # web--b failed: never materialized
        requested, cursor = _tick(instance, cursor)
        assert "filtered_pool" in requested


def test_the_same_data_version_starts_nothing_downstream():
    with dg.instance_for_test() as instance:
        _, cursor = _tick(instance)
        _materialize(instance, "cosmicman_hq_snapshot", "hash-1")
        requested, cursor = _tick(instance, cursor)
        # one tick: both fine-tunes, the dual prior after the plain one and the report, in one run
        assert {"plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint",
                "evaluation_report"} <= requested
        for key in ("plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint"):
            _materialize(instance, key, f"{key}/1")
        _materialize(instance, "evaluation_report")
        requested, cursor = _tick(instance, cursor)
        assert not requested & {"plain_finetune_checkpoint", "daring_checkpoint", "evaluation_report"}
        _materialize(instance, "cosmicman_hq_snapshot", "hash-1")  # republished, identical data
        requested, cursor = _tick(instance, cursor)
        assert not requested & {"plain_finetune_checkpoint", "daring_checkpoint", "adversarial_checkpoint"}
        _materialize(instance, "cosmicman_hq_snapshot", "hash-2")  # a new version
        requested, _ = _tick(instance, cursor)
        assert {"plain_finetune_checkpoint", "daring_checkpoint"} <= requested


def test_a_failed_blocking_check_holds_the_snapshot():
    with dg.instance_for_test() as instance:
        _, cursor = _tick(instance)
        _materialize(instance, "annotated_pool", "a1")
        check = dg.AssetCheckKey(dg.AssetKey("annotated_pool"), "annotations_suite")
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=check.asset_key, check_name=check.name, passed=False, severity=dg.AssetCheckSeverity.ERROR))
        requested, cursor = _tick(instance, cursor)
        assert "cosmicman_hq_snapshot" not in requested
        _materialize(instance, "annotated_pool", "a2")
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=check.asset_key, check_name=check.name, passed=True))
        requested, _ = _tick(instance, cursor)
        assert "cosmicman_hq_snapshot" in requested
