"""Text-image alignment scores from local weights: CLIPScore, PickScore, HPS v2.

Each backend loads only from a local path; without one (or without its package) it raises
:class:`BackendUnavailable` and the report says "not computed" with the reason, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flywheel.backends import BackendUnavailable


class ClipScorer:
    """Cosine similarity of CLIP image and text embeddings from a transformers CLIP directory.

    ``clipscore``: 100 · max(cos, 0) (Hessel et al. with w = 100, as torchmetrics reports it);
    ``pickscore``: the model's logit scale · cos (PickScore_v1 is a fine-tuned CLIP-H)."""

    def __init__(self, model_dir: str | Path | None, kind: str = "clipscore"):
        if not model_dir or not Path(model_dir).is_dir():
            raise BackendUnavailable(f"{kind}: no local CLIP directory at {model_dir!r}")
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self._torch, self.kind = torch, kind
        self.model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.processor = CLIPProcessor.from_pretrained(str(model_dir), local_files_only=True)

    def score(self, images: np.ndarray, prompts: Sequence[str]) -> float:
        torch = self._torch
        inputs = self.processor(text=list(prompts), images=list(images), return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        cos = (img * txt).sum(-1)
        if self.kind == "pickscore":
            return float((self.model.logit_scale.exp() * cos).mean())
        return float((100 * cos.clamp(min=0)).mean())


class HpsV2Scorer:
    """HPS v2: an open_clip ViT-H-14 with the HPS checkpoint (score = cos · 100)."""

    def __init__(self, checkpoint: str | Path | None):
        if not checkpoint or not Path(checkpoint).is_file():
            raise BackendUnavailable(f"hpsv2: no local checkpoint at {checkpoint!r}")
        try:
            import open_clip
        except ImportError as exc:
            raise BackendUnavailable("hpsv2: the open_clip package is not installed") from exc
        import torch

        self._torch = torch
        self.model, _, self.preprocess = open_clip.create_model_and_transforms("ViT-H-14", pretrained=None)
        self.model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14")

    def score(self, images: np.ndarray, prompts: Sequence[str]) -> float:
        from PIL import Image

        torch = self._torch
        x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images])
        with torch.inference_mode():
            img = torch.nn.functional.normalize(self.model.encode_image(x), dim=-1)
            txt = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer(list(prompts))), dim=-1)
        return float(((img * txt).sum(-1) * 100).mean())


def alignment_scores(images: np.ndarray, prompts: Sequence[str], clip_dir=None, pickscore_dir=None,
                     hpsv2_checkpoint=None) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, skipped with reasons) for clipscore, pickscore and hpsv2."""
    backends = {"clipscore": lambda: ClipScorer(clip_dir, "clipscore"),
                "pickscore": lambda: ClipScorer(pickscore_dir, "pickscore"),
                "hpsv2": lambda: HpsV2Scorer(hpsv2_checkpoint)}
    scores, skipped = {}, {}
    for name, make in backends.items():
        if not len(images):
            skipped[name] = "no images"
            continue
        try:
            scores[name] = make().score(images, prompts)
        except BackendUnavailable as exc:
            skipped[name] = str(exc)
    return scores, skipped
