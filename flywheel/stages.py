"""Pipeline stages as plain functions: the one implementation that Dagster assets, the
command-line interface and dvc.yaml stages all call."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from flywheel.filters.chain import FilterRun, run_filter
from flywheel.manifests import (
    FILTERED_POOL,
    RAW_RECORDS,
    ManifestError,
    read_manifest,
    write_manifest,
)
from flywheel.protocol import load_protocol
from flywheel.settings import Settings
from flywheel.sources.folder import FolderSourceSettings, ingest_folder
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.sources.url_parquet import UrlParquetSourceSettings, ingest_url_parquet
from flywheel.sources.web_api import Cursor, WebApiSourceSettings, ingest_web_api
from flywheel.store import ContentStore

Progress = Callable[[int, int], None]
_BATCH_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class StageResult:
    table: pa.Table
    manifest: Path
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.table.num_rows / self.seconds if self.seconds > 0 else float("nan")


# ---- sourcing ------------------------------------------------------------------------------


def raw_manifest_path(settings: Settings, source: str, batch: str) -> Path:
    if not _BATCH_RE.match(batch) or not _BATCH_RE.match(source):
        raise ValueError(f"source {source!r} / batch {batch!r}: only letters, digits, '.', '_' and '-' are allowed")
    return settings.manifests_dir / "raw" / source / f"{batch}.parquet"


def raw_batches(settings: Settings, source: str) -> list[Path]:
    """A source's batch manifests, oldest first (batch names sort by time)."""
    folder = settings.manifests_dir / "raw" / source
    return sorted(folder.glob("*.parquet")) if folder.exists() else []


def previous_records(settings: Settings, source: str, exclude_batch: str | None = None) -> list[dict]:
    rows: list[dict] = []
    for path in raw_batches(settings, source):
        if path.stem != exclude_batch:
            rows.extend(read_manifest(path, RAW_RECORDS).to_pylist())
    return rows


def source_batch(settings: Settings, source: str, batch: str, workers: int | None = None,
                 progress: Progress | None = None, start: int | None = None, count: int | None = None) -> StageResult:
    """Fetch one refresh batch of one source into the store and write its raw manifest.

    Re-running the same batch redoes it (the store skips bytes it already has); other
    batches' items are skipped, so each refresh brings only new candidates. ``start`` and
    ``count`` choose an explicit index range of the synthetic source."""
    import time

    cfg = settings.source(source)
    store = ContentStore(settings.store_url)
    path = raw_manifest_path(settings, source, batch)
    previous = previous_records(settings, source, exclude_batch=batch)
    t0 = time.perf_counter()
    cursor_state = None
    if cfg.type == "synthetic":
        if start is None:  # batches render consecutive index ranges
            start = len({r["item"] for r in previous})
        count = cfg.count if count is None else count
        if cfg.total is not None:  # a finite source: nothing past its end
            count = max(0, min(count, cfg.total - start))
        table = ingest_synthetic(cfg, load_protocol(settings.protocol_path), store, source=cfg.name, batch=batch,
                                 start=start, count=count,
                                 workers=workers or min(2, os.cpu_count() or 1), progress=progress).table
    elif isinstance(cfg, FolderSourceSettings):
        table = RAW_RECORDS.table(ingest_folder(cfg, store, batch, previous, progress))
    elif isinstance(cfg, UrlParquetSourceSettings):
        table = RAW_RECORDS.table(ingest_url_parquet(cfg, store, batch, previous, progress))
    elif isinstance(cfg, WebApiSourceSettings):
        cursor = Cursor(settings.state_dir / f"{cfg.name}.cursor.json")
        rows, cursor_state = ingest_web_api(cfg, store, batch, cursor, progress)
        table = RAW_RECORDS.table(rows)
    else:  # pragma: no cover - settings validation rules this out
        raise ValueError(f"unknown source type {cfg.type!r}")
    write_manifest(table, path, RAW_RECORDS)
    if cursor_state is not None:  # only after the batch is safely recorded
        cursor.save(cursor_state)
    return StageResult(table, path, time.perf_counter() - t0)


def all_raw_records(settings: Settings) -> pa.Table:
    """Every raw record of every source, in source then batch order (the pool order)."""
    tables = [read_manifest(p, RAW_RECORDS) for s in settings.all_sources() for p in raw_batches(settings, s.name)]
    return pa.concat_tables(tables) if tables else RAW_RECORDS.table([])


# ---- filtering ------------------------------------------------------------------------------


def filtered_pool_path(settings: Settings) -> Path:
    return settings.manifests_dir / "filtered_pool.parquet"


def read_filtered_pool(settings: Settings) -> pa.Table | None:
    try:
        return read_manifest(filtered_pool_path(settings), FILTERED_POOL)
    except ManifestError:
        return None


def filter_pool(settings: Settings, workers: int | None = None, progress: Progress | None = None) -> tuple[StageResult, FilterRun]:
    """Filter every fetched raw record; analyses of images seen before are reused."""
    raw = all_raw_records(settings)
    run = run_filter(raw, ContentStore(settings.store_url), settings.filter, previous=read_filtered_pool(settings),
                     workers=workers, progress=progress, engine=settings.engine)
    path = write_manifest(run.table, filtered_pool_path(settings), FILTERED_POOL)
    return StageResult(run.table, Path(str(path)), run.seconds, run.notes), run


# ---- annotation ------------------------------------------------------------------------------


def annotation_folder(settings: Settings) -> Path:
    return settings.workspace / "annotation"


def annotations_path(settings: Settings) -> Path:
    return settings.manifests_dir / "annotations.parquet"


def label_studio_labeller(settings: Settings, image_url=None):
    """The Label Studio backend of this workspace (``image_url`` None: only reading answers back)."""
    from flywheel.annotation.label_studio import LabelStudioLabeller

    return LabelStudioLabeller(settings.label_studio_url, os.environ.get(settings.label_studio_token_env, ""),
                               load_protocol(settings.protocol_path), image_url,
                               annotation_folder(settings) / "label_studio_projects.json")


def labelling_pending(settings: Settings, iteration: str) -> int | None:
    """Requests of I_e's and an iteration's labelling phases people have not answered yet (None: nothing
    submitted, or the backend answers at once)."""
    if settings.labelling_backend != "label_studio":
        return None
    labeller = label_studio_labeller(settings)
    counts = [labeller.pending(b) for b in labeller.batches("eval") + labeller.batches(iteration)]  # I_e's first
    return sum(c for c in counts if c) if counts else None


def serve_images(settings: Settings, host: str, port: int) -> None:
    """Serve the content store read-only for labelling tools, until interrupted."""
    from flywheel.annotation.image_server import ImageServer

    store = ContentStore(settings.store_url)

    def lookup(key: str) -> bytes | None:
        try:
            return store.get(key)
        except KeyError:
            return None

    ImageServer(lookup, host, port).serve_forever()


def annotation_flywheel(settings: Settings):
    """The flywheel over the current filtered pool (kept images), with its parsing provenance."""
    from flywheel.annotation.iterations import AnnotationFlywheel
    from flywheel.annotation.labelling import OracleLabeller
    from flywheel.annotation.pool import build_pool

    pool_table = read_filtered_pool(settings)
    if pool_table is None:
        raise ManifestError(f"{filtered_pool_path(settings)}: no filtered pool yet (run the filter first)")
    kept = [r for r in pool_table.to_pylist() if r["verdict"] == "keep"]
    raw_by_id = {r["record_id"]: r for r in all_raw_records(settings).to_pylist()}
    protocol = load_protocol(settings.protocol_path)
    folder = annotation_folder(settings)
    pool, images, notes = build_pool(kept, raw_by_id, ContentStore(settings.store_url), protocol, folder,
                                     crop_size=settings.annotation.annotator.crop_size,
                                     segformer_dir=str(settings.segformer_dir) if settings.segformer_dir else None,
                                     engine=settings.engine, workers=settings.filter.workers)
    if settings.labelling_backend == "label_studio":
        from flywheel.annotation.image_server import image_url

        sha = {img.record_id: img.sha256 for img in images}
        labeller = label_studio_labeller(settings, lambda rid: image_url(settings.image_server_url, sha[rid]))
    else:
        labeller = OracleLabeller(pool.truth)
    return AnnotationFlywheel(folder, protocol, settings.annotation, pool, labeller), images, notes


def annotation_iteration(settings: Settings, k: int, run_tags: dict[str, str] | None = None):
    """Run (or resume) iteration k and log it to MLflow; returns (result, all results so far, mlflow run id)."""
    from flywheel.annotation.report import accuracy_plot
    from flywheel.tracking import flatten, mlflow_run

    flywheel, _, _ = annotation_flywheel(settings)
    result = flywheel.run_iteration(k)
    history = flywheel.completed()
    if result.status != "done":
        return result, history, None
    import mlflow

    with mlflow_run(settings.tracking, f"{settings.tracking.experiment_prefix}-annotation", f"iter-{k:04d}",
                    tags={"cosmicman.stage": "annotation_iteration", "cosmicman.profile": settings.profile, **(run_tags or {})}) as run:
        mlflow.log_params(flatten({"iteration": k, "labeller": settings.labelling_backend, "images": result.images,
                                   "categories_labelled": len(result.categories),
                                   **flatten(settings.annotation.model_dump(mode="json"), "annotation.")}))
        metrics = {"labels": result.labels, "total_labels": result.total_labels,
                   "label_share": result.total_labels / max(1, flywheel.full_cost),
                   "categories_below_target": sum(v < settings.annotation.target_accuracy for v in result.accuracy_after.values())}
        if result.accuracy_after:  # nothing measured (too few I_e images): no mean, rather than a 0 that reads as one
            metrics["mean_accuracy_after"] = result.mean_accuracy
        pretrained = getattr(flywheel.annotator(k), "pretrain_summary", None)  # learned: its label-free pretraining
        if pretrained:
            metrics.update({f"pretrain.{key}": float(v) for key, v in pretrained.items() if isinstance(v, (int, float))})
        metrics.update({f"acc_before.{c}": v for c, v in result.accuracy_before.items()})
        metrics.update({f"acc_after.{c}": v for c, v in result.accuracy_after.items()})
        mlflow.log_metrics(metrics, step=k)
        mlflow.log_dict(result.to_json(), "iteration.json")
        mlflow.log_image(_png_to_array(accuracy_plot(history, settings.annotation.target_accuracy)), "accuracy_vs_iteration.png")
        return result, history, run.info.run_id


def _png_to_array(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.array(Image.open(io.BytesIO(png)).convert("RGB"))


def annotate_pool(settings: Settings) -> StageResult:
    """Label the whole pool with the final annotator (people's labels win), parse, caption, and
    write the annotations manifest. Refuses while the iterations have not stopped."""
    import time

    import numpy as np

    from flywheel.annotation.captions import caption_groups, join_caption
    from flywheel.manifests import ANNOTATIONS

    t0 = time.perf_counter()
    flywheel, images, notes = annotation_flywheel(settings)
    done = flywheel.completed()
    if not done or not done[-1].stop_reason:
        raise RuntimeError(f"annotation iterations have not stopped yet ({len(done)} done): run the next iteration first")
    protocol = flywheel.protocol
    best = flywheel.best_iteration()  # the best annotator on I_e labels the pool, not the latest
    from flywheel.annotation.parsing import decode_parsing

    store = ContentStore(settings.store_url)
    rows = []
    for img, labelled in zip(images, flywheel.label_pool(flywheel.annotator(best), settings.engine, settings.filter.workers)):
        present = {int(c) for c in np.unique(decode_parsing(store.get(img.parsing_sha256)))}
        groups = caption_groups(protocol, labelled["answers"], seed=int(img.sha256[:8], 16), budget=settings.caption_budget,
                                present_classes=present)
        rows.append({
            "record_id": img.record_id, "sha256": img.sha256, "parsing_sha256": img.parsing_sha256,
            "parsing_source": img.parsing_source,
            "answers": {k: v for k, v in labelled["answers"].items() if v is not None},
            "confidences": labelled["confidences"], "answer_origin": labelled["answer_origin"],
            "caption_groups": [g.as_row() for g in groups], "caption": join_caption(groups),
            "annotator_version": f"{flywheel.settings.annotator.backend}@iter-{best:04d}",
            "iteration": best,
        })
    table = ANNOTATIONS.table(rows)
    path = write_manifest(table, annotations_path(settings), ANNOTATIONS)
    return StageResult(table, Path(str(path)), time.perf_counter() - t0, notes)


def read_annotations(settings: Settings) -> pa.Table | None:
    from flywheel.manifests import ANNOTATIONS

    try:
        return read_manifest(annotations_path(settings), ANNOTATIONS)
    except ManifestError:
        return None


# ---- snapshot ------------------------------------------------------------------------------


def snapshot_registry(settings: Settings):
    from flywheel.snapshot.registry import DataRegistry

    snap = settings.snapshot
    return DataRegistry(snap.registry_path, snap.remote_url, settings.dvc_command(), snap.name, snap.remote_endpoint_url)


def snapshot_rows(settings: Settings, annotations: pa.Table, filtered_pool: pa.Table) -> list[dict]:
    """One row per annotated image, joined with its filter scores and its raw record."""
    pool = {r["record_id"]: r for r in filtered_pool.to_pylist()}
    raw = {r["record_id"]: r for r in all_raw_records(settings).to_pylist()}
    rows = []
    for a in annotations.to_pylist():
        f, r = pool[a["record_id"]], raw[a["record_id"]]
        answers = dict(a["answers"] or {})
        rows.append({
            "record_id": a["record_id"], "sha256": a["sha256"], "parsing_sha256": a["parsing_sha256"],
            "media_type": r["media_type"], "height": f["height"], "width": f["width"],
            "person_type": answers.get("person_type"), "caption_groups": a["caption_groups"], "caption": a["caption"],
            "answers": answers, "keypoints": r["sidecar_keypoints"], "person_box": f["person_box"], "face_box": f["face_box"],
            "quality": f["quality"], "face_quality": f["face_quality"], "source": r["source"], "licence": r["licence"],
            "attribution": r["attribution"], "parsing_source": a["parsing_source"],
        })
    return rows


class GateFailed(RuntimeError):
    """An upstream suite failed, so the snapshot may not be published."""


def publish_snapshot(settings: Settings):
    """Publish the annotated pool as the next CosmicMan-HQ version, after its upstream suites
    pass (the snapshot suite runs inside publishing)."""
    import subprocess

    from flywheel.snapshot.publish import publish_snapshot as publish
    from flywheel.validation.annotations import validate_annotations
    from flywheel.validation.filtered_pool import validate_filtered_pool

    protocol = load_protocol(settings.protocol_path)
    docs = settings.data_docs_dir
    pool, annotations = read_filtered_pool(settings), read_annotations(settings)
    if pool is None or annotations is None:
        missing = filtered_pool_path(settings) if pool is None else annotations_path(settings)
        raise ManifestError(f"{missing}: not written yet; filter and annotate the pool before publishing")
    for summary in (validate_filtered_pool(pool, settings.filter, docs),
                    validate_annotations(annotations, protocol, settings.caption_budget, docs)):
        if not summary.success:
            raise GateFailed(f"{summary.suite} suite failed; not publishing:\n{summary.as_markdown()}")
    rows = snapshot_rows(settings, annotations, pool)
    versions = {r["annotator_version"] for r in annotations.select(["annotator_version"]).to_pylist()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    provenance = {"profile": settings.profile, "annotator": ",".join(sorted(v for v in versions if v)),
                  "project_commit": commit.stdout.strip() or "unknown"}
    store = ContentStore(settings.store_url)
    return publish(rows, store.get, snapshot_registry(settings), protocol, settings.snapshot, provenance, docs)
