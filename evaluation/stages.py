"""The evaluation stage on the project's settings: what the Dagster asset and the CLI call.

Evaluates the base model and the newest version of every trained variant on the pinned (or
latest) snapshot, caches each model's result by what it depends on (so a refresh evaluates
only new versions), logs every metric to the evaluated version's own MLflow run (``eval.*``,
so MLflow's compare view lines versions up), moves the ``champion`` aliases, and writes the
comparison report plus one report per version (logged to that version's run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.faults import kill_point
from flywheel.protocol import load_protocol
from flywheel.settings import Settings
from flywheel.stages import annotation_folder

log = logging.getLogger(__name__)
JUDGE_THRESHOLD = 0.85


@dataclass
class EvaluationResult:
    report_html: Path
    report_json: Path
    run_id: str
    experiment_id: str
    data: dict
    version_reports: dict[str, Path]


def latest_annotator_dir(settings: Settings) -> Path | None:
    done = sorted((annotation_folder(settings) / "iterations").glob("iter-*/annotator/annotator.json"))
    return done[-1].parent if done else None


def judge_parser(settings: Settings, snapshot, held_out: list, protocol, root: Path) -> tuple[object, str]:
    """(parser for generated images, a note saying which and how good)."""
    from evaluation.judge import PARSER_NOTE, GeneratedImageParser
    from evaluation.parser import LearnedParser, pooled_miou
    from training.data import flip_table

    s = settings.evaluation
    if s.parser == "geometric":
        return GeneratedImageParser(), PARSER_NOTE
    tag = snapshot.tag or f"v{snapshot.version}"
    folder = root / "parser" / f"{tag}-{_digest([s.parser_size, s.parser_steps, snapshot.data_hash])}"
    if not (folder / "metrics.json").exists():
        parser = LearnedParser(s.parser_size)
        log.info("training the judge's parser on %s's train maps (%d steps)", tag, s.parser_steps)
        loss = parser.fit([(x.image, x.parsing) for x in snapshot.samples("train")], flip_table(protocol), s.parser_steps)
        miou = pooled_miou(parser, [(x.image, x.parsing) for x in held_out])
        parser.save(folder)
        (folder / "metrics.json").write_text(json.dumps({"loss": loss, "test_miou": miou, "test_images": len(held_out)}))
    metrics = json.loads((folder / "metrics.json").read_text())
    return LearnedParser.load(folder), (f"generated images are parsed by a parser learned on {tag}'s train maps "
                                        f"({s.parser_steps} steps; mIoU {metrics['test_miou']:.3f} on "
                                        f"{metrics['test_images']} test images); parser {folder.name}")


def load_judge(settings: Settings, protocol, folder: Path, parser=None, parser_note: str = ""):
    """(judge or None, note): the annotator in ``folder`` with the generated-image parser."""
    from evaluation.judge import Judge
    from flywheel.annotation.annotator import load_annotator

    if not (Path(folder) / "annotator.json").exists():
        return None, f"no trained annotator at {folder} (run the annotation flywheel first)"
    annotator = load_annotator(folder, protocol)
    judge = Judge(annotator, protocol, settings.annotation.annotator.crop_size, parser, parser_note)
    judge.identity = f"{annotator.name} annotator {folder} (version {annotator.version})"
    return judge, judge.parser_note


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_truth_judge(settings: Settings, protocol):
    """(truth judge or None, note)."""
    from evaluation.truth_judge import TruthJudge

    folder = settings.evaluation.truth_judge_dir
    if folder is None:
        return None, "evaluation.truth_judge_dir is not set"
    if not (Path(folder) / "config.json").exists():
        return None, f"no truth judge at {folder} (`cosmicman train-judge` writes one)"
    judge = TruthJudge.load(folder, protocol)
    return judge, judge.note


def judge_calibration(judge, s, root: Path, judge_identity, calibrate=None) -> dict:
    """A judge's accuracy on fresh synthetic renders (cached per judge, parser and settings)."""
    from evaluation.calibration import calibrate as calibrate_annotator

    if not s.judge_calibration_images:
        return {}
    calibrate = calibrate or calibrate_annotator
    path = root / "judge" / f"{_digest([judge_identity, s.judge_calibration_images, s.judge_calibration_seed])}.json"
    if not path.exists():
        cal = calibrate(judge, s.judge_calibration_images, s.judge_calibration_seed, s.bootstrap)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, json.dumps({k: {**v.metrics(), "questions": v.questions, "images": v.prompts} for k, v in cal.items()}))
    return json.loads(path.read_text())


def evaluate_cached(model, ctx, results: Path, identity: dict, base_dir: Path):
    """One model's evaluation, from the cache when its inputs are unchanged. A model that fails
    is reported with the reason (and not cached) while the others are evaluated."""
    from evaluation.run import ModelEvaluation, evaluate_model

    key = model.key if model.version else f"base-{_digest(str(base_dir))}"
    folder = results / f"{key}-{_digest(identity)}"
    if (folder / "result.json").exists():
        return ModelEvaluation.load(folder)
    log.info("evaluating %s", model.key)
    try:
        result = evaluate_model(model, ctx)
    except Exception as exc:  # one broken version must not hide the others' results
        log.exception("evaluating %s failed", model.key)
        return ModelEvaluation(model.label, model.key, model.registered_model, model.version, model.run_id,
                               skipped={"evaluation": f"failed: {type(exc).__name__}: {exc}"})
    result.save(folder)
    kill_point("evaluation.result_saved")
    return result


def evaluate(settings: Settings, tags: dict[str, str] | None = None, snapshot_version: int | None = None) -> EvaluationResult:
    import mlflow

    from evaluation.champion import ALIAS, decide_champion, variant_alias
    from evaluation.models import base_model, trained_versions
    from evaluation.prompts import prompt_set
    from evaluation.report import render_html, report_json
    from evaluation.run import EvalContext
    from flywheel.mlflow_dataset import snapshot_dataset
    from flywheel.tracking import flatten, mlflow_run
    from training.stages import base_model_dir, training_snapshot

    s = settings.evaluation
    protocol = load_protocol(settings.protocol_path)
    if settings.training.threads:
        import torch

        torch.set_num_threads(settings.training.threads)
    snapshot = training_snapshot(settings, snapshot_version)
    tag = snapshot.tag or f"v{snapshot.version}"
    prompts = prompt_set(snapshot.rows("test"), protocol, s.prompts)
    held_out = list(snapshot.samples("test", limit=max(s.prompts, s.attention_samples)))
    root = settings.workspace / "evaluation"
    judge_dir = s.judge_dir or latest_annotator_dir(settings)
    judge, judge_note = None, f"no trained annotator in {annotation_folder(settings) / 'iterations'} (run the annotation flywheel first)"
    if judge_dir is not None:
        judge, judge_note = load_judge(settings, protocol, judge_dir, *judge_parser(settings, snapshot, held_out, protocol, root))
    truth_judge, truth_note = load_truth_judge(settings, protocol)
    ctx = EvalContext(s, protocol, judge, prompts, held_out, settings.training.train.attention_levels,
                      settings.training.train.attention_layers, truth_judge, engine=settings.engine,
                      workers=settings.filter.workers)
    if judge is None:
        ctx.skipped["annotator_semantic_accuracy"] = judge_note
    if truth_judge is None:
        ctx.skipped["semantic_accuracy"] = truth_note
    mlflow.set_tracking_uri(settings.tracking.tracking_uri)
    client = mlflow.MlflowClient()
    registered = sorted({settings.training.registered_model, settings.training.dual_prior.registered_model})
    models = [base_model(base_model_dir(settings))] + trained_versions(client, registered, snapshot.tag, root / "models")

    identity = ctx.identity()
    from evaluation.calibration import calibrate_truth_judge

    judge_info = {"identity": getattr(truth_judge, "identity", ""), "note": truth_note, "threshold": JUDGE_THRESHOLD,
                  "calibration": judge_calibration(truth_judge, s, root, identity["truth_judge"], calibrate_truth_judge)
                  if truth_judge is not None else {}}
    annotator_info = {"identity": getattr(judge, "identity", ""), "note": judge_note, "threshold": JUDGE_THRESHOLD,
                      "calibration": judge_calibration(judge, s, root, identity["judge"]) if judge is not None else {}}
    evaluations = [evaluate_cached(model, ctx, root / "results", identity, base_model_dir(settings)) for model in models]

    champions = []
    for name in registered:  # the best version overall, then the best of each variant
        mine = [e for e in evaluations if e.registered_model == name and e.version]
        groups = [(ALIAS, mine)] + [(variant_alias(v), [e for e in mine if e.label == v]) for v in sorted({e.label for e in mine})]
        for alias, group in groups:
            if group:
                champions.append(asdict(decide_champion(client, name, {e.version: e.metrics for e in group},
                                                        s.champion_metric, s.champion_greater_is_better, alias=alias)))
    data = report_json({"version": snapshot.version, "tag": snapshot.tag, "data_hash": snapshot.data_hash}, evaluations,
                       judge_info, annotator_info, champions, ctx.skipped, [{"key": p.key, "caption": p.caption, "questions": p.questions}
                                                            for p in prompts], s.model_dump(mode="json"))
    out = root / tag
    out.mkdir(parents=True, exist_ok=True)
    from evaluation.kosmos import kosmos_g_summary

    data["kosmos_g"] = kosmos_g_summary(client, settings.training.kosmos.registered_model, snapshot.tag, out / "kosmos-g")
    report_json_path, report_html_path = out / "report.json", out / "report.html"
    _write(report_json_path, json.dumps(data, indent=1, default=str))
    _write(report_html_path, render_html(data, evaluations, None, s.grid_prompts))
    version_reports = {}
    model_ids = {m.key: m.model_id for m in models}
    dataset = snapshot_dataset(snapshot)
    for e in evaluations:
        if e.run_id:  # on the version's own run, linked to its logged model and to the snapshot evaluated on
            now = int(time.time() * 1000)
            client.log_batch(e.run_id, metrics=[mlflow.entities.Metric(
                f"eval.{k}", v, now, 0, model_id=model_ids.get(e.key), dataset_name=dataset.name,
                dataset_digest=dataset.digest) for k, v in e.metrics.items()])
            path = out / f"report-{e.key}.html"
            _write(path, render_html(data, evaluations, e.key, s.grid_prompts))
            client.log_artifact(e.run_id, str(path), "evaluation")
            version_reports[e.key] = path
    run_tags = {"cosmicman.stage": "evaluation", **snapshot.tracking_tags(), **(tags or {})}
    with mlflow_run(settings.tracking, f"{settings.tracking.experiment_prefix}-evaluation", f"evaluation-{tag}",
                    tags=settings.tracking.dagster_run_tags(run_tags)) as run:
        mlflow.log_input(dataset, context="evaluation")
        mlflow.log_params(flatten(s.model_dump(mode="json"), "evaluation."))
        base = next(e for e in evaluations if e.label == "base")
        mlflow.log_metrics({f"base.{k}": v for k, v in base.metrics.items()})
        mlflow.log_metrics({f"{e.label}.{k}": v for e in evaluations if e.version for k, v in e.metrics.items()})
        for prefix, info in (("judge", judge_info), ("annotator_judge", annotator_info)):
            mlflow.log_metrics({f"{prefix}.{m}.{k}": v for m, d in info["calibration"].items() for k, v in d.items()})
        mlflow.log_artifact(str(report_html_path), "evaluation")
        mlflow.log_artifact(str(report_json_path), "evaluation")
        mlflow.set_tags({f"{c['registered_model']}/{c['alias']}": c["reason"] for c in champions})
    return EvaluationResult(report_html_path, report_json_path, run.info.run_id, run.info.experiment_id, data, version_reports)
