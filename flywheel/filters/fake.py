"""The fake-person classifier slot: cartoon characters, mannequins and generated people.

CosmicMan fine-tunes EVA-CLIP for this; the slot here takes any CLIP checkpoint in
transformers format from a local directory and scores "real photo" against "fake person"
prompts zero-shot (or a fine-tuned checkpoint with the same prompts). Off by default:
no weights ship with the project, and an off step reports no score rather than a guess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.backends import BackendUnavailable

REAL = ["a photo of a real person"]
FAKE = ["a cartoon character", "a mannequin", "a computer-generated image of a person", "a drawing of a person"]


class FakePersonClassifier:
    def __init__(self, model_dir: str | Path | None):
        if not model_dir or not Path(model_dir).is_dir():
            raise BackendUnavailable(f"fake-person classifier: no CLIP checkpoint directory at {model_dir!r}")
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self._torch = torch
        self._model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self._processor = CLIPProcessor.from_pretrained(str(model_dir), local_files_only=True)

    def fake_probability(self, image: np.ndarray) -> float:
        inputs = self._processor(text=REAL + FAKE, images=image, return_tensors="pt", padding=True)
        with self._torch.inference_mode():
            probs = self._model(**inputs).logits_per_image.softmax(-1)[0]
        return float(probs[len(REAL):].sum())
