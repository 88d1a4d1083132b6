"""The Ray engine gives the local engine's results, item by item, in the library and from Dagster
(dagster-ray's resource connecting a Ray on loopback for the step)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from flywheel.filters.chain import FilterSettings, run_filter
from flywheel.ray_data import EngineSettings, init_options
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore
from flywheel.synthetic.source import SyntheticConfig

pytestmark = [pytest.mark.slow, pytest.mark.server]


def comparable(table) -> list[tuple]:
    """Each record's verdict, reasons and every score (but its timings), in pool order."""
    rows = []
    for r in table.to_pylist():
        scores = {k: v for k, v in json.loads(r["scores_json"]).items() if not k.startswith("seconds")}
        rows.append((r["record_id"], r["verdict"], r["reasons"], r["duplicate_of"], r["person_box"], r["face_box"], scores))
    return rows


def test_init_options_keep_a_local_ray_on_loopback_with_room_for_ray_data(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("COSMICMAN_PROFILE", "test")
    local = init_options(EngineSettings(kind="ray"), workers=2)
    assert local["_node_ip_address"] == "127.0.0.1" and local["num_cpus"] == 3 and "address" not in local
    assert local["runtime_env"]["env_vars"]["COSMICMAN_PROFILE"] == "test"
    cluster = init_options(EngineSettings(kind="ray", ray_address="ray://head:10001"), workers=8)
    assert cluster["address"] == "ray://head:10001" and "num_cpus" not in cluster  # a cluster sizes itself
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert init_options(EngineSettings(kind="ray"), workers=2)["address"] == "10.0.0.5:6379"


def test_filter_chain_on_ray_equals_the_local_engine(protocol, tmp_path):
    import ray

    cfg = SyntheticConfig(seed=21, bad_fraction=0.6, width=256, height=384)
    store = ContentStore(tmp_path / "store")
    raw = ingest_synthetic(cfg, protocol, store, count=72).table
    settings = FilterSettings(min_short_side=160, min_long_side=240, min_face=20, workers=2)
    local = run_filter(raw, store, settings, workers=2)
    seen = []
    on_ray = run_filter(raw, store, settings, workers=2, engine=EngineSettings(kind="ray", batch_size=8),
                        progress=lambda done, total: seen.append((done, total)))
    assert on_ray.analysed == local.analysed == len(set(raw.column("sha256").to_pylist()))
    assert comparable(on_ray.table) == comparable(local.table)
    assert {r["verdict"] for r in local.table.to_pylist()} >= {"keep", "reject"}  # not a trivial batch
    assert seen[-1] == (local.analysed, local.analysed)
    assert not ray.is_initialized()  # the run stopped the Ray it started


def test_dagster_filters_on_ray_through_the_dagster_ray_resource(workspace, monkeypatch):
    import ray

    from assets.filtering import filtered_pool
    from assets.sourcing import raw_images
    from flywheel.manifests import FILTERED_POOL, read_manifest
    from flywheel.settings import load_settings
    from orchestration.resources import FlywheelResource, RayEngine

    monkeypatch.setenv("COSMICMAN_SYNTHETIC__COUNT", "72")
    monkeypatch.setenv("COSMICMAN_FILTER__WORKERS", "2")
    key = "synthetic--20260101T000000Z"
    resources = {"flywheel": FlywheelResource(), "ray_engine": RayEngine()}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("source_batches", [key])
        assert dg.materialize([raw_images], partition_key=key, resources=resources, instance=instance).success
        assert dg.materialize([filtered_pool], resources=resources, instance=instance).success
        path = load_settings().manifests_dir / "filtered_pool.parquet"
        local = read_manifest(path, FILTERED_POOL)
        path.unlink()  # no cached analyses: the Ray run analyses every image again
        monkeypatch.setenv("COSMICMAN_ENGINE__KIND", "ray")
        result = dg.materialize([filtered_pool], resources={**resources, "flywheel": FlywheelResource()}, instance=instance)
        assert result.success
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("Ray engine: local Ray on loopback, 2 actors" in m for m in logs)
    on_ray = read_manifest(path, FILTERED_POOL)
    assert comparable(on_ray) == comparable(local)
    meta = result.asset_materializations_for_node("filtered_pool")[0].metadata
    assert meta["analysed_this_run"].value == len(set(r["sha256"] for r in local.to_pylist() if r["sha256"]))
    assert {r.data["step"] for r in meta["ms_per_image_by_step"].records} == {"decode", "hash", "bodies", "faces", "quality"}
    assert not ray.is_initialized()  # dagster-ray disconnected it when the step ended


def test_annotation_pool_parsing_and_views_on_ray_equal_the_local_engine(protocol, tmp_path):
    import numpy as np
    import ray

    from flywheel.annotation.pool import build_pool

    store = ContentStore(tmp_path / "store")
    raw = ingest_synthetic(SyntheticConfig(seed=5, bad_fraction=0.0, width=128, height=192), protocol, store, count=20).table
    kept = run_filter(raw, store, FilterSettings(min_short_side=64, min_long_side=96, min_face=8), workers=1).table.to_pylist()
    raw_by_id = {r["record_id"]: r for r in raw.to_pylist()}
    for r in list(raw_by_id.values())[::2]:
        r["sidecar_parsing_sha256"] = None  # no source map: these are parsed by the fallback
    local_pool, local_images, _ = build_pool(kept, raw_by_id, store, protocol, tmp_path / "local")
    ray_pool, ray_images, _ = build_pool(kept, raw_by_id, store, protocol, tmp_path / "ray",
                                         engine=EngineSettings(kind="ray", batch_size=3), workers=2)
    assert [(i.record_id, i.parsing_sha256, i.parsing_source) for i in ray_images] == \
           [(i.record_id, i.parsing_sha256, i.parsing_source) for i in local_images]
    assert {i.parsing_source for i in local_images} == {"source", "fallback"}
    assert ray_pool.record_ids == local_pool.record_ids and len(ray_pool.views) == len(kept)
    np.testing.assert_array_equal(ray_pool.views.crops, local_pool.views.crops)
    np.testing.assert_array_equal(ray_pool.views.stats, local_pool.views.stats)
    assert local_pool.views.crops.any()  # not a trivial pool
    assert not ray.is_initialized()
    again, again_images, _ = build_pool(kept, raw_by_id, store, protocol, tmp_path / "ray",
                             engine=EngineSettings(kind="ray", ray_address="127.0.0.1:1"), workers=2)
    # a rebuild reuses the views and the parsing maps it made (so needs no Ray: this address is unreachable)
    np.testing.assert_array_equal(again.views.crops, local_pool.views.crops)
    assert [(i.parsing_sha256, i.parsing_source) for i in again_images] == [(i.parsing_sha256, i.parsing_source) for i in local_images]


@pytest.mark.parametrize("backend", ["part_stats", "learned"])  # learned: a torch encoder shipped to the actors
def test_annotator_labelling_the_pool_on_ray_equals_the_local_engine(protocol, tmp_path, backend):
    import numpy as np
    import ray

    from flywheel.annotation.annotator import AnnotatorSettings, new_annotator
    from flywheel.annotation.pool import build_pool
    from flywheel.annotation.pool_labels import pool_probabilities
    from tests.tiny_annotator import TINY_PRETRAIN

    store = ContentStore(tmp_path / "store")
    raw = ingest_synthetic(SyntheticConfig(seed=6, bad_fraction=0.0, width=128, height=192), protocol, store, count=24).table
    kept = run_filter(raw, store, FilterSettings(min_short_side=64, min_long_side=96, min_face=8), workers=1).table.to_pylist()
    pool, _, _ = build_pool(kept, {r["record_id"]: r for r in raw.to_pylist()}, store, protocol, tmp_path / "pool")
    annotator = new_annotator(protocol, AnnotatorSettings(backend=backend, min_steps=2, epochs=1, pretrain=TINY_PRETRAIN))
    if backend == "learned":
        annotator.pretrain(pool.views)
    labelled = [i for i, rid in enumerate(pool.record_ids) if rid in pool.truth][:12]
    annotator.fit(pool.views[labelled], [{k: v for k, v in pool.truth[pool.record_ids[i]].items() if v is not None}
                                         for i in labelled])
    local = pool_probabilities(annotator, pool.views)
    on_ray = pool_probabilities(annotator, pool.views, EngineSettings(kind="ray", batch_size=5), workers=2)
    assert len(on_ray) == len(local) == len(protocol.categories)
    for a, b, name in zip(on_ray, local, protocol.categories):
        assert a.shape == b.shape == (len(pool.record_ids), len(protocol.categories[name].answers)), name
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=name)
        assert (a.argmax(1) == b.argmax(1)).all(), name  # the same answers
    assert len({tuple(p.argmax(1)) for p in local}) > 1  # a trained annotator, not constant output
    assert not ray.is_initialized()


def test_evaluation_sampling_and_truth_judging_on_ray_equal_the_local_engine(protocol):
    import numpy as np
    import ray
    import torch

    from evaluation.sampling_engine import sample_and_judge
    from evaluation.truth_judge import TruthJudge
    from training.base_model import load_base
    from training.stages import EMBEDDED_BASE_DIR

    base, judge = load_base(EMBEDDED_BASE_DIR), TruthJudge.load(EMBEDDED_BASE_DIR.parent / "truth-judge", protocol)
    captions = [f"{shot} of a {g} wearing a red t-shirt" for shot in ("full-body shot", "headshot", "upper-body shot")
                for g in ("man", "woman")][:5]
    seeds = list(range(len(captions)))
    args = (captions, seeds, *base.image_size, 4, 4.0, 2)  # 4 DDIM steps, batches of 2 (the last one short)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a one-CPU actor: the same arithmetic, so the same bits
    try:
        local_images, local_answers = sample_and_judge(base, judge, *args)
    finally:
        torch.set_num_threads(threads)
    images, answers = sample_and_judge(base, judge, *args, engine=EngineSettings(kind="ray"), workers=2)
    assert images.shape == (5, *base.image_size, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, local_images)
    assert answers == local_answers and len(answers) == 5
    assert len({im.tobytes() for im in images}) == 5  # every (prompt, seed) its own sample
    nothing, none = sample_and_judge(base, None, [], [], *base.image_size, 4, 4.0, 2, engine=EngineSettings(kind="ray"))
    assert nothing.shape == (0, *base.image_size, 3) and none is None
    assert not ray.is_initialized()
