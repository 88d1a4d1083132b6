"""The filter chain: analyse every image once (in parallel), then decide in pool order.

Analysis (decode, perceptual hash, people, face, quality, fake-person score) depends only
on an image's bytes and the analysis settings, so it is cached by content hash and
reused across refreshes. Decisions that depend on the rest of the pool (exact and near
duplicates) are re-derived each run from the cached analyses, in a stable order, which
is cheap. Every record gets every score it could get and every reason it fails; nothing
is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from flywheel.backends import BackendUnavailable
from flywheel.faults import kill_point
from flywheel.filters.decode import decode_image
from flywheel.filters.duplicates import NearDuplicateIndex, phash
from flywheel.filters.settings import FilterSettings  # noqa: F401  (re-exported: the chain's settings)
from flywheel.manifests import FILTERED_POOL, to_json
from flywheel.parallel import process_pool, reuse_freed_memory
from flywheel.ray_data import EngineSettings, json_batch, map_keys
from flywheel.store import ContentStore

log = logging.getLogger(__name__)


# ---- per-process analysis -----------------------------------------------------------------

_WORKER: dict = {}


class Analyser:
    """The model-backed steps, built once per process."""

    def __init__(self, settings: FilterSettings):
        from flywheel.filters.people import PeopleDetector
        from flywheel.filters.quality import QualityScorer

        self.settings = settings
        self.people = PeopleDetector(settings)
        try:
            self.quality = QualityScorer(settings.quality_metric, settings.quality_weights)
        except BackendUnavailable:
            self.quality = None  # reported once by backend_notes
        self.fake = None
        if settings.fake_classifier_dir is not None:
            from flywheel.filters.fake import FakePersonClassifier

            try:
                self.fake = FakePersonClassifier(settings.fake_classifier_dir)
            except BackendUnavailable:
                self.fake = None

    def analyse(self, data: bytes) -> dict:
        s = self.settings
        t0 = time.perf_counter()
        laps = Laps()
        d = decode_image(data, max_pixels=s.max_pixels, max_side=s.working_side, max_decode_mb=s.max_decode_mb)
        laps("decode")
        out: dict = {"decode_error": d.reason, "decode_detail": d.detail, "width": d.width, "height": d.height,
                     "format": d.format, "mode": d.mode, "frames": d.frames}
        if d.ok and (skip := cheap_rejection(d.width, d.height, d.image.shape[:2], s)):
            out["skipped"] = skip  # rejected from its geometry: no detector, metric or hash is worth running
        elif d.ok:
            img = d.image
            out["phash"] = phash(img)
            laps("hash")
            p = self.people.detect(img, d.scale)
            laps.seconds.update(p.seconds)
            laps.restart()
            out.update(n_persons=p.n_persons, person_box=_box(p.person_box), face_box=_box(p.face_box),
                       face_size=p.face_size, face_estimated=p.face_estimated,
                       bodies=len(p.bodies), faces=len(p.faces))
            if self.quality is not None and min(img.shape[:2]) >= 32:  # PIQE works on 16x16 blocks
                out["quality"] = self.quality.score(img)
                out["quality_lower_better"] = self.quality.lower_better
                if p.face_box is not None:
                    x0, y0, x1, y1 = (int(round(v * d.scale)) for v in p.face_box)
                    crop = img[max(0, y0):y1, max(0, x0):x1]
                    if min(crop.shape[:2]) >= 32:
                        out["face_quality"] = self.quality.score(crop)
                laps("quality")
            if self.fake is not None:
                out["fake_score"] = self.fake.fake_probability(img)
                laps("fake")
        out["seconds"] = time.perf_counter() - t0
        out["seconds_by_step"] = {k: round(v, 6) for k, v in laps.seconds.items()}
        return out


class Laps:
    """Seconds per named step: each call charges the time since the previous one to ``name``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.restart()

    def restart(self) -> None:
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


def cheap_rejection(width: int, height: int, working: tuple[int, int], s: FilterSettings) -> str | None:
    """Why an image is rejected from its size alone (checked before any detector), else None."""
    short, long_ = sorted((width, height))
    if long_ > s.max_aspect * short:
        return "extreme_aspect"
    if min(working) < s.min_analysed_side:
        return "too_small"
    return None


def _box(b) -> list[float] | None:
    return None if b is None else [round(float(v), 2) for v in b]


def _init_worker(settings: FilterSettings, store: ContentStore, single_thread: bool = True) -> None:
    reuse_freed_memory()
    if single_thread:  # a pool worker: one core each
        import cv2

        cv2.setNumThreads(1)
        if uses_torch(settings) or "torch" in sys.modules:  # importing torch only to set its threads cost ~1 s a worker
            import torch

            torch.set_num_threads(1)
    _WORKER["analyser"] = Analyser(settings)
    _WORKER["store"] = store


def uses_torch(settings: FilterSettings) -> bool:
    """Whether the analysis runs a torch model (the default chain is OpenCV and NumPy only)."""
    return settings.person_detector == "yolo" or settings.quality_metric != "piqe" or settings.fake_classifier_dir is not None


def _analyse_key(key: str) -> tuple[str, dict]:
    try:
        data = _WORKER["store"].get(key)
    except KeyError as exc:
        return key, {"decode_error": "missing", "decode_detail": str(exc)}
    try:
        return key, _WORKER["analyser"].analyse(data)
    except Exception as exc:  # one bad image must not stop the batch: record it and go on
        log.exception("analysis failed for %s", key)
        return key, {"decode_error": "analysis_error", "decode_detail": f"{type(exc).__name__}: {exc}"}


class RayAnalyser:
    """The analysis as a Ray Data callable class: models built once per actor, one core each."""

    def __init__(self, settings: FilterSettings, store: ContentStore):
        _init_worker(settings, store)

    def __call__(self, batch: dict) -> dict:
        pairs = [_analyse_key(str(k)) for k in batch["key"]]
        return json_batch((k for k, _ in pairs), [r for _, r in pairs])


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class FilterRun:
    table: pa.Table
    analysed: int  # images analysed this run
    reused: int  # analyses taken from the cache
    seconds: float
    analysis_seconds: float
    notes: list[str] = field(default_factory=list)
    ms_per_image_by_step: dict[str, float] = field(default_factory=dict)  # this run's analyses, slowest step first


def analyse_all(keys: list[str], settings: FilterSettings, store: ContentStore, workers: int,
                progress: Callable[[int, int], None] | None = None, engine: EngineSettings | None = None) -> dict[str, dict]:
    """Analyse images by content key: on Ray actors (engine ``ray``), else in a process pool (chunked) when workers > 1."""
    results: dict[str, dict] = {}
    if not keys:
        return results
    if engine is not None and engine.kind == "ray":
        for k, r in map_keys(keys, RayAnalyser, (settings, store), engine, workers, progress):
            results[k] = r
            kill_point("filter.analysed")
        return results
    if workers <= 1 or len(keys) < 4 * settings.chunk_size:  # a small refresh: not worth spawning workers
        _init_worker(settings, store, single_thread=False)
        for i, key in enumerate(keys):
            k, r = _analyse_key(key)
            results[k] = r
            kill_point("filter.analysed")
            if progress:
                progress(i + 1, len(keys))
        return results
    chunk = max(1, min(settings.chunk_size, len(keys) // (workers * 2) or 1))
    with process_pool(workers, _init_worker, (settings, store)) as pool:
        for i, (k, r) in enumerate(pool.map(_analyse_key, keys, chunksize=chunk)):
            results[k] = r
            kill_point("filter.analysed")
            if progress:
                progress(i + 1, len(keys))
    return results


def backend_notes(settings: FilterSettings) -> list[str]:
    """Which optional steps are off and why, checked without loading any model."""
    import importlib.util

    from flywheel.filters.quality import WEIGHT_FREE

    notes = []
    if settings.person_detector == "yolo":
        if importlib.util.find_spec("ultralytics") is None:
            notes.append("person detector 'yolo' is off: the ultralytics package is not installed; HOG used")
        elif not (settings.yolo_weights and Path(settings.yolo_weights).is_file()):
            notes.append(f"person detector 'yolo' is off: no weights file at {settings.yolo_weights}; HOG used")
    if settings.quality_metric not in WEIGHT_FREE and not (settings.quality_weights and Path(settings.quality_weights).is_file()):
        notes.append(f"quality metric {settings.quality_metric!r} is off: no local weights; no quality scores computed")
    if settings.fake_classifier_dir is None:
        notes.append("fake-person step is off: no CLIP checkpoint configured (fake_classifier_dir)")
    elif not Path(settings.fake_classifier_dir).is_dir():
        notes.append(f"fake-person step is off: no CLIP checkpoint at {settings.fake_classifier_dir}")
    return notes


def decide(records: Iterable[Mapping], analyses: Mapping[str, dict], settings: FilterSettings) -> list[dict]:
    """Verdicts in pool order: the first occurrence of an image is the original."""
    seen: dict[str, str] = {}
    near = NearDuplicateIndex(settings.near_duplicate_bits)
    rows = []
    for rec in records:
        key = rec["sha256"]
        a = analyses.get(key, {"decode_error": "missing", "decode_detail": "no analysis"})
        reasons: list[str] = []
        duplicate_of = None
        if a.get("decode_error"):
            reasons.append(a["decode_error"])
        if key in seen:  # byte-identical content: no decoding needed to know
            reasons.append("exact_duplicate")
            duplicate_of = seen[key]
        else:
            seen[key] = rec["record_id"]
        if not a.get("decode_error"):
            short, long_ = sorted((a["width"], a["height"]))
            if short < settings.min_short_side or long_ < settings.min_long_side:
                reasons.append("too_small")
            if a.get("skipped") and a["skipped"] not in reasons:
                reasons.append(a["skipped"])
        if not a.get("decode_error") and not a.get("skipped"):
            if duplicate_of is None:
                match = near.match(a["phash"])
                if match is not None:
                    reasons.append("near_duplicate")
                    duplicate_of = match
            n = a.get("n_persons", 0)
            if n == 0:
                reasons.append("no_person")
            elif n > 1:
                reasons.append("multiple_people")
            elif a.get("face_size") is None or a["face_size"] < settings.min_face:
                reasons.append("small_face")
            q = a.get("quality")
            if q is not None:
                lower_better = a.get("quality_lower_better", True)
                ok = q <= settings.quality_threshold if lower_better else q >= settings.quality_threshold
                if not ok:
                    reasons.append("low_quality")
            f = a.get("fake_score")
            if f is not None and f >= settings.fake_threshold:
                reasons.append("fake_person")
        verdict = "keep" if not reasons else ("error" if a.get("decode_error") in ("missing", "analysis_error") else "reject")
        if verdict == "keep":
            near.add(a["phash"], rec["record_id"])
        scores = {k: v for k, v in a.items() if k not in ("person_box", "face_box")}
        rows.append({
            "record_id": rec["record_id"], "sha256": key, "verdict": verdict, "reasons": reasons,
            "width": a.get("width"), "height": a.get("height"), "phash": a.get("phash"), "duplicate_of": duplicate_of,
            "n_persons": a.get("n_persons"), "person_box": a.get("person_box"), "face_box": a.get("face_box"),
            "face_size": a.get("face_size"), "quality": a.get("quality"),
            "quality_metric": settings.quality_metric if a.get("quality") is not None else None,
            "face_quality": a.get("face_quality"), "fake_score": a.get("fake_score"), "scores_json": to_json(scores),
        })
    return rows


def step_profile(analyses: Iterable[dict]) -> dict[str, float]:
    """Mean milliseconds per image of each analysis step (from each analysis's ``seconds_by_step``), slowest first."""
    totals: dict[str, float] = {}
    n = 0
    for a in analyses:
        n += 1
        for step, seconds in a.get("seconds_by_step", {}).items():
            totals[step] = totals.get(step, 0.0) + seconds
    return {k: round(1000 * v / n, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def cached_analyses(previous: pa.Table | None, analysis_key: str) -> dict[str, dict]:
    """Analyses from an earlier filtered pool made under the same analysis settings."""
    if previous is None:
        return {}
    out = {}
    for sha, boxes, scores in zip(previous.column("sha256").to_pylist(),
                                  zip(previous.column("person_box").to_pylist(), previous.column("face_box").to_pylist()),
                                  previous.column("scores_json").to_pylist()):
        if not sha or not scores:
            continue
        a = json.loads(scores)
        if a.get("analysis_key") != analysis_key or a.get("decode_error") in ("missing", "analysis_error"):
            continue
        a["person_box"], a["face_box"] = boxes
        out[sha] = a
    return out


def run_filter(records: pa.Table, store: ContentStore, settings: FilterSettings, previous: pa.Table | None = None,
               workers: int | None = None, progress: Callable[[int, int], None] | None = None,
               engine: EngineSettings | None = None) -> FilterRun:
    """Filter every fetched raw record; reuse analyses from ``previous`` (an earlier filtered pool)."""
    t0 = time.perf_counter()
    fetched = [r for r in records.to_pylist() if r["status"] == "ok" and r.get("sha256")]
    key = settings.analysis_key()
    analyses = cached_analyses(previous, key)
    todo = sorted({r["sha256"] for r in fetched} - set(analyses))
    reused = len({r["sha256"] for r in fetched}) - len(todo)
    t1 = time.perf_counter()
    fresh = analyse_all(todo, settings, store, workers or settings.workers, progress, engine)
    notes = backend_notes(settings)
    analysis_seconds = time.perf_counter() - t1
    for a in fresh.values():
        a["analysis_key"] = key
    analyses.update(fresh)
    rows = decide(fetched, analyses, settings)
    return FilterRun(FILTERED_POOL.table(rows), len(todo), reused, time.perf_counter() - t0, analysis_seconds, notes,
                     step_profile(fresh.values()))


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
