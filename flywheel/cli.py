"""Command-line interface: the flywheel's operations outside Dagster (dvc.yaml stages use it)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from flywheel.protocol import ProtocolError, load_protocol
from flywheel.settings import SettingsError, load_settings

app = typer.Typer(help="CosmicMan flywheel: sourcing, filtering, annotation and snapshots of human images.",
                  no_args_is_help=True)
protocol_app = typer.Typer(help="The label protocol.", no_args_is_help=True)
source_app = typer.Typer(help="Ingest candidate images from a source.", no_args_is_help=True)
app.add_typer(protocol_app, name="protocol")
snapshot_app = typer.Typer(help="CosmicMan-HQ versions in the DVC data registry.", no_args_is_help=True)
app.add_typer(source_app, name="source")
app.add_typer(snapshot_app, name="snapshot")
console = Console()

ProfileOpt = typer.Option(None, "--profile", "-p", help="settings profile (configs/<profile>.yaml); default $COSMICMAN_PROFILE or demo")


def _settings(profile: Optional[str]):
    try:
        return load_settings(profile)
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@protocol_app.command("check")
def protocol_check(path: Optional[Path] = typer.Argument(None, help="protocol YAML; default the bundled one")) -> None:
    """Validate a protocol file and summarise it."""
    try:
        protocol = load_protocol(path)
    except ProtocolError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    families = Counter(c.family for c in protocol.categories.values())
    console.print(f"{protocol.source}: {len(protocol.parsing_classes)} parsing classes, {len(protocol.parts)} parts, "
                  f"{len(protocol.categories)} categories ({', '.join(f'{k}: {v}' for k, v in sorted(families.items()))})")


@protocol_app.command("show")
def protocol_show(path: Optional[Path] = typer.Argument(None)) -> None:
    """List every category with its part, family, answers and parents."""
    protocol = load_protocol(path)
    table = Table("category", "part", "family", "answers", "asked when")
    for c in protocol.categories.values():
        when = "; ".join(f"{k} in {list(v)}" for k, v in c.requires.items()) or "always"
        table.add_row(c.name, c.part, c.family, ", ".join(c.answers), when)
    console.print(table)


@source_app.command("synthetic")
def source_synthetic_cmd(
    profile: Optional[str] = ProfileOpt,
    count: Optional[int] = typer.Option(None, help="samples to render (default: the profile's synthetic.count)"),
    start: int = typer.Option(0, help="first sample index"),
    batch: str = typer.Option("batch-000000", help="refresh batch name"),
    workers: Optional[int] = typer.Option(None, help="render processes (default: up to 2)"),
) -> None:
    """Render the synthetic human source into the content store and write its raw manifest."""
    from flywheel.stages import source_batch

    settings = _settings(profile)
    total = settings.synthetic.count if count is None else count
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("rendering", total=total)
        result = source_batch(settings, settings.synthetic.name, batch, start=start, count=total, workers=workers,
                                  progress=lambda done, _: bar.update(task, completed=done))
    defects = Counter((json.loads(s) or {}).get("defect") or "clean" for s in result.table.column("sidecar_json").to_pylist())
    console.print(f"{result.table.num_rows} records -> {result.manifest} ({result.rows_per_second:.1f} images/s)")
    console.print("ground truth: " + ", ".join(f"{k} {v}" for k, v in sorted(defects.items())))


@source_app.command("batch")
def source_batch_cmd(
    source: str = typer.Argument(..., help="source name from the profile (synthetic, or one of `sources`)"),
    batch: str = typer.Argument(..., help="batch name, e.g. 20261123T030000Z (letters, digits, . _ -)"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Fetch one refresh batch of one source (what a raw_images partition does)."""
    from flywheel.stages import source_batch

    settings = _settings(profile)
    result = source_batch(settings, source, batch)
    status = Counter(result.table.column("status").to_pylist())
    console.print(f"{result.table.num_rows} records -> {result.manifest}: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))


@app.command("filter")
def filter_cmd(
    profile: Optional[str] = ProfileOpt,
    workers: Optional[int] = typer.Option(None, help="analysis processes (default: the profile's filter.workers)"),
) -> None:
    """Filter every fetched image into the filtered pool (analyses of known images are reused)."""
    from flywheel.stages import filter_pool

    settings = _settings(profile)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("analysing", total=None)
        result, run = filter_pool(settings, workers=workers, progress=lambda d, t: bar.update(task, completed=d, total=t))
    for note in run.notes:
        console.print(f"[yellow]{note}[/yellow]")
    verdicts = Counter(result.table.column("verdict").to_pylist())
    reasons = Counter(r for rs in result.table.column("reasons").to_pylist() for r in (rs or []))
    console.print(f"{result.table.num_rows} records ({run.analysed} analysed, {run.reused} reused) -> {result.manifest}")
    console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    console.print("reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))


@snapshot_app.command("publish")
def snapshot_publish(profile: Optional[str] = ProfileOpt) -> None:
    """Publish the annotated pool as the next version (blocked when a suite fails)."""
    from flywheel.manifests import ManifestError
    from flywheel.snapshot.publish import PublishBlocked
    from flywheel.snapshot.registry import RegistryError
    from flywheel.stages import GateFailed, publish_snapshot

    try:
        result = publish_snapshot(_settings(profile))
    except (GateFailed, PublishBlocked, ManifestError, RegistryError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    pub = result.publication
    state = f"published {pub.tag}" if pub.new else f"unchanged: {pub.tag} is current"
    console.print(f"{state}; data hash {pub.data_hash}; {pub.uploaded} files uploaded; "
                  f"{result.stats['images']} images ({result.stats['split_counts']}); card {result.card}")


@snapshot_app.command("list")
def snapshot_list(profile: Optional[str] = ProfileOpt) -> None:
    """Published versions with their data hashes."""
    from flywheel.stages import snapshot_registry

    registry = snapshot_registry(_settings(profile))
    table = Table("version", "tag", "data hash")
    for v in registry.versions():
        table.add_row(str(v), registry.tag(v), registry.data_hash(registry.tag(v)))
    console.print(table)


@snapshot_app.command("get")
def snapshot_get(
    version: int = typer.Argument(..., help="version number (tag <name>-v<version>)"),
    out: Optional[Path] = typer.Option(None, help="a fresh folder; default the profile's snapshot cache"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Fetch one version with `dvc get` (what training and `dvc repro` read)."""
    from flywheel.snapshot.loader import fetch_snapshot, open_snapshot
    from flywheel.snapshot.registry import RegistryError, get_version
    from flywheel.stages import snapshot_registry

    settings = _settings(profile)
    registry = snapshot_registry(settings)
    try:
        if out is None:
            snap = fetch_snapshot(str(registry.path), version, settings.snapshot.cache_dir, settings.dvc_command(), registry.dataset)
        else:
            snap = open_snapshot(get_version(str(registry.path), registry.tag(version), out, settings.dvc_command(), registry.dataset))
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{snap.tag}: {snap.stats['images']} images at {snap.folder} (data hash {snap.data_hash})")


@app.command("pretrain-base")
def pretrain_base_cmd(
    out: Optional[Path] = typer.Option(None, help="pipeline folder to write; default models/embedded-base (the embedded default)"),
    work_dir: Optional[Path] = typer.Option(None, help="corpus cache and stage checkpoints; default <workspace>/pretrain"),
    unet_steps: Optional[int] = typer.Option(None, help="UNet steps in all (more than before continues from the checkpoint)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (at most the free cores)"),
    contrastive_weight: Optional[float] = typer.Option(None, help="CLIP's loss beside the diffusion loss while the text "
                                                       "encoder trains, at this weight (0: off)"),
    lr_schedule: Optional[str] = typer.Option(None, help="UNet learning rate after the warm-up: constant or cosine "
                                              "(decays to unet.min_lr_ratio over this run's steps)"),
    from_pipeline: Optional[Path] = typer.Option(None, help="continue from this pretrain-base pipeline's weights where "
                                                 "the work folder has no checkpoint (e.g. models/embedded-base)"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Pretrain the embedded base (corpus, VAE, CLIP, UNet); resumable; one MLflow run; writes an SD 1.5 layout."""
    from training.stages import EMBEDDED_BASE_DIR, pretrain_embedded_base

    settings = _settings(profile)
    s = settings.training.pretrain
    if unet_steps is not None:
        s.unet.steps = unet_steps
    if threads is not None:
        s.threads = threads
    if contrastive_weight is not None:
        s.unet.contrastive_weight = contrastive_weight
    if lr_schedule is not None:
        s.unet = type(s.unet).model_validate({**s.unet.model_dump(), "lr_schedule": lr_schedule})  # validated
    result = pretrain_embedded_base(settings, out or EMBEDDED_BASE_DIR, work_dir, from_pipeline=from_pipeline)
    console.print(f"{result.output_dir}: MLflow run {result.run_id}; "
                  + ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.total_seconds.items()))


@app.command("train")
def train_cmd(
    name: str = typer.Option("daring", help="variant name: MLflow run name and output folder"),
    beta: Optional[float] = typer.Option(None, help="HOLA weight (0 = plain fine-tune); default the profile's"),
    act_fn: Optional[str] = typer.Option(None, help="UNet activation (silu, gelu, mish, ...); default the base model's"),
    snapshot_version: Optional[int] = typer.Option(None, help="CosmicMan-HQ version; default the profile's, else the latest"),
    metrics_out: Optional[Path] = typer.Option(None, help="also write the run's metrics here (JSON, for dvc metrics)"),
    plots_out: Optional[Path] = typer.Option(None, help="also write the loss history here (CSV, for dvc plots)"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Train on a CosmicMan-HQ version; logs and registers in MLflow (under `accelerate launch`, from the main process)."""
    from training.distributed import process_state
    from training.stages import train_variant, training_snapshot

    settings = _settings(profile)
    processes = process_state()
    with processes.main_process_first():  # one process fetches the version into the shared cache, then the others read it
        training_snapshot(settings, snapshot_version)
    run = train_variant(settings, name, beta=beta, act_fn=act_fn, snapshot_version=snapshot_version)
    if run is None:  # another process of a multi-process launch: the main process tracked, registered and reports
        return
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps({"model_version": int(run.model_version), **run.metrics}, indent=1, sort_keys=True))
    if plots_out:
        plots_out.parent.mkdir(parents=True, exist_ok=True)
        plots_out.write_text("step,loss_noise,loss_hola\n" + "".join(f"{k},{v.noise},{v.hola}\n" for k, v in run.history))
    console.print(f"{name}: MLflow run {run.run_id}; {run.model_name} version {run.model_version}; "
                  + ", ".join(f"{k} {v:.4g}" for k, v in run.metrics.items()))


@app.command("train-dual-prior")
def train_dual_prior_cmd(
    snapshot_version: Optional[int] = typer.Option(None, help="CosmicMan-HQ version; default the profile's, else the latest"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Dual-level prior training (binding, then adversarial rectification) under one parent MLflow run."""
    from training.distributed import process_state
    from training.stages import train_dual_prior, training_snapshot

    settings = _settings(profile)
    with process_state().main_process_first():  # as train: one process fills the shared snapshot cache
        training_snapshot(settings, snapshot_version)
    run = train_dual_prior(settings, snapshot_version=snapshot_version)
    if run is None:  # another process of a multi-process launch
        return
    console.print(f"dual prior: MLflow run {run.run_id} (stages {run.stage_run_ids}); {run.model_name} version "
                  f"{run.model_version}; " + ", ".join(f"{k} {v:.4g}" for k, v in run.metrics.items()))


@app.command("train-kosmos-g")
def train_kosmos_g_cmd(
    snapshot_version: Optional[int] = typer.Option(None, help="CosmicMan-HQ version; default the profile's, else the latest"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """KOSMOS-G: the source model's pretraining, AlignerNet, then instruction tuning on the version's garments
    (kosmos_pairs, built if missing), one nested MLflow run and one registered version per stage."""
    from training.stages import train_kosmos_g

    run = train_kosmos_g(_settings(profile), snapshot_version=snapshot_version)
    console.print(f"KOSMOS-G: MLflow run {run.run_id} (stages {run.stage_run_ids}); {run.model_name} versions "
                  f"{run.versions}; " + ", ".join(f"{k} {v:.4g}" for k, v in run.metrics.items()))


@app.command("sweep-activations")
def sweep_cmd(profile: Optional[str] = ProfileOpt) -> None:
    """CosmicMan Prime: one Daring run per configured activation, nested under one MLflow run."""
    from training.stages import activation_sweep

    settings = _settings(profile)
    for act, run in zip(settings.training.activations, activation_sweep(settings)):
        console.print(f"{act}: version {run.model_version}, attention IoU {run.metrics.get('attention_iou', float('nan')):.3f}, "
                      f"final L_noise {run.metrics.get('final_loss_noise', float('nan')):.4f}")


@app.command("evaluate")
def evaluate_cmd(
    snapshot_version: Optional[int] = typer.Option(None, help="CosmicMan-HQ version; default the profile's, else the latest"),
    metrics_out: Optional[Path] = typer.Option(None, help="also write every model's metrics here (JSON, for dvc metrics)"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Evaluate the base model and each variant's newest version; write the report, move champion aliases."""
    from evaluation.stages import evaluate

    result = evaluate(_settings(profile), snapshot_version=snapshot_version)
    table = Table("model", "version", "Acc_all [95% CI]", "attention IoU", "PIQE", "skipped (see report)")
    for m in result.data["models"]:
        x = m["metrics"]
        acc = f"{x['acc_all']:.3f} [{x['acc_all_ci_low']:.3f}, {x['acc_all_ci_high']:.3f}]" if "acc_all" in x else "not computed"
        table.add_row(m["label"], m["version"] or "-", acc, f"{x['attention_iou']:.3f}" if "attention_iou" in x else "not computed",
                      f"{x['piqe']:.1f}" if "piqe" in x else "not computed", str(len(m["skipped"])))
    console.print(table)
    for c in result.data["champions"]:
        console.print(f"{c['registered_model']}: {c['reason']}")
    if metrics_out:
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps({m["label"]: m["metrics"] for m in result.data["models"]}, indent=1, sort_keys=True))
    console.print(f"report: {result.report_html} (MLflow run {result.run_id})")


TRUTH_JUDGE_DIR = Path(__file__).resolve().parents[1] / "models" / "truth-judge"


@app.command("train-judge")
def train_judge_cmd(
    out: Path = typer.Option(TRUTH_JUDGE_DIR, help="folder to write (weights, config, checksums, model card)"),
    renders: int | None = typer.Option(None, help="training renders (default: TruthJudgeSettings')"),
    epochs: float | None = typer.Option(None, help="passes over the renders"),
    seed: int | None = typer.Option(None, help="renderer seed of the training scenes"),
    held_out: int = typer.Option(2000, help="fresh renders scored for the model card (0: none)"),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's)"),
) -> None:
    """Train the truth judge on the renderer's ground truth only (never flywheel labels); write it with a model card."""
    import torch

    from evaluation import truth_judge

    if threads:
        torch.set_num_threads(threads)
    given = {"renders": renders, "epochs": epochs, "seed": seed}
    settings = truth_judge.TruthJudgeSettings(**{k: v for k, v in given.items() if v is not None})
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task(f"rendering {settings.renders} scenes", total=None)

        def progress(phase: str, done: int, total: int, loss: float) -> None:
            bar.update(task, description=phase if phase != "training" else f"training (loss {loss:.3f})",
                       completed=done, total=total)

        judge, report = truth_judge.write_truth_judge(load_protocol(), settings, out, held_out, progress)
    means = ", ".join(f"{k} {truth_judge.mean_accuracy(report[k]):.3f}" for k in ("clean", "degraded") if report)
    console.print(f"{judge.identity}: {out} ({judge.training['train_seconds']} s training); "
                  f"held-out mean accuracy {means or 'not measured'}")


@app.command("serve-images")
def serve_images_cmd(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8081, help="port; the profile's image_server_url must point here"),
    profile: Optional[str] = ProfileOpt,
) -> None:
    """Serve the content store read-only (GET /images/<sha256>) for Label Studio's pages; Ctrl-C stops it."""
    from flywheel.stages import serve_images

    settings = _settings(profile)
    console.print(f"serving {settings.store_url or settings.workspace / 'store'} at http://{host}:{port}/images/<sha256>")
    serve_images(settings, host, port)


@app.command("settings")
def show_settings(profile: Optional[str] = ProfileOpt) -> None:
    """Print the resolved settings of a profile (after environment overrides)."""
    console.print_json(_settings(profile).model_dump_json())


if __name__ == "__main__":
    app()
