"""Benchmark the filter chain on the synthetic source (not a timed test: prints figures).

1. Quality: precision and recall of "keep" against the ground truth (a sample should be
   kept exactly when the renderer made it clean), with the demo profile's settings.
2. Speed, per core: images/second for decode-only and for the full default chain on the
   same images, and their ratio (goal: full chain >= 25% of decode-only).
3. Incremental refresh: time of a refresh that adds 1% new images, relative to the full
   run (goal: <= 5%).
4. Memory: peak resident memory of one worker process analysing the demo images, and of one
   analysing hostile ones (extreme-aspect strips, huge headers, near-cap pixel counts)
   (goal: hostile <= 1.2x demo).

    .venv/bin/python benchmarks/filter_chain.py [--count 2000] [--only-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter

import pyarrow as pa

from flywheel.filters.chain import Analyser, _init_worker, run_filter, step_profile
from flywheel.filters.decode import decode_image
from flywheel.protocol import load_protocol
from flywheel.ray_data import EngineSettings
from flywheel.settings import load_settings
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore


def _peak_rss_mb(args) -> float:
    """In a fresh spawned worker: analyse ``blobs`` as the filter's workers do; peak RSS in MB."""
    import resource

    fs, blobs = args
    from flywheel.filters.chain import _WORKER, _init_worker

    _init_worker(fs, None)
    analyser = _WORKER["analyser"]
    for b in blobs:
        analyser.analyse(b)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hostile_images() -> list[bytes]:
    """Cheap to store, expensive to analyse naively: strips, huge headers, near-cap pixel counts."""
    import io
    import struct
    import zlib

    from PIL import Image

    def encode(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    def png_header(w: int, h: int) -> bytes:  # a valid IHDR, no pixels: a "huge header"
        ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")

    out = [encode(Image.new("RGB", (40000, 2)), "PNG"), encode(Image.new("RGB", (2, 40000)), "PNG"),
           encode(Image.new("L", (60000, 30)), "PNG"), encode(Image.new("RGB", (16000, 1000), (9, 9, 9)), "JPEG"),
           png_header(100000, 100000), png_header(65000, 65000), png_header(7000, 9000),
           # real pixels under the pixel cap: small files (one colour compresses) that decode to 190-430 MB
           encode(Image.new("RGB", (7000, 9000), (200, 30, 30)), "PNG"), encode(Image.new("P", (6000, 6000), 3), "PNG")]
    return out * 4


def memory_figures(fs, demo_blobs: list[bytes]) -> bool:
    from flywheel.parallel import process_pool

    peaks = {}
    for name, blobs in (("demo", demo_blobs), ("hostile", hostile_images())):
        with process_pool(1) as pool:
            peaks[name] = pool.submit(_peak_rss_mb, (fs, blobs)).result()
    ratio = peaks["hostile"] / peaks["demo"]
    print(f"peak memory per worker: demo images {peaks['demo']:.0f} MB, hostile images {peaks['hostile']:.0f} MB, "
          f"ratio {ratio:.2f} (goal <= 1.2); max_pixels {fs.max_pixels:,}, max_decode_mb {fs.max_decode_mb:g}, "
          f"max_aspect {fs.max_aspect}")
    return ratio <= 1.2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--only-memory", action="store_true", help="section 4 alone, on 100 demo images")
    args = ap.parse_args()
    settings = load_settings(args.profile)
    fs = settings.filter
    protocol = load_protocol(settings.protocol_path)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(os.path.join(tmp, "store"))
        raw = ingest_synthetic(settings.synthetic, protocol, store, count=100 if args.only_memory else args.count,
                               workers=2).table
        print(f"machine: {os.cpu_count()} cores; {raw.num_rows} synthetic samples {settings.synthetic.width}x{settings.synthetic.height}, "
              f"profile {args.profile}")
        if args.only_memory:
            return 0 if memory_figures(fs, [store.get(k) for k in sorted(set(raw.column("sha256").to_pylist()))]) else 1

        # -- full run, then quality against ground truth --------------------------------------
        full = run_filter(raw, store, fs, workers=fs.workers)
        print(f"full run: {full.analysed} images analysed in {full.seconds:.1f}s with {fs.workers} workers")
        truth = {r["record_id"]: json.loads(r["sidecar_json"]) for r in raw.to_pylist()}
        tp = fp = fn = 0
        misses, false_keeps = Counter(), Counter()
        for r in full.table.to_pylist():
            t = truth[r["record_id"]]
            should, kept = t["defect"] is None, r["verdict"] == "keep"
            tp += should and kept
            fp += kept and not should
            fn += should and not kept
            if should and not kept:
                misses[(t["person_type"], ",".join(r["reasons"]))] += 1
            if kept and not should:
                false_keeps[t["defect"]] += 1
        precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
        print(f"keep precision {precision:.3f}, recall {recall:.3f} (goal >= 0.95 each); tp {tp}, fp {fp}, fn {fn}")
        print(f"  clean samples rejected, by framing and reasons: {dict(misses.most_common(8))}")
        print(f"  defective samples kept, by defect: {dict(false_keeps)}")
        ok &= precision >= 0.95 and recall >= 0.95

        # -- speed per core, and where the time goes ------------------------------------------
        keys = sorted(set(raw.column("sha256").to_pylist()))
        blobs = [store.get(k) for k in keys]
        t0 = time.perf_counter()
        for b in blobs:
            decode_image(b, max_pixels=fs.max_pixels, max_side=fs.working_side, max_decode_mb=fs.max_decode_mb)
        decode_rate = len(blobs) / (time.perf_counter() - t0)
        _init_worker(fs, store)  # one thread, as a worker process runs
        analyser = Analyser(fs)
        t0 = time.perf_counter()
        analyses = [analyser.analyse(b) for b in blobs]
        chain_rate = len(blobs) / (time.perf_counter() - t0)
        print(f"per core, {len(blobs)} images: decode-only {decode_rate:.0f} images/s, full chain {chain_rate:.1f} images/s "
              f"(goal >= 100), ratio {chain_rate / decode_rate:.1%} (goal >= 25%)")
        total = sum(a["seconds"] for a in analyses)
        print("  ms per image by step: " + ", ".join(f"{k} {v:.1f}" for k, v in step_profile(analyses).items())
              + f"; all {1000 * total / len(analyses):.1f}")
        print(f"  pyramids: bodies (HOG) at {fs.body_working_height} high, step {fs.body_scale}, hit threshold "
              f"{fs.body_hit_threshold}; faces (Haar) step {fs.face_scale_factor}, min neighbours {fs.face_min_neighbors}, "
              f"whole image at {fs.face_working_height} high, head regions at {fs.face_head_height:g}, second look at "
              f"{fs.face_fallback_height} when no body and no face")

        # -- engines: local processes with 1 and 2 workers, Ray Data with 2 actors, same images ----
        runs, overheads = {}, {}
        ray_engine = EngineSettings(kind="ray")
        for name, workers, engine in (("local, 1 worker", 1, None), ("local, 2 workers", 2, None),
                                      ("ray, 2 actors", 2, ray_engine), ("ray, 2 actors, Ray running", 2, ray_engine)):
            if name.endswith("Ray running"):  # as on a cluster: Ray is up before the run (the run above started its own)
                import ray

                from flywheel.ray_data import init_options

                ray.init(**init_options(ray_engine, workers))
                # a cluster that has been up has its own start-up behind it (raylet, GCS and prestarted workers
                # booting take most of the two cores for seconds after ray.init): one small job first, not timed
                run_filter(raw.slice(0, 64), store, fs, workers=workers, engine=ray_engine)
            runs[name] = run_filter(raw, store, fs.model_copy(update={"chunk_size": 8}), workers=workers, engine=engine)
            if name.endswith("Ray running"):
                ray.shutdown()
            r = runs[name]
            # each analysis times itself inside its worker: what the wall time holds beyond that work, spread
            # over the workers, is the engine's overhead (start-up and model loading, transfer, idle workers)
            per_image = {sha: json.loads(x).get("seconds", 0.0) for sha, x in zip(r.table.column("sha256").to_pylist(),
                                                                               r.table.column("scores_json").to_pylist()) if x}
            busy = sum(per_image.values()) / workers  # one analysis per content hash (exact duplicates share it)
            overheads[name] = r.analysis_seconds - busy
            print(f"engine {name}: {r.analysed} images in {r.analysis_seconds:.1f}s = {r.analysed / r.analysis_seconds / workers:.1f} "
                  f"images/s per core ({r.analysed / r.analysis_seconds:.1f} in all); {1000 * busy * workers / r.analysed:.1f} ms "
                  f"per image in the workers, overhead {overheads[name]:.1f}s")
        one, two, ray_two, ray_running = (runs[k].analysis_seconds for k in runs)
        o1, o2, o_ray, _ = (overheads[k] for k in runs)
        same = [(a["record_id"], a["verdict"], a["reasons"]) for a in runs["ray, 2 actors"].table.to_pylist()] == \
               [(a["record_id"], a["verdict"], a["reasons"]) for a in runs["local, 2 workers"].table.to_pylist()]
        print(f"  2 workers / 1 worker: {one / two:.2f}x (goal >= 1.8x), {(one - o1) / (two - o2):.2f}x without the overhead; "
              f"ray / local at 2 workers: {two / ray_two:.2f} of the local throughput (goal within 15%), "
              f"{(two - o2) / (ray_two - o_ray):.2f} without the overhead, {two / ray_running:.2f} with Ray already running; "
              f"same verdicts and reasons: {same}")
        ok &= same

        # -- 1% refresh -------------------------------------------------------------------------
        extra = ingest_synthetic(settings.synthetic, protocol, store, start=args.count, count=max(1, args.count // 100),
                                 batch="refresh", workers=1).table
        refresh = run_filter(pa.concat_tables([raw, extra]), store, fs, previous=full.table, workers=fs.workers)
        print(f"1% refresh: {refresh.analysed} new images analysed, {refresh.reused} reused, {refresh.seconds:.2f}s "
              f"= {refresh.seconds / full.seconds:.1%} of the full run (goal <= 5%)")
        ok &= refresh.seconds / full.seconds <= 0.05

        # -- memory per worker ------------------------------------------------------------------
        ok &= memory_figures(fs, blobs[:100])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
