"""The annotation flywheel's parts: captions, labelling ledger, annotator and resumable iterations."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from flywheel.annotation.annotator import AnnotatorSettings, AttributeAnnotator
from flywheel.annotation.captions import (
    approx_clip_tokens,
    caption_groups,
    join_caption,
)
from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings
from flywheel.annotation.labelling import (
    NOT_APPLICABLE,
    LabelLedger,
    LabelRequest,
    OracleLabeller,
)
from tests.tiny_annotator import TINY_PRETRAIN

ANSWERS = {"gender": "woman", "age": "adult", "body_shape": "slim", "person_type": "full body", "pose": "standing",
           "arm_pose": "arms down", "background": "outdoor", "expression": "smiling", "hair_length": "long",
           "hair_color": "red", "hat": "yes", "hat_type": "cap", "hat_color": "blue", "sunglasses": "no", "top": "yes",
           "top_type": "shirt", "sleeve_length": "long sleeve", "top_color": "white", "top_pattern": "striped",
           "dress": "no", "bottom_type": "skirt", "bottom_color": "black", "bottom_pattern": "solid",
           "skirt_length": "mini", "belt": "no", "shoe_type": "boots", "shoe_color": "brown", "bag": "yes",
           "bag_type": "backpack", "bag_color": "red", "scarf": "no"}


def test_caption_groups_carry_their_parsing_classes(protocol):
    groups = caption_groups(protocol, ANSWERS, seed=1)
    assert [g.part for g in groups[:2]] == ["body", "scene"]  # global groups first
    by_part = {g.part: g for g in groups}
    assert by_part["body"].text == "a woman, slim build, standing, with arms down"
    assert by_part["scene"].class_ids == ()  # the "other" group has no mask
    assert by_part["hat"].text == "wearing a hat, cap, blue hat" and by_part["hat"].class_ids == (1,)
    assert by_part["bottom"].class_ids == (5, 6) and "black skirt" in by_part["bottom"].text
    assert "bag" in by_part and by_part["bag"].text.endswith("red backpack")
    assert "sunglasses" not in join_caption(groups)  # "no" answers are not voiced
    garments = [g.part for g in groups[2:]]
    assert caption_groups(protocol, ANSWERS, seed=1) == groups  # reproducible
    orders = {tuple(g.part for g in caption_groups(protocol, ANSWERS, seed=s)[2:]) for s in range(6)}
    assert len(orders) > 1 and all(sorted(o) == sorted(garments) for o in orders)  # garment groups shuffled


def test_token_budget_drops_trailing_groups(protocol):
    full = caption_groups(protocol, ANSWERS, seed=2)
    short = caption_groups(protocol, ANSWERS, seed=2, budget=20)
    assert approx_clip_tokens(join_caption(short)) <= 20 < approx_clip_tokens(join_caption(full))
    assert short == full[: len(short)] and short[0].part == "body"
    assert [g.part for g in caption_groups(protocol, ANSWERS, budget=3)] == ["body"]  # never dropped


def test_oracle_and_ledger_count_each_label_once(tmp_path):
    truth = {"a": {"hat": "yes", "hat_color": "red"}, "b": {"hat": "no", "hat_color": None}}
    oracle = OracleLabeller(truth)
    reqs = [LabelRequest("a", "hat_color"), LabelRequest("b", "hat_color"), LabelRequest("b", "hat")]
    oracle.submit(reqs, "iter-0000")
    ledger = LabelLedger(tmp_path)
    assert ledger.record("iter-0000", oracle.collect("iter-0000")) == 3
    with pytest.raises(FileExistsError):
        ledger.record("iter-0000", oracle.collect("iter-0000"))
    assert ledger.count() == 3 and LabelLedger(tmp_path).count() == 3
    assert ledger.by_record() == {"a": {"hat_color": "red"}, "b": {"hat": "no"}}
    assert {l.answer for l in ledger.labels()} >= {NOT_APPLICABLE}
    assert oracle.collect("unknown") is None
    with pytest.raises(KeyError, match="no ground truth"):
        oracle.submit([LabelRequest("zzz", "hat")], "x")


def test_annotator_learns_follows_the_hierarchy_and_round_trips(protocol, small_pool, tmp_path):
    ann = AttributeAnnotator(protocol, AnnotatorSettings(crop_size=32, epochs=25, width=32))
    train, test = small_pool.views[:60], small_pool.views[60:]
    labels = [{c: small_pool.truth[r][c] for c in ("hat", "scarf", "person_type")} for r in small_pool.record_ids[:60]]
    ann.fit(train, labels)
    answers, conf = ann.predict(test)
    for c in ("hat", "scarf"):
        acc = np.mean([a[c] == small_pool.truth[r][c] for a, r in zip(answers, small_pool.record_ids[60:])])
        assert acc >= 0.85, (c, acc)
    for a, cf in zip(answers, conf):
        assert not protocol.check_answers(a), protocol.check_answers(a)  # hierarchy-consistent
        assert set(cf) == {k for k, v in a.items() if v is not None} and all(0 < v <= 1 for v in cf.values())
    ann.save(tmp_path / "ann")
    again = AttributeAnnotator.load(tmp_path / "ann", protocol)
    assert again.predict(test)[0] == answers


class CountingOracle(OracleLabeller):
    def __init__(self, truth):
        super().__init__(truth)
        self.submitted = 0

    def submit(self, requests, batch, hints=None):
        self.submitted += len(requests)
        if batch.startswith("eval"):  # I_e is labelled without the annotator's answers shown (they would bias it)
            assert hints is None
        else:
            assert hints is not None and set(hints) <= {r.record_id for r in requests}
        super().submit(requests, batch, hints)


def test_iterations_resume_without_losing_or_double_counting_labels(protocol, small_pool, tmp_path):
    settings = AnnotationSettings(eval_size=20, seed_size=10, batch_size=10, max_iterations=2, label_budget=1.0,
                                  annotator=AnnotatorSettings(crop_size=32, epochs=2, width=16, pretrain=TINY_PRETRAIN))
    oracle = CountingOracle(small_pool.truth)
    fw = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, oracle)
    first = fw.run_iteration(0)
    assert first.categories == list(protocol.categories) and first.images == 10
    # every question that applies, children only where the person's parent answer allows them
    asked = sum(len(protocol.applicable_categories(small_pool.truth[r])) for r in fw.ledger.by_record())
    assert first.labels == asked == fw.ledger.count() == oracle.submitted - fw.eval_ledger.count() < 10 * len(protocol.categories)
    assert all(l.answer != NOT_APPLICABLE for l in fw.ledger.labels())  # no question was asked that did not apply
    # a kill after the labels were recorded, before the iteration finished
    (tmp_path / "iterations" / "iter-0000" / "metrics.json").unlink()
    fw2 = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, CountingOracle(small_pool.truth))
    again = fw2.run_iteration(0)
    assert fw2.labeller.submitted == 0 and fw2.ledger.count() == first.labels and again.labels == first.labels  # nothing asked twice
    assert fw2.eval_ids == fw.eval_ids
    results = fw2.run()
    assert results[-1].stop_reason is not None and len(results) <= 2
    assert fw2.ledger.count() + fw2.eval_ledger.count() == results[-1].total_labels  # I_e's labels are paid for too
    assert results[-1].eval_labels == sum(len(protocol.applicable_categories(small_pool.truth[r])) for r in fw2.eval_ids)
    eval_set = set(fw2.eval_ids)
    assert not {r for r, _ in fw2.ledger.labelled_pairs()} & eval_set  # I_e is never used for training
    rows = fw2.label_pool()
    assert len(rows) == len(small_pool.record_ids)
    human = fw2.ledger.by_record()
    for row in rows:
        assert not protocol.check_answers(row["answers"])
        for c, origin in row["answer_origin"].items():
            if origin == "human":
                assert row["answers"][c] == human[row["record_id"]][c]


def test_fallback_parsing_finds_the_person_and_the_head(protocol):
    from flywheel.annotation.parsing import decode_parsing, geometric_parsing, mean_iou
    from flywheel.filters.people import PeopleDetector
    from flywheel.synthetic.scene import render_people
    from flywheel.synthetic.source import encode_parsing

    detector = PeopleDetector()
    body_iou, face_iou = [], []
    for i in range(8):
        img, truth, _, _ = render_people(np.random.default_rng([51, i]), protocol, 256, 384, person_type="full body")
        found = detector.detect(img)
        pred = geometric_parsing(img, found.person_box, found.face_box)
        assert pred.shape == truth.shape and pred.max() < 18
        if found.person_box is None:
            assert not pred.any()
            continue
        body_iou.append(mean_iou(pred > 0, truth > 0, 2)[1])
        face_iou.append(mean_iou(pred, truth).get(11, 0.0))
    assert len(body_iou) >= 6 and np.mean(body_iou) > 0.5 and np.mean(face_iou) > 0.2
    assert np.array_equal(decode_parsing(encode_parsing(truth)), truth)


@pytest.mark.slow
def test_stages_from_annotation_to_snapshot_to_training_track_in_mlflow(workspace, tmp_path, monkeypatch, protocol):
    import mlflow

    from flywheel import stages
    from flywheel.manifests import ANNOTATIONS, read_manifest
    from flywheel.settings import load_settings
    from flywheel.validation.annotations import validate_annotations

    monkeypatch.chdir(tmp_path)  # artifacts must not land in the working directory
    settings = load_settings()
    stages.source_batch(settings, "synthetic", "20260101T000000Z")
    stages.filter_pool(settings, workers=1)
    with pytest.raises(RuntimeError, match="have not stopped"):
        stages.annotate_pool(settings)
    k, result = 0, None
    while result is None or not result.stop_reason:
        result, history, run_id = stages.annotation_iteration(settings, k)
        k += 1
    mlflow.set_tracking_uri(settings.tracking.tracking_uri)
    run = mlflow.get_run(run_id)
    assert run.data.metrics["total_labels"] == result.total_labels
    assert "acc_after.gender" in run.data.metrics and run.data.params["labeller"] == "oracle"
    # the default (learned) annotator's label-free pretraining on the pool, with its loss falling
    assert run.data.params["annotation.annotator.backend"] == "learned"
    assert run.data.metrics["pretrain.crops"] > 0 and run.data.metrics["pretrain.last_loss"] < run.data.metrics["pretrain.first_loss"]
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)} >= {"iteration.json", "accuracy_vs_iteration.png"}
    assert not (tmp_path / "mlruns").exists() and (workspace / "mlartifacts").exists()

    out = stages.annotate_pool(settings)
    table = read_manifest(out.manifest, ANNOTATIONS)
    assert table.num_rows == sum(v == "keep" for v in stages.read_filtered_pool(settings).column("verdict").to_pylist())
    assert validate_annotations(table, protocol).success
    row = table.to_pylist()[0]
    assert row["parsing_source"] == "source" and row["caption_groups"][0]["part"] == "body"

    # the annotated pool publishes as CosmicMan-HQ v1 through the Dagster asset, with its check
    import dagster as dg

    from assets.snapshot import cosmicman_hq_snapshot, cosmicman_hq_snapshot_suite
    from orchestration.resources import FlywheelResource, RayEngine

    result = dg.materialize([cosmicman_hq_snapshot, cosmicman_hq_snapshot_suite], resources={"flywheel": FlywheelResource()})
    assert result.success
    meta = result.asset_materializations_for_node("cosmicman_hq_snapshot")[0].metadata
    assert meta["tag"].value == "cosmicman-hq-v1" and meta["new_version"].value
    meta_snapshot = meta
    assert all(c.passed for c in result.get_asset_check_evaluations())
    snap = stages.snapshot_registry(settings)
    assert snap.versions() == [1] and meta["data_hash"].value == snap.data_hash("cosmicman-hq-v1")
    assert (settings.data_docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    again = stages.publish_snapshot(settings)
    assert not again.publication.new and again.stats["images"] == table.num_rows

    # KOSMOS-G's pairs from the published version: garment crops, each with its caption words
    from assets.training import kosmos_pairs
    from training.kosmos.pairs import read_pairs

    result = dg.materialize([kosmos_pairs], resources={"flywheel": FlywheelResource()})
    pairs_meta = result.asset_materializations_for_node("kosmos_pairs")[0].metadata
    pairs = read_pairs(Path(pairs_meta["path"].value))
    assert pairs_meta["dagster/row_count"].value == len(pairs) > 0 and pairs_meta["snapshot_tag"].value == "cosmicman-hq-v1"
    from training.stages import training_snapshot

    published = training_snapshot(settings)
    assert {r["key"] for r in pairs} <= {r["key"] for split in ("train", "test") for r in published.rows(split)}
    assert all(r["entity_text"] in r["caption"] for r in pairs)
    # KOSMOS-G on that version's pairs, from Dagster: three nested stage runs, a registered version each
    from assets.training import kosmos_g_checkpoint

    result = dg.materialize([kosmos_g_checkpoint], resources={"flywheel": FlywheelResource()})
    kosmos_meta = result.asset_materializations_for_node("kosmos_g_checkpoint")[0].metadata
    assert sorted(kosmos_meta["stage_versions"].value) == ["align", "instruct", "lm"]
    instruct = mlflow.MlflowClient().get_model_version("cosmicman-kosmos-g", kosmos_meta["stage_versions"].value["instruct"])
    assert instruct.tags["snapshot.tag"] == "cosmicman-hq-v1" and instruct.tags["kosmos.stage"] == "instruct"

    # training reads the published version and lands in MLflow as a registered model version
    from training.stages import train_variant

    trained = train_variant(settings, "daring", tags={"dagster.run_id": "test-run"})
    client = mlflow.MlflowClient()
    run = client.get_run(trained.run_id)
    assert run.data.tags["snapshot.tag"] == "cosmicman-hq-v1" and run.data.tags["snapshot.data_hash"] == meta["data_hash"].value
    assert run.data.params["train.beta"] == "1.0" and "train.lr" in run.data.params
    history = client.get_metric_history(trained.run_id, "loss_hola")
    assert [m.step for m in history] == [1, 2] and all(m.value > 0 for m in history)
    assert 0.0 <= run.data.metrics["attention_iou"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert "validation_samples.png" in artifacts
    version = client.get_model_version(trained.model_name, trained.model_version)
    assert version.tags["snapshot.tag"] == "cosmicman-hq-v1" and version.tags["dagster.run_id"] == "test-run"
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{trained.model_name}/{trained.model_version}")
    pngs = model.predict(pd.DataFrame({"prompt": ["a woman, red t-shirt"], "seed": [0]}), params={"steps": 2})
    assert len(pngs) == 1 and pngs[0][:4] == b"\x89PNG"

    # the dual-prior method: a parent run with one nested run per stage, a loadable model version
    from training.stages import train_dual_prior

    dual = train_dual_prior(settings, tags={"dagster.run_id": "test-run"})
    children = client.search_runs([client.get_run(dual.run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{dual.run_id}'")
    assert {r.data.tags["dual_prior.stage"] for r in children} == {"bind", "adversarial"}
    adversarial = client.get_run(dual.stage_run_ids["adversarial"])
    assert {"critic_shape_gp", "critic_pose_wasserstein", "gen_pose", "loss_noise"} <= set(adversarial.data.metrics)
    assert {"base_shape_iou", "bind_pose_iou"} <= set(dual.metrics)
    model = mlflow.pyfunc.load_model(f"models:/{dual.model_name}/{dual.model_version}")
    pngs = model.predict(pd.DataFrame({"prompt": ["a woman, <sds>"], "seed": [0]}), params={"steps": 2})
    assert pngs[0][:4] == b"\x89PNG"

    # evaluation: base, plain fine-tune (β = 0), Daring and the dual prior side by side
    plain = train_variant(settings, "plain-finetune", beta=0.0)
    from assets.evaluation import evaluation_report

    result = dg.materialize([evaluation_report], resources={"flywheel": FlywheelResource(), "ray_engine": RayEngine()},
                            selection=[evaluation_report.key])
    assert result.success
    meta = result.asset_materializations_for_node("evaluation_report")[0].metadata
    report = Path(meta["report"].value)
    data = json.loads(Path(meta["report_json"].value).read_text())
    labels = {m["label"]: m for m in data["models"]}
    shown = {r.data["model"]: r.data for r in meta["metrics"].value.records}  # a typed table in the Dagster UI
    assert set(shown) == set(labels) and shown["daring"]["acc_all"] == pytest.approx(labels["daring"]["metrics"]["acc_all"])
    (check,) = result.get_asset_check_evaluations()
    judge_acc = data["judge"]["calibration"]["degraded"]["acc_all"]  # the truth judge, on renders degraded like samples
    assert check.check_name == "judge_accuracy" and check.passed == (judge_acc >= 0.85)
    assert check.metadata["acc_all"].value == pytest.approx(judge_acc)
    assert set(labels) == {"base", "plain-finetune", "daring", "dual-prior"}
    assert labels["daring"]["version"] == trained.model_version and labels["plain-finetune"]["version"] == plain.model_version
    for m in labels.values():
        x = m["metrics"]
        assert 0.0 <= x["acc_all_ci_low"] <= x["acc_all"] <= x["acc_all_ci_high"] <= 1.0  # by the truth judge
        assert 0.0 <= x["annotator_acc_all_ci_low"] <= x["annotator_acc_all"] <= x["annotator_acc_all_ci_high"] <= 1.0
        assert set(m["per_category"]) and set(m["per_category_annotator"])
        assert x["piqe"] > 0 and "fd_truth" in x and "kid_truth" in x and 0.0 <= x["attention_iou"] <= 1.0
        assert "fid" not in x and "clipscore" not in x  # no local weights: not computed, never 0
        assert "no local CLIP directory" in m["skipped"]["clipscore"] and "needs local weights" in m["skipped"]["liqe"]
        assert m["has_vae"]  # the embedded base and its fine-tunes: SD 1.5's layout, latent space
    assert "Inception" in data["skipped"]["fid"]
    assert data["judge"]["calibration"]["clean"]["images"] == 6 and "renderer" in data["judge"]["identity"]
    assert data["annotator_judge"]["calibration"]["source_parsing"]["images"] == 6
    # every metric sits on the evaluated version's own run; the champion alias moved with a reason
    daring_run = client.get_run(trained.run_id)
    assert daring_run.data.metrics["eval.acc_all"] == pytest.approx(labels["daring"]["metrics"]["acc_all"])
    assert "evaluation" in {a.path for a in client.list_artifacts(trained.run_id)}
    # compared as a user would: one registered model, one version per variant on this snapshot, each
    # with its evaluation metrics on its logged model and the snapshot as dataset input
    assert trained.model_name == plain.model_name == dual.model_name == "cosmicman"
    versions = client.search_model_versions("name='cosmicman' and tags.`snapshot.tag` = 'cosmicman-hq-v1'")
    by_variant = {v.tags["variant"]: v for v in versions}
    assert set(by_variant) == {"daring", "plain-finetune", "dual-prior"}
    data_hash = meta_snapshot["data_hash"].value
    for variant, v in by_variant.items():
        logged = client.get_logged_model(v.tags["model_id"])
        evals = {m.key: m for m in logged.metrics or [] if m.key.startswith("eval.")}
        assert evals["eval.acc_all"].value == pytest.approx(labels[variant]["metrics"]["acc_all"])
        assert {m.dataset_name for m in evals.values()} == {"cosmicman-hq-v1"}
        assert {m.dataset_digest for m in evals.values()} == {data_hash[:36]}
        (dataset_input,) = client.get_run(v.run_id).inputs.dataset_inputs
        assert dataset_input.dataset.digest == data_hash[:36] and '"rev": "cosmicman-hq-v1"' in dataset_input.dataset.source
        assert logged.source_run_id == v.run_id
    from flywheel.mlflow_dataset import (
        DvcDatasetSource,  # the dataset's source fetches exactly that version
    )

    fetched = Path(DvcDatasetSource.from_dict(json.loads(dataset_input.dataset.source)).load(str(tmp_path / "fetched")))
    assert json.loads((fetched / "stats.json").read_text())["version"] == 1
    experiments = sorted({client.get_run(v.run_id).info.experiment_id for v in by_variant.values()})
    found = mlflow.search_logged_models(experiment_ids=experiments, filter_string="metrics.`eval.acc_all` >= 0",
                                        output_format="list")
    assert {m.model_id for m in found} >= {v.tags["model_id"] for v in by_variant.values()}
    # champion: the best variant by the configured metric; champion-<variant>: each variant's best
    metric = settings.evaluation.champion_metric
    top = max(labels[k]["metrics"].get(metric, float("-inf")) for k in by_variant)
    champion = client.get_model_version_by_alias("cosmicman", "champion")
    # a variant with the best value (on six samples two variants can tie; either is the best)
    assert labels[champion.tags["variant"]]["metrics"][metric] == top and champion.tags["champion.reason"]
    assert champion.version == by_variant[champion.tags["variant"]].version
    for variant, v in by_variant.items():
        assert client.get_model_version_by_alias("cosmicman", f"champion-{variant}").version == v.version
    decision = next(c for c in data["champions"] if c["alias"] == "champion")
    assert decision["moved"] and decision["champion"] == str(champion.version)
    info = mlflow.models.get_model_info(f"models:/cosmicman/{trained.model_version}")
    assert [c.name for c in info.signature.inputs.inputs] == ["prompt", "seed"] and info.signature.params.params[0].name == "steps"
    assert info.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # from code, no pickle

    # the page is self-contained and renders in headless Chromium with its table and grids
    from tests.browser import render

    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched: images are inlined
    dom = render(report, tmp_path / "report.png")
    assert 'id="metrics"' in dom and 'id="grids"' in dom and dom.count("data:image/png;base64") >= 4 * 2
    from PIL import Image

    shot = np.asarray(Image.open(tmp_path / "report.png").convert("L"))
    assert shot.shape == (2400, 1400) and shot.std() > 10  # not a blank page

    # an empty prompt subset: nothing generated, every model still evaluated, the reason reported
    from evaluation.stages import evaluate

    settings.evaluation.prompts = 0
    empty = evaluate(settings)
    for m in empty.data["models"]:
        assert "acc_all" not in m["metrics"] and "empty" in m["skipped"]["generation"]
        assert "attention_iou" in m["metrics"]
    assert "no image grid" in empty.report_html.read_text()

    # the CLI (and `dvc repro evaluate`) reads the same cached results and writes dvc metrics
    from typer.testing import CliRunner

    from flywheel.cli import app

    res = CliRunner().invoke(app, ["evaluate", "--metrics-out", str(tmp_path / "metrics" / "evaluation.json")])
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "metrics" / "evaluation.json").read_text())
    assert set(written) == set(labels) and written["daring"]["acc_all"] == pytest.approx(labels["daring"]["metrics"]["acc_all"])
    assert f"{trained.model_name}: " in " ".join(res.output.split())


def test_a_category_too_rare_in_the_evaluation_set_is_not_measured_and_is_labelled_for(protocol, small_pool, tmp_path):
    """Accuracy over fewer than min_eval_count I_e images is 'not measured' (never 1.0), it keeps
    'every category meets the target' from being declared, and the next iteration asks for it."""
    settings = AnnotationSettings(eval_size=20, seed_size=6, batch_size=6, max_iterations=3, label_budget=1.0,
                                  min_eval_count=5, target_accuracy=0.01,  # every measured category "meets" it
                                  annotator=AnnotatorSettings(crop_size=32, epochs=1, width=16, pretrain=TINY_PRETRAIN))
    fw = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, OracleLabeller(small_pool.truth))
    counts = {c: sum(small_pool.truth[r].get(c) is not None for r in fw.eval_ids) for c in protocol.categories}
    rare = sorted(c for c, n in counts.items() if n < 5)
    assert rare, counts  # the hierarchy makes some categories rare in 20 images (e.g. dress_length)
    first = fw.run_iteration(0)
    assert set(first.not_measured) == set(rare) and not set(rare) & set(first.accuracy_after)
    assert all(first.not_measured[c] == counts[c] for c in rare)
    assert all(lo <= first.accuracy_after[c] <= hi for c, (lo, hi) in first.intervals.items())
    assert first.stop_reason != "every category meets the target"
    second = fw.run_iteration(1)
    assert second.categories == [c for c in protocol.categories if c in rare]  # the measured ones meet the target


def test_the_pool_is_labelled_by_the_best_iteration_not_the_latest(protocol, small_pool, tmp_path):
    settings = AnnotationSettings(eval_size=20, seed_size=10, batch_size=10, max_iterations=2, label_budget=1.0,
                                  annotator=AnnotatorSettings(crop_size=32, epochs=2, width=16, pretrain=TINY_PRETRAIN))
    fw = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, OracleLabeller(small_pool.truth))
    fw.run_iteration(0)
    fw.run_iteration(1)
    # make iteration 1 the worse one on I_e
    path = tmp_path / "iterations" / "iter-0001" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["accuracy_after"] = {c: 0.0 for c in metrics["accuracy_after"]}
    path.write_text(json.dumps(metrics))
    assert fw.best_iteration() == 0
    rows = fw.label_pool()
    human = fw.ledger.by_record()
    first = fw.annotator(0).predict(small_pool.views)[0]
    latest = fw.annotator(1).predict(small_pool.views)[0]
    ai = [(i, c) for i, row in enumerate(rows) for c, o in row["answer_origin"].items() if o == "ai"]
    assert ai and all(rows[i]["answers"][c] == first[i][c] for i, c in ai if c not in human.get(rows[i]["record_id"], {}))
    assert any(first[i][c] != latest[i][c] for i, c in ai)  # the two annotators differ: the choice is visible


def test_the_production_profile_runs_the_flywheel_on_a_folder_of_renders_with_no_synthetic_source(tmp_path, monkeypatch, protocol):
    """No synthetic source and no free ground truth for I_e: two iterations complete with I_e
    labelled through the labelling backend, its labels counted; the renders' metadata (the
    renderer's attributes) is the second yardstick."""
    from flywheel.settings import load_settings
    from flywheel.stages import (
        annotation_flywheel,
        annotation_iteration,
        filter_pool,
        source_batch,
    )
    from flywheel.synthetic.source import SyntheticConfig, encode_parsing, render_sample

    root = tmp_path / "renders"
    (root / "parsing").mkdir(parents=True)
    cfg = SyntheticConfig(seed=21, bad_fraction=0.0, width=256, height=384)
    for i in range(40):
        s = render_sample(cfg, protocol, i)
        (root / f"r{i:03d}.{'png' if s.media_type == 'image/png' else 'jpg'}").write_bytes(s.data)
        (root / "parsing" / f"r{i:03d}.png").write_bytes(encode_parsing(s.parsing))
        (root / f"r{i:03d}.json").write_text(json.dumps({"attributes": s.truth["attributes"]}))
    sources = [{"type": "folder", "name": "renders", "path": str(root), "parsing": "parsing/{rel_stem}.png",
                "metadata": "{rel_stem}.json", "licence": "CC0-1.0"}]
    for key, value in {"PROFILE": "production", "WORKSPACE": str(tmp_path / "ws"), "STORE_URL": str(tmp_path / "store"),
                       "SOURCES": json.dumps(sources), "ANNOTATION__EVAL_SIZE": "12", "ANNOTATION__SEED_SIZE": "6",
                       "ANNOTATION__BATCH_SIZE": "6", "ANNOTATION__LABEL_BUDGET": "1.0", "ANNOTATION__MAX_ITERATIONS": "2",
                       "ANNOTATION__ANNOTATOR__CROP_SIZE": "32", "FILTER__WORKERS": "1",
                       # the demo's size thresholds for renders of the demo's size (production's are the paper's 640x1280)
                       "FILTER__MIN_SHORT_SIDE": "160", "FILTER__MIN_LONG_SIDE": "240", "FILTER__MIN_FACE": "20"}.items():
        monkeypatch.setenv(f"COSMICMAN_{key}", value)
    settings = load_settings()
    assert settings.profile == "production" and [s.name for s in settings.all_sources()] == ["renders"]
    source_batch(settings, "renders", "b1")
    kept = [r for r in filter_pool(settings, workers=1)[0].table.to_pylist() if r["verdict"] == "keep"]
    assert len(kept) >= 30
    results = [annotation_iteration(settings, k)[0] for k in (0, 1)]
    assert [r.status for r in results] == ["done", "done"] and results[1].images > 0
    flywheel = annotation_flywheel(settings)[0]
    assert flywheel.settings.eval_labels == "labelling" and len(flywheel.eval_ids) == 12
    assert flywheel.eval_ledger.count() == results[1].eval_labels > 0
    assert results[1].total_labels == flywheel.ledger.count() + flywheel.eval_ledger.count()
    assert results[1].accuracy_truth == results[1].accuracy_after  # the oracle answered from the same attributes
