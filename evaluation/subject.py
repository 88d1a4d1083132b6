"""Subject-driven evaluation (KOSMOS-G): does "a person wearing <garment image>" wear that garment?

- **CLIP-I**: cosine of the image embeddings of each generated image and its garment's *reference*
  crop (the same garment on another person, so copying the prompt's pixels does not pass), with
  the local CLIP directory given (the embedded base's own CLIP by default; named in the result).
- **DINO**: the same with a local DINO / DINOv2 directory (transformers ``AutoModel``); none ships
  here, so without ``dino_dir`` it is reported as not computed, never a number.
- **CLIP-T**: cosine of each image with its prompt's text (the text with the image slots removed).
- **Garment attributes**: the independent truth judge's answers about the generated person against
  the garment's own answers (its colour and type categories), per category and overall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flywheel.backends import BackendUnavailable


def _letterbox(pixels: np.ndarray) -> np.ndarray:
    from training.kosmos.source import square

    return square(pixels)


class ImageEncoder:
    """Normalised image embeddings from a local transformers CLIP (``clip``) or DINO (``dino``) directory."""

    def __init__(self, model_dir: str | Path | None, kind: str):
        if not model_dir or not Path(model_dir).is_dir():
            raise BackendUnavailable(f"{kind}: no local model directory at {model_dir!r}")
        from transformers import AutoImageProcessor, AutoModel, CLIPModel, CLIPTokenizer

        self.kind, self.name = kind, str(model_dir)
        if kind == "clip":  # CLIP's own resize and normalisation (the embedded CLIP ships no processor file)
            self.model = CLIPModel.from_pretrained(str(model_dir), local_files_only=True).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        else:
            self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
            self.processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)

    @torch.inference_mode()
    def images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if self.kind == "clip":
            import cv2

            from training.pretrain.clip import vision_inputs

            size = self.model.config.vision_config.image_size
            pixels = vision_inputs(np.stack([cv2.resize(_letterbox(im), (size, size), interpolation=cv2.INTER_AREA)
                                             for im in images]), size)
            out = self.model.get_image_features(pixel_values=pixels)
            emb = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:  # DINO: the CLS token of the last layer, as DreamBench's DINO score uses
            pixels = self.processor(images=[_letterbox(im) for im in images], return_tensors="pt").pixel_values
            emb = self.model(pixel_values=pixels).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        if self.kind != "clip":
            raise BackendUnavailable(f"{self.kind}: has no text tower")
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**tok)
        emb = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(emb.float(), dim=-1)


def garment_accuracy(judged: Sequence[Mapping[str, str | None]], garments: Sequence[Mapping[str, str]],
                     categories: Sequence[str]) -> dict[str, dict]:
    """Per category of ``categories`` present in a garment's answers: share of images whose judged answer equals it."""
    out = {}
    for c in categories:
        hits = [judged[i].get(c) == g[c] for i, g in enumerate(garments) if c in g]
        if hits:
            out[c] = {"accuracy": float(np.mean(hits)), "count": len(hits)}
    return out


def subject_scores(images: np.ndarray, references: Sequence[np.ndarray], texts: Sequence[str],
                   garments: Sequence[Mapping[str, str]], judge, clip_dir: str | Path | None,
                   dino_dir: str | Path | None = None, colour_categories: Sequence[str] = (),
                   type_categories: Sequence[str] = ()) -> dict:
    """Every subject measure for ``images`` (one per garment); an unavailable backend is recorded with its reason."""
    result: dict = {"images": len(images), "not_computed": {}}
    for kind, folder, key in (("clip", clip_dir, "clip_i"), ("dino", dino_dir, "dino")):
        try:
            enc = ImageEncoder(folder, kind)
        except BackendUnavailable as exc:
            result["not_computed"][key] = str(exc)
            continue
        gen, ref = enc.images(list(images)), enc.images(list(references))
        result[key] = float((gen * ref).sum(-1).mean())
        result[f"{key}_model"] = enc.name
        if kind == "clip":
            result["clip_t"] = float((gen * enc.texts(texts)).sum(-1).mean())
    if judge is None:
        result["not_computed"]["judge"] = "no truth judge configured (evaluation.truth_judge_dir)"
        return result
    judged = judge.answer_images(list(images))
    result["judge"] = judge.identity
    for name, cats in (("colour", colour_categories), ("type", type_categories)):
        per = garment_accuracy(judged, garments, cats)
        result[f"{name}_by_category"] = per
        n = sum(d["count"] for d in per.values())
        result[f"{name}_accuracy"] = sum(d["accuracy"] * d["count"] for d in per.values()) / n if n else None
    return result
