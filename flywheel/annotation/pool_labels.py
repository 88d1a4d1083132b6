"""The annotator over the whole pool, here or on Ray actors.

Labelling the pool is the flywheel's one pass over every image (the paper's six million), so it
runs where the pool's views were built: in this process, or as a Ray Data pipeline whose actors
each hold one copy of the annotator (shipped once as a constructor argument, not per batch).
Both engines give the same probabilities.
"""

from __future__ import annotations

import numpy as np

from flywheel.annotation.crops import Views
from flywheel.ray_data import EngineSettings


class PoolPredictor:
    """A Ray Data callable class: the annotator's probabilities for a batch of views, every
    category's answers side by side in one ``probs`` row per image."""

    def __init__(self, annotator):
        self.annotator = annotator

    def __call__(self, batch: dict) -> dict:
        probs = self.annotator.probabilities(Views(np.asarray(batch["crops"]), np.asarray(batch["stats"])))
        return {"key": batch["key"], "probs": np.concatenate(probs, axis=1)}


def pool_probabilities(annotator, views: Views, engine: EngineSettings | None = None, workers: int = 2
                       ) -> list[np.ndarray]:
    """Per category (the annotator's order), (N, n_answers) probabilities for every image of ``views``."""
    if engine is None or engine.kind != "ray" or len(views) == 0:
        return annotator.probabilities(views)
    from flywheel.ray_data import map_arrays

    widths = [len(annotator.protocol.categories[c].answers) for c in annotator.categories]
    rows = map_arrays({"crops": views.crops, "stats": views.stats}, PoolPredictor, (annotator,), engine, workers)
    flat = np.stack([row["probs"] for row in rows])
    return np.split(flat, np.cumsum(widths)[:-1], axis=1)
