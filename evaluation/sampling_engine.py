"""Sampling the evaluation's prompts and the truth judge's answers, here or on Ray actors.

Generation is most of an evaluation's cost, and it is per (prompt, seed): it scales out like the
filter chain. On Ray every actor holds one copy of the model and of the judge (constructor
arguments, sent once through the object store) and maps whole generation batches, the batches
a local run draws, so both engines compute the same thing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np

from flywheel.ray_data import EngineSettings


class SampleAndJudge:
    """One model and the truth judge (None: not computed): images for a batch of (caption, seed),
    and the judge's answers for them. A Ray Data callable class over items of whole batches."""

    def __init__(self, base, truth_judge, height: int, width: int, steps: int, guidance_scale: float):
        self.base, self.truth_judge = base, truth_judge
        self.size, self.steps, self.guidance_scale = (height, width), steps, guidance_scale
        self.base.unet.eval()

    def run(self, captions: Sequence[str], seeds: Sequence[int]) -> tuple[np.ndarray, list[dict] | None]:
        from training.sampling import generate

        images = generate(self.base, self.base.unet, list(captions), list(seeds), *self.size, steps=self.steps,
                          guidance_scale=self.guidance_scale, batch_size=max(1, len(captions)))
        answers = self.truth_judge.answer_images(list(images)) if self.truth_judge is not None else None
        return images, answers

    def __call__(self, batch: dict) -> dict:
        keys, images, results = [], [], []
        for key, raw in zip(batch["key"], batch["item"]):
            item = json.loads(str(raw))
            generated, answers = self.run(item["captions"], item["seeds"])
            buf = io.BytesIO()
            np.save(buf, generated)  # batches differ in length: a tensor column would be ragged
            keys.append(key)
            images.append(buf.getvalue())
            results.append(json.dumps(answers))
        return {"key": np.asarray(keys, dtype=object), "images": np.asarray(images, dtype=object),
                "result": np.asarray(results, dtype=object)}


def sample_and_judge(base, truth_judge, captions: Sequence[str], seeds: Sequence[int], height: int, width: int,
                     steps: int, guidance_scale: float, batch_size: int, engine: EngineSettings | None = None,
                     workers: int = 2) -> tuple[np.ndarray, list[dict] | None]:
    """(N, H, W, 3) images, one per (caption, seed), and the truth judge's answers (None without a judge)."""
    chunks = [(list(captions[i:i + batch_size]), [int(s) for s in seeds[i:i + batch_size]])
              for i in range(0, len(captions), batch_size)]
    worker_args = (base, truth_judge, height, width, steps, guidance_scale)
    parts: list[tuple[np.ndarray, list[dict] | None]] = []
    if engine is not None and engine.kind == "ray" and chunks:
        from flywheel.ray_data import map_items

        one_batch_per_call = engine.model_copy(update={"batch_size": 1})
        items = [(str(k), {"captions": c, "seeds": s}) for k, (c, s) in enumerate(chunks)]
        for row in map_items(items, SampleAndJudge, worker_args, one_batch_per_call, min(workers, len(chunks))):
            parts.append((np.load(io.BytesIO(row["images"])), json.loads(row["result"])))
    else:
        worker = SampleAndJudge(*worker_args)
        parts = [worker.run(c, s) for c, s in chunks]
    if not parts:
        return np.zeros((0, height, width, 3), np.uint8), [] if truth_judge is not None else None
    images = np.concatenate([p[0] for p in parts])
    answers = [a for p in parts for a in p[1]] if truth_judge is not None else None
    return images, answers
