"""Benchmark the embedded synthetic source (not a timed test: prints figures).

Renders N samples (default 2,000) into a temporary content store with the raw-record
manifest, then reports: images/second (wall clock, all workers), per-category answer
coverage (every category must show at least two answers), the defect mix, and the share
of clean full-body samples in which OpenCV's HOG people detector finds a person.

    .venv/bin/python benchmarks/synthetic_source.py [--count 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict

import cv2
import numpy as np

from flywheel.detect.hog import HogPersonDetector
from flywheel.manifests import RAW_RECORDS, write_manifest
from flywheel.protocol import load_protocol
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore
from flywheel.synthetic.source import SyntheticConfig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    protocol = load_protocol()
    cfg = SyntheticConfig(seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = ContentStore(os.path.join(tmp, "store"))
        result = ingest_synthetic(cfg, protocol, store, count=args.count, workers=args.workers)
        write_manifest(result.table, os.path.join(tmp, "raw.parquet"), RAW_RECORDS)
        print(f"machine: {os.cpu_count()} cores; workers: {args.workers}; image size {cfg.width}x{cfg.height}")
        print(f"rendered + stored {result.table.num_rows} samples in {result.seconds:.1f}s: "
              f"{result.images_per_second:.1f} images/s ({result.images_per_second / args.workers:.1f} per worker)")

        rows = result.table.to_pylist()
        truths = [json.loads(r["sidecar_json"]) for r in rows]
        answers = defaultdict(Counter)
        for t in truths:
            for k, v in (t.get("attributes") or {}).items():
                if v is not None:
                    answers[k][v] += 1
        thin = {k: dict(answers[k]) for k in protocol.categories if len(answers[k]) < 2}
        print(f"categories: {len(protocol.categories)}; every category with >= 2 answers: {not thin}")
        if thin:
            print(f"  too few answers: {thin}")
        print("defects: " + ", ".join(f"{k or 'clean'} {v}" for k, v in sorted(Counter(t['defect'] for t in truths).items(), key=lambda kv: str(kv[0]))))

        detector = HogPersonDetector()
        clean_full = [(r, t) for r, t in zip(rows, truths) if t["defect"] is None and t["person_type"] == "full body"]
        t0 = time.perf_counter()
        found = 0
        for r, _ in clean_full:
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(store.get(r["sha256"]), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            found += bool(detector.detect(img))
        dt = time.perf_counter() - t0
        rate = found / max(1, len(clean_full))
        print(f"HOG finds a person in {found}/{len(clean_full)} clean full-body samples: {rate:.1%} (goal >= 80%); "
              f"{len(clean_full) / dt:.1f} detections/s on one core")
    return 0 if (not thin and rate >= 0.8) else 1


if __name__ == "__main__":
    sys.exit(main())
