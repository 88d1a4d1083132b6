"""The source model S of KOSMOS-G: an interleaved sequence of text and images into embeddings.

:class:`SourceModel` is what AlignerNet and the generation pipeline need: ``embed(prompts)`` ->
(B, L, width) hidden states and a (B, L) padding mask, for prompts given as segments
(:mod:`training.kosmos.interleaved`). :class:`TinySourceModel` is the one trained here, a small
multimodal language model in KOSMOS-1's shape: CLIP-BPE text tokens and, where an image
appears, ``image_tokens`` embeddings from an image tower (the embedded base's CLIP vision
encoder, frozen) through a learned-query resampler, one causal Transformer over the whole
sequence, and a language-model head for its own pretraining (stage 1: next text token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.kosmos.interleaved import ImageSegment, Segment

IGNORE = -100  # label of positions that are not a text token to predict


class SourceModel(Protocol):
    width: int

    def embed(self, prompts: Sequence[Sequence[Segment]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, width) hidden states and a (B, L) bool mask, True at padded positions."""


@dataclass(frozen=True)
class TinySourceConfig:
    width: int = 128
    layers: int = 3
    heads: int = 4
    image_tokens: int = 8  # resampled embeddings per image
    max_len: int = 128


def square(pixels: np.ndarray) -> np.ndarray:
    """Letterbox to a square on grey, so the image tower sees the whole crop (a garment is rarely square)."""
    h, w = pixels.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 127, np.uint8)
    out[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = pixels
    return out


class TinySourceModel(nn.Module):
    def __init__(self, tokenizer, vision: nn.Module, config: TinySourceConfig = TinySourceConfig()):
        super().__init__()
        c = self.config = config
        self.tokenizer = tokenizer
        self.width = c.width
        self.vision = vision.requires_grad_(False).eval()  # frozen, as KOSMOS's image encoder
        self.vision_size = vision.config.image_size
        self.tokens = nn.Embedding(len(tokenizer), c.width)
        self.positions = nn.Parameter(torch.randn(c.max_len, c.width) * 0.02)
        self.image_in = nn.Linear(vision.config.hidden_size, c.width)
        self.image_queries = nn.Parameter(torch.randn(c.image_tokens, c.width) * 0.02)
        self.resampler = nn.MultiheadAttention(c.width, c.heads, batch_first=True)
        layer = nn.TransformerEncoderLayer(c.width, c.heads, 4 * c.width, 0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.layers, norm=nn.LayerNorm(c.width), enable_nested_tensor=False)
        self.lm_head = nn.Linear(c.width, len(tokenizer), bias=False)
        self.lm_head.weight = self.tokens.weight  # tied, as language models do

    @classmethod
    def from_clip(cls, clip_dir: str | Path, config: TinySourceConfig = TinySourceConfig()) -> "TinySourceModel":
        """Tokenizer and image tower from a CLIP model directory (default use: models/embedded-base-clip)."""
        from transformers import CLIPTokenizer, CLIPVisionModel

        return cls(CLIPTokenizer.from_pretrained(clip_dir), CLIPVisionModel.from_pretrained(clip_dir), config)

    def image_embeddings(self, images: Sequence[ImageSegment]) -> torch.Tensor:
        """(N, image_tokens, width) for N images."""
        from training.pretrain.clip import vision_inputs

        pixels = vision_inputs(np.stack([_resized(square(im.pixels), self.vision_size) for im in images]), self.vision_size)
        device = self.positions.device
        with torch.no_grad():
            states = self.vision(pixel_values=pixels.to(device)).last_hidden_state
        keys = self.image_in(states)
        queries = self.image_queries.expand(len(images), -1, -1)
        return self.resampler(queries, keys, keys, need_weights=False)[0]

    def sequences(self, prompts: Sequence[Sequence[Segment]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings (B, L, width), padding mask (B, L) and LM labels (B, L): BOS, each text
        segment's tokens, ``image_tokens`` resampled embeddings per image, EOS; padded to the longest."""
        tok, device = self.tokenizer, self.positions.device
        images = [s for p in prompts for s in p if isinstance(s, ImageSegment)]
        image_embeds = iter(self.image_embeddings(images)) if images else iter(())
        rows, labels = [], []
        for prompt in prompts:
            pieces, ids = [self.tokens(torch.tensor([tok.bos_token_id], device=device))], [IGNORE]
            for seg in prompt:
                if isinstance(seg, ImageSegment):
                    pieces.append(next(image_embeds))
                    ids += [IGNORE] * self.config.image_tokens
                else:
                    t = tok(seg, add_special_tokens=False).input_ids
                    if t:
                        pieces.append(self.tokens(torch.tensor(t, device=device)))
                        ids += t
            pieces.append(self.tokens(torch.tensor([tok.eos_token_id], device=device)))
            ids.append(tok.eos_token_id)
            row = torch.cat(pieces)
            if len(row) > self.config.max_len:
                raise ValueError(f"source model: an interleaved prompt of {len(row)} positions; max_len is {self.config.max_len}")
            rows.append(row)
            labels.append(torch.tensor(ids, device=device))
        length = max(len(r) for r in rows)
        x = torch.zeros(len(rows), length, self.width, device=device)
        pad = torch.ones(len(rows), length, dtype=torch.bool, device=device)
        y = torch.full((len(rows), length), IGNORE, dtype=torch.long, device=device)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            x[i, :len(r)], pad[i, :len(r)], y[i, :len(r)] = r, False, lab
        return x + self.positions[:length], pad, y

    def hidden(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device), 1)
        return self.blocks(x, mask=causal, src_key_padding_mask=pad)

    def embed(self, prompts: Sequence[Sequence[Segment]]) -> tuple[torch.Tensor, torch.Tensor]:
        x, pad, _ = self.sequences(prompts)
        return self.hidden(x, pad), pad

    def lm_loss(self, prompts: Sequence[Sequence[Segment]]) -> torch.Tensor:
        """Stage 1: next-text-token cross-entropy (images are context, never predicted)."""
        x, pad, y = self.sequences(prompts)
        logits = self.lm_head(self.hidden(x, pad))
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1), ignore_index=IGNORE)


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)


def image_caption_prompt(pixels: np.ndarray, text: str) -> list[Segment]:
    """An image-caption pair as stage 1 reads it: the image, then its words (the LM predicts the words from the image)."""
    return [ImageSegment(pixels, "pair"), text]


def train_source_lm(source: TinySourceModel, captions: Sequence[str], steps: int, batch_size: int = 32, lr: float = 1e-3,
                    seed: int = 0, on_log=None, pairs: Sequence[tuple[np.ndarray, str]] = (),
                    pair_share: float = 0.5) -> dict:
    """Stage 1: the tiny source model's own language-model pretraining (its image tower stays frozen) on captions and,
    as KOSMOS-1 does, on image-caption ``pairs`` (``pair_share`` of each batch): predicting a garment's words from its
    image is what teaches S to carry the image's colour and type into the sequence AlignerNet reads. Returns the last
    step's loss; ``on_log(step, {"lm_loss": ...})`` after every step."""
    from training.kosmos.interleaved import parse

    if steps and not captions:
        raise ValueError("source model pretraining: no captions")
    if not 0 <= pair_share <= 1:
        raise ValueError(f"source model pretraining: pair_share {pair_share} is not a share (0..1)")
    params = [p for n, p in source.named_parameters() if not n.startswith("vision.")]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    n_pairs = round(batch_size * pair_share) if pairs else 0
    n_text = min(batch_size - n_pairs, len(captions))
    last: dict = {}
    source.train()
    for step in range(1, steps + 1):
        batch = [parse(captions[i]) for i in rng.choice(len(captions), n_text, replace=False)]
        batch += [image_caption_prompt(*pairs[i]) for i in rng.choice(len(pairs), min(n_pairs, len(pairs)), replace=False)]
        loss = source.lm_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = {"lm_loss": loss.item()}
        if on_log:
            on_log(step, last)
    source.eval()
    return last
