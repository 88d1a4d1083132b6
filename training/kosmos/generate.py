"""KOSMOS-G generation: an interleaved prompt through S and AlignerNet's M into the frozen base's UNet.

The aligned sequence M(S(prompt)) takes the place of the CLIP text encoder's output; the UNet,
the VAE and the scheduler are the base's own and never change (:func:`weights_digest` before and
after proves it). The unconditional branch of classifier-free guidance is the aligned empty
sequence M(S([])) once instruction tuning has trained it (its 10% null condition), else the text
encoder's own empty prompt, which is what the aligner's targets are and what the UNet knows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.kosmos.aligner import AlignerNet
from training.kosmos.interleaved import Segment, parse

Prompt = str | tuple[str, Sequence[str | Path | np.ndarray]]  # text, or text with <image> slots and their images


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every tensor of ``module``'s state, by name: equal exactly when no weight changed."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def segments(prompt: Prompt) -> list[Segment]:
    text, images = (prompt, ()) if isinstance(prompt, str) else prompt
    return parse(text, images)


class KosmosGenerator:
    """``generate(prompts, seeds)`` for interleaved prompts; ``base`` is a loaded embedded or SD directory."""

    def __init__(self, base, source, aligner: AlignerNet, aligned_null: bool = False):
        self.base, self.source, self.aligner, self.aligned_null = base, source, aligner, aligned_null

    def condition(self, prompts: Sequence[Sequence[Segment]]) -> torch.Tensor:
        """(B, 77, d_t): what the UNet reads in place of the text encoder's states."""
        s, pad = self.source.embed(prompts)
        return self.aligner.encode(s, pad)

    def null(self, n: int) -> torch.Tensor:
        if self.aligned_null:
            return self.condition([[]] * n)
        from training.sampling import unconditional

        return unconditional(self.base, n)[0]

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int], steps: int = 25, guidance_scale: float = 7.5,
                 batch_size: int = 8) -> np.ndarray:
        """(N, H, W, 3) uint8, one image per (prompt, seed); every prompt is checked before any sampling."""
        from training.sampling import sample_from_embeddings

        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        parsed = [segments(p) for p in prompts]
        if self.base.is_sdxl:
            raise ValueError("KOSMOS-G generation: an SDXL base needs a second aligner (its pooled and second "
                             "text embeddings); only single-encoder bases are supported")
        self.source.eval()
        self.aligner.eval()
        h, w = self.base.image_size
        out = []
        for i in range(0, len(parsed), batch_size):
            batch = parsed[i:i + batch_size]
            out.append(sample_from_embeddings(self.base, self.base.unet, self.condition(batch), self.null(len(batch)),
                                              list(seeds[i:i + batch_size]), h, w, steps, guidance_scale))
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)
