"""The evaluation report's KOSMOS-G section: the newest stage-3 version trained on the evaluated snapshot.

KOSMOS-G's subject figures are measured once, by the training's stage 3 on held-out garments
(:mod:`training.kosmos.run`), and logged on its run; the report reads them back from MLflow rather than
sampling again, so the section costs nothing when no KOSMOS-G version exists and says so.
"""

from __future__ import annotations

import json
from pathlib import Path


def kosmos_g_summary(client, registered_model: str, snapshot_tag: str | None, folder: Path) -> dict:
    """``{"version", "run_id", "scores", "samples_path"}`` of the newest ``kosmos.stage = instruct`` version (on
    ``snapshot_tag`` when given), its artifacts downloaded into ``folder``; else ``{"note": why}``."""
    versions = client.search_model_versions(f"name='{registered_model}'")  # [] before the first registration
    mine = [v for v in versions if v.tags.get("kosmos.stage") == "instruct"
            and (snapshot_tag is None or v.tags.get("snapshot.tag") == snapshot_tag)]
    if not mine:
        on = f" on {snapshot_tag}" if snapshot_tag else ""
        return {"note": f"no KOSMOS-G version instruction-tuned{on} (materialize kosmos_g_checkpoint, or run "
                        "`cosmicman train-kosmos-g`)"}
    newest = max(mine, key=lambda v: int(v.version))
    out = {"registered_model": registered_model, "version": str(newest.version), "run_id": newest.run_id}
    folder.mkdir(parents=True, exist_ok=True)
    names = {a.path for a in client.list_artifacts(newest.run_id)}
    if "subject_scores.json" not in names:
        return {**out, "note": f"version {newest.version}'s run logged no subject figures (subject_prompts: 0)"}
    scores = json.loads(Path(client.download_artifacts(newest.run_id, "subject_scores.json", str(folder))).read_text())
    out["scores"] = scores
    if "subject_samples.png" in names:
        out["samples_path"] = client.download_artifacts(newest.run_id, "subject_samples.png", str(folder))
    return out
