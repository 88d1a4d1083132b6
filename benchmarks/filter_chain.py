"""Benchmark the filter chain on the synthetic source (not a timed test: prints figures).

1. Quality: precision and recall of "keep" against the ground truth (a sample should be
   kept exactly when the renderer made it clean), with the demo profile's settings.
2. Speed, per core: images/second for decode-only and for the full default chain on the
   same images, and their ratio (goal: full chain >= 25% of decode-only).
3. Incremental refresh: time of a refresh that adds 1% new images, relative to the full
   run (goal: <= 5%).

    .venv/bin/python benchmarks/filter_chain.py [--count 2000]
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

from flywheel.filters.chain import Analyser, _init_worker, run_filter
from flywheel.filters.decode import decode_image
from flywheel.protocol import load_protocol
from flywheel.settings import load_settings
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--profile", default="demo")
    args = ap.parse_args()
    settings = load_settings(args.profile)
    fs = settings.filter
    protocol = load_protocol(settings.protocol_path)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(os.path.join(tmp, "store"))
        raw = ingest_synthetic(settings.synthetic, protocol, store, count=args.count, workers=2).table
        print(f"machine: {os.cpu_count()} cores; {raw.num_rows} synthetic samples {settings.synthetic.width}x{settings.synthetic.height}, "
              f"profile {args.profile}")

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

        # -- speed per core ---------------------------------------------------------------------
        keys = sorted(set(raw.column("sha256").to_pylist()))[:400]
        blobs = [store.get(k) for k in keys]
        t0 = time.perf_counter()
        for b in blobs:
            decode_image(b, max_pixels=fs.max_pixels, max_side=fs.working_side)
        decode_rate = len(blobs) / (time.perf_counter() - t0)
        _init_worker(fs, store)  # one thread, as a worker process runs
        analyser = Analyser(fs)
        t0 = time.perf_counter()
        for b in blobs:
            analyser.analyse(b)
        chain_rate = len(blobs) / (time.perf_counter() - t0)
        print(f"per core: decode-only {decode_rate:.0f} images/s, full chain {chain_rate:.1f} images/s, "
              f"ratio {chain_rate / decode_rate:.1%} (goal >= 25%)")

        # -- 1% refresh -------------------------------------------------------------------------
        extra = ingest_synthetic(settings.synthetic, protocol, store, start=args.count, count=max(1, args.count // 100),
                                 batch="refresh", workers=1).table
        refresh = run_filter(pa.concat_tables([raw, extra]), store, fs, previous=full.table, workers=fs.workers)
        print(f"1% refresh: {refresh.analysed} new images analysed, {refresh.reused} reused, {refresh.seconds:.2f}s "
              f"= {refresh.seconds / full.seconds:.1%} of the full run (goal <= 5%)")
        ok &= refresh.seconds / full.seconds <= 0.05
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
