"""Kill every stage at the moments a kill can hurt, rerun it, and compare with a clean run.

Two workspaces run the same pipeline on the test profile: ``clean`` runs each stage once;
``killed`` runs each stage with ``COSMICMAN_KILL_AT`` at each of its kill points in turn (the
process SIGKILLs itself there: no cleanup runs), then once more without. After each stage
the killed workspace must hold exactly what the clean one holds, item by item. A kill point
that a run never reaches fails the test (the point would be testing nothing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from flywheel.faults import ENV

ROOT = Path(__file__).resolve().parents[1]

# stage -> kill points, in the order they are tried; each run resumes from what the previous kill left
KILL_POINTS: dict[str, list[str]] = {
    "source": ["source.item@5", "manifest.written", "manifest.replaced"],
    "filter": ["filter.analysed@7", "manifest.written"],
    "iteration-0": ["annotation.planned", "annotation.labelled", "annotation.saved"],
    "iteration-1": ["annotation.labelled"],
    "pool": ["manifest.written"],
    # the first publication, so the registry's own set-up is inside the window
    "publish": ["registry.initialised", "registry.swapped", "registry.added", "registry.pushed", "registry.committed"],
    # a half-written checkpoint (restart from nothing), after the last checkpoint, after the final save
    "train": ["training.checkpoint_written@1", "training.checkpoint_saved@2", "training.trained"],
    "evaluate": ["evaluation.result_written@1", "evaluation.result_saved@1"],
}


def _stage(workspace: Path, stage: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env.update({"COSMICMAN_PROFILE": "test", "COSMICMAN_WORKSPACE": str(workspace), "OMP_NUM_THREADS": "1"})
    if kill_at:
        env[ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "tests.fault_driver", stage], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def _rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: json.dumps(r, sort_keys=True,
                                                                                                       default=str))


def _iteration(ws: Path, k: int) -> dict:
    return json.loads((ws / "annotation" / "iterations" / f"iter-{k:04d}" / "metrics.json").read_text())


def _ledger(ws: Path) -> list:
    """Every label bought, batch by batch (a batch recorded twice would show here)."""
    return [(f.name, _rows(f)) for f in sorted((ws / "annotation" / "labels").glob("*.parquet"))]


def _registry(ws: Path) -> dict:
    from flywheel.snapshot.registry import DataRegistry

    reg = DataRegistry(ws / "dvc-registry", str(ws / "dvc-remote"))
    stats = json.loads((reg.current / "stats.json").read_text())
    return {"versions": reg.versions(), "data_hash": reg.data_hash(reg.tag(1)),
            "content_digest": stats["provenance"]["content_digest"]}


def _trained(ws: Path) -> dict:
    from safetensors.torch import load_file

    final = next((ws / "training" / "daring").glob("*/final"))
    weights = load_file(str(final / "unet" / "diffusion_pytorch_model.safetensors"))
    return {"weights": weights, "checkpoints": sorted(p.name for p in final.parent.glob("checkpoint-*"))}


def _report(ws: Path) -> dict:
    report = json.loads(next((ws / "evaluation").glob("*/report.json")).read_text())
    return {m["label"]: m["metrics"] for m in report["models"]}


def _same(stage: str, clean: Path, killed: Path) -> None:
    if stage == "source":
        path = Path("manifests/raw/synthetic/b1.parquet")
        assert _rows(killed / path, ("fetched_at",)) == _rows(clean / path, ("fetched_at",))
        stored = lambda ws: sorted(p.name for p in (ws / "store" / "objects").rglob("*") if p.is_file()
                                   and not p.name.startswith("."))
        assert stored(killed) == stored(clean)
    elif stage == "filter":
        def analyses(ws):  # everything but how long each analysis took
            rows = _rows(ws / "manifests" / "filtered_pool.parquet")
            for r in rows:
                r["scores_json"] = {k: v for k, v in json.loads(r["scores_json"]).items() if not k.startswith("seconds")}
            return rows
        assert analyses(killed) == analyses(clean)
    elif stage.startswith("iteration-"):
        k = int(stage.split("-")[1])
        assert _iteration(killed, k) == _iteration(clean, k)  # same labels bought, counted once, same accuracies
        assert _ledger(killed) == _ledger(clean)
    elif stage == "pool":
        path = Path("manifests/annotations.parquet")
        assert _rows(killed / path) == _rows(clean / path)
    elif stage == "publish":
        assert _registry(killed) == _registry(clean) and _registry(killed)["versions"] == [1]
    elif stage == "train":
        a, b = _trained(clean), _trained(killed)
        assert a["checkpoints"] == b["checkpoints"] and not any(n.endswith(".partial") for n in b["checkpoints"])
        assert a["weights"].keys() == b["weights"].keys()
        assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{killed / 'mlflow.db'}")
        versions = mlflow.MlflowClient().search_model_versions()
        assert len(versions) == 1, "a killed training registered a model version"
    elif stage == "evaluate":
        assert _report(killed) == _report(clean)


def test_every_stage_killed_at_each_point_reruns_to_the_clean_result(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    tried = []
    for stage, points in KILL_POINTS.items():
        done = _stage(clean, stage)
        assert done.returncode == 0, f"clean {stage} failed:\n{done.stderr[-3000:]}"
        for point in points:
            proc = _stage(killed, stage, point)
            assert proc.returncode == -signal.SIGKILL, (
                f"{stage} with {ENV}={point}: expected to be killed there, exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            tried.append(f"{stage} x {point}")
        again = _stage(killed, stage)
        assert again.returncode == 0, f"{stage}, rerun after {points}: failed:\n{again.stderr[-3000:]}"
        _same(stage, clean, killed)
    print("\n".join(["killed and rerun to the clean result:", *tried]))
