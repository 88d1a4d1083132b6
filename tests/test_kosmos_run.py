"""KOSMOS-G as a tracked training: one parent MLflow run with a nested run per stage, each stage's model directory
registered as a version that loads back (checksums checked) and generates from an interleaved prompt through
MLflow's pyfunc, with the base's UNet and VAE byte-identical throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training_samples import synthetic_samples

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def kosmos_run(protocol, tmp_path_factory):
    from flywheel.tracking import TrackingSettings
    from training.kosmos.instruct import examples_from_pairs
    from training.kosmos.pairs import build_pairs
    from training.kosmos.run import run_kosmos_g
    from training.settings import KosmosSettings

    from evaluation.truth_judge import TruthJudge

    tmp = tmp_path_factory.mktemp("kosmos")
    samples = synthetic_samples(protocol, seed=43, count=24)
    pairs = build_pairs(samples, protocol)
    held = [r for r in pairs if r["reference_key"] and r["part"] == "top"][:2]
    examples = examples_from_pairs(samples, pairs, (96, 64))
    s = KosmosSettings(source_width=32, source_layers=1, captions=40, held_out_captions=10, lm_steps=3, align_steps=3,
                       instruct_steps=2, batch_size=8, instruct_batch_size=4, subject_prompts=2, sample_steps=2)
    tracking = TrackingSettings(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "artifacts"))
    judge = TruthJudge.load(ROOT / "models" / "truth-judge", protocol)
    run = run_kosmos_g(s, ROOT / "models" / "embedded-base", ROOT / "models" / "embedded-base-clip", examples, held,
                       protocol, tmp / "out", tracking, "test-kosmos", judge=judge, tags={"dagster.run_id": "r1"})
    return run, tracking, held


def test_each_stage_is_a_nested_run_and_a_registered_version(kosmos_run):
    import mlflow

    run, tracking, held = kosmos_run
    mlflow.set_tracking_uri(tracking.tracking_uri)
    client = mlflow.MlflowClient()
    assert list(run.stage_run_ids) == ["lm", "align", "instruct"] == list(run.versions)
    for stage, run_id in run.stage_run_ids.items():
        child = client.get_run(run_id)
        assert child.data.tags["mlflow.parentRunId"] == run.run_id and child.data.tags["kosmos.stage"] == stage
        assert child.data.metrics["base_unchanged"] == 1.0
        version = client.get_model_version(run.model_name, run.versions[stage])
        assert version.tags["kosmos.stage"] == stage and version.tags["dagster.run_id"] == "r1"
    lm = client.get_metric_history(run.stage_run_ids["lm"], "lm_loss")
    assert [m.step for m in lm] == [1] and np.isfinite(lm[0].value)
    align = client.get_run(run.stage_run_ids["align"]).data.metrics
    assert {"r2", "retrieval_top1", "before_r2", "before_retrieval_top1"} <= set(align)
    parent = client.get_run(run.run_id).data
    assert parent.params["kosmos.align_steps"] == "3" and parent.tags["cosmicman.stage"] == "kosmos_g"
    # the subject figures of the held-out garments: judged, and CLIP-I/CLIP-T from the base's CLIP
    assert run.subject["garments"] == len(held) == 2 and run.subject["judge"]
    assert 0.0 <= run.metrics["subject.colour_accuracy"] <= 1.0 and -1 <= run.metrics["subject.clip_i"] <= 1
    assert "dino" in run.subject["not_computed"]
    artifacts = {a.path for a in client.list_artifacts(run.stage_run_ids["instruct"])}
    assert "subject_scores.json" in artifacts


def test_a_stage_directory_reloads_to_the_same_embeddings_and_a_corrupted_file_is_named(kosmos_run, tmp_path):
    import shutil

    from flywheel.checksums import ChecksumError
    from training.kosmos.checkpoint import load_kosmos
    from training.kosmos.interleaved import parse

    run, _, held = kosmos_run
    folder = run.model_dirs["instruct"]
    loaded = load_kosmos(folder)
    assert loaded.info["stage"] == "instruct" and loaded.info["aligned_null"] is True
    from training.kosmos.pairs import unpng

    prompt = [parse("a person wearing <image>", [unpng(held[0]["crop_png"])]), parse("a woman, red t-shirt")]
    again = load_kosmos(folder)
    with torch.no_grad():
        a = loaded.aligner.encode(*loaded.source.embed(prompt))
        b = again.aligner.encode(*again.source.embed(prompt))
    assert torch.equal(a, b) and a.shape[:2] == (2, 77)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    data = bytearray((copy / "aligner.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "aligner.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="aligner.safetensors: sha256 mismatch"):
        load_kosmos(copy)
    (copy / "aligner.safetensors").unlink()
    with pytest.raises(ChecksumError, match="aligner.safetensors: missing"):
        load_kosmos(copy)
    with pytest.raises(FileNotFoundError, match="not a KOSMOS-G model directory"):
        load_kosmos(tmp_path)


def test_the_registered_version_generates_from_an_interleaved_prompt(kosmos_run):
    import io

    import mlflow
    import pandas as pd
    from PIL import Image

    from training.kosmos.pairs import unpng

    run, tracking, held = kosmos_run
    mlflow.set_tracking_uri(tracking.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{run.model_name}/{run.versions['instruct']}")
    buf = io.BytesIO()
    Image.fromarray(unpng(held[0]["crop_png"])).save(buf, format="PNG")
    out = model.predict(pd.DataFrame({"prompt": ["a person wearing <image>", "a man, blue t-shirt"],
                                      "images": [[buf.getvalue()], []], "seed": [0, 1]}), params={"steps": 2})
    images = [np.asarray(Image.open(io.BytesIO(b))) for b in out]
    assert [im.shape for im in images] == [(96, 64, 3)] * 2 and all(im.std() > 0 for im in images)
    info = json.loads((run.model_dirs["instruct"] / "kosmos.json").read_text())
    from training.base_model import load_base
    from training.kosmos.generate import weights_digest

    assert info["unet_digest"] == weights_digest(load_base(ROOT / "models" / "embedded-base").unet)


def test_the_report_section_reads_the_newest_instruct_version_or_says_why_not(kosmos_run, tmp_path):
    import mlflow

    from evaluation.kosmos import kosmos_g_summary
    from evaluation.report import _kosmos_section

    run, tracking, _ = kosmos_run
    mlflow.set_tracking_uri(tracking.tracking_uri)
    client = mlflow.MlflowClient()
    found = kosmos_g_summary(client, run.model_name, None, tmp_path / "k")
    assert found["version"] == run.versions["instruct"] and found["run_id"] == run.stage_run_ids["instruct"]
    assert found["scores"]["colour_accuracy"] == run.subject["colour_accuracy"]
    page = _kosmos_section(found)
    assert f"version {run.versions['instruct']}" in page and "data:image/png;base64," in page
    assert f"{run.subject['clip_i']:.4f}" in page and "not computed: " in page  # DINO has no local weights
    other = kosmos_g_summary(client, run.model_name, "cosmicman-hq-v9", tmp_path / "k")
    assert "no KOSMOS-G version instruction-tuned on cosmicman-hq-v9" in other["note"]
    assert "kosmos_g_checkpoint" in _kosmos_section(other)
    assert kosmos_g_summary(client, "nobody", None, tmp_path / "k") == {
        "note": "no KOSMOS-G version instruction-tuned (materialize kosmos_g_checkpoint, or run `cosmicman train-kosmos-g`)"}
