"""A user's multimodal language model as KOSMOS-G's source model S: a local Hugging Face directory.

Any image-text-to-text model whose processor expands an image placeholder in the text into the image's
tokens (LLaVA and its kin: ``AutoProcessor`` + ``AutoModelForImageTextToText``) reads an interleaved prompt
as it was trained to; S's embedding sequence is its last hidden state, the padding mask its attention mask.
The directory is only read, never downloaded (``local_files_only``), and used frozen: stage 1 is the
model's own pretraining, and stage 3 trains AlignerNet's M against it (training a multi-billion-parameter
model is not what this machine is for; the tiny source model is trained end to end).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.kosmos.interleaved import ImageSegment, Segment


def config_digest(folder: Path) -> str:
    """sha256 of the directory's config.json: which model a saved aligner was trained against."""
    return hashlib.sha256((Path(folder) / "config.json").read_bytes()).hexdigest()


class HFSourceModel(nn.Module):
    trainable = False  # frozen: stage 3 trains M only (see the module docstring)

    def __init__(self, folder: str | Path, device: str | None = None):
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise FileNotFoundError(f"{self.folder}: no config.json (a local Hugging Face multimodal model directory "
                                    "is expected; nothing is downloaded)")
        self.processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True).eval()
        self.model.requires_grad_(False)
        if device:
            self.model.to(device)
        self.image_token = getattr(self.processor, "image_token", None)
        if not self.image_token:
            raise ValueError(f"{self.folder}: its processor has no image placeholder token (image_token); an "
                             "interleaved prompt cannot say where an image goes")
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.width = text_config.hidden_size
        self.config_digest = config_digest(self.folder)
        tokenizer = getattr(self.processor, "tokenizer", None)
        # the null condition of classifier-free guidance is an empty prompt: one special token keeps it a sequence
        self.empty_text = getattr(tokenizer, "bos_token", None) or getattr(tokenizer, "eos_token", None) or " "

    def train(self, mode: bool = True) -> "HFSourceModel":
        """Frozen, so always in evaluation mode (no dropout), whatever a trainer asks."""
        return super().train(False)

    def embed(self, prompts: Sequence[Sequence[Segment]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, width) last hidden states and a (B, L) bool mask, True at padded positions."""
        texts, images = [], []
        for prompt in prompts:
            parts = []
            for seg in prompt:
                if isinstance(seg, ImageSegment):
                    parts.append(self.image_token)
                    images.append(np.ascontiguousarray(seg.pixels))
                else:
                    parts.append(seg)
            texts.append(" ".join(p.strip() for p in parts if p.strip()) or self.empty_text)
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.no_grad():
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]
        return hidden.float(), inputs["attention_mask"] == 0
