"""AlignerNet (KOSMOS-G Sec. 3.2): the source model's embedding sequence into the UNet's text space.

Given the source model's embeddings s (B, l_s, d_s) of a caption and the frozen CLIP text
encoder's last hidden state t (B, l_t, d_t) of the same caption, AlignerNet learns

    min ||M(s) - t||^2 + ||N(M(s)) - s||^2

with M and N Transformers that handle mismatched lengths and widths, built as the public
implementation builds them:

- encoder M: a linear projection d_s -> d with positions, a Transformer encoder over it, then a
  Transformer decoder whose l_t learned latent queries Q_M cross-attend to it (non-causal), and a
  linear d -> d_t (identity-sized in the paper, where d = d_t = 768);
- decoder N, the mirror: l_s of its learned queries Q_N (sliced to the source length, so N
  returns a sequence as long as its input was) cross-attend to M's output, a Transformer encoder
  over them, and a linear d -> d_s.

The reconstruction term keeps M from collapsing to a trivial alignment. As in the public code it
is weighted by l_t / l_s (so short and long sources weigh alike), and here it also ignores padded
source positions. Presets: ``tiny`` for this machine, ``paper`` (12 layers, width 768).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PRESETS = {
    "tiny": {"layers": 2, "width": 128, "heads": 4},
    "paper": {"layers": 12, "width": 768, "heads": 12},
}


@dataclass(frozen=True)
class AlignerConfig:
    source_dim: int  # d_s: the source model's embedding width
    target_dim: int  # d_t: the CLIP text encoder's hidden width
    target_len: int = 77  # l_t: SD's text length
    max_source_len: int = 1024  # longest interleaved sequence (Q_N and the positions have this many rows)
    layers: int = 2
    width: int = 128
    heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.0

    @classmethod
    def preset(cls, name: str, source_dim: int, target_dim: int, **overrides) -> "AlignerConfig":
        if name not in PRESETS:
            raise ValueError(f"AlignerNet preset {name!r}: expected one of {sorted(PRESETS)}")
        return cls(source_dim=source_dim, target_dim=target_dim, **{**PRESETS[name], **overrides})


def _encoder(c: AlignerConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(c.width, c.heads, c.ffn_mult * c.width, c.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, c.layers, norm=nn.LayerNorm(c.width), enable_nested_tensor=False)


def _decoder(c: AlignerConfig) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(c.width, c.heads, c.ffn_mult * c.width, c.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, c.layers, norm=nn.LayerNorm(c.width))


class AlignerNet(nn.Module):
    def __init__(self, config: AlignerConfig):
        super().__init__()
        c = self.config = config
        # M
        self.source_in = nn.Linear(c.source_dim, c.width)
        self.source_positions = nn.Parameter(torch.randn(c.max_source_len, c.width) * 0.02)
        self.source_encoder = _encoder(c)
        self.queries_m = nn.Parameter(torch.randn(c.target_len, c.width) * 0.02)
        self.to_target = _decoder(c)
        self.target_out = nn.Linear(c.width, c.target_dim)
        # N
        self.target_in = nn.Linear(c.target_dim, c.width)
        self.queries_n = nn.Parameter(torch.randn(c.max_source_len, c.width) * 0.02)
        self.to_source = _decoder(c)
        self.source_decoder = _encoder(c)
        self.source_out = nn.Linear(c.width, c.source_dim)

    def _check(self, source: torch.Tensor, padding_mask: torch.Tensor | None) -> None:
        c = self.config
        if source.dim() != 3 or source.shape[-1] != c.source_dim:
            raise ValueError(f"AlignerNet: source embeddings of shape (batch, length, {c.source_dim}) expected, got {tuple(source.shape)}")
        if not 0 < source.shape[1] <= c.max_source_len:
            raise ValueError(f"AlignerNet: a source sequence of length {source.shape[1]}; 1 to max_source_len "
                             f"{c.max_source_len} is supported")
        if padding_mask is not None and padding_mask.shape != source.shape[:2]:
            raise ValueError(f"AlignerNet: padding mask of shape {tuple(padding_mask.shape)} for source {tuple(source.shape[:2])}")

    def encode(self, source: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """M: (B, l_s, d_s) source (``padding_mask`` True at padded positions) -> (B, l_t, d_t)."""
        self._check(source, padding_mask)
        x = self.source_in(source) + self.source_positions[: source.shape[1]]
        memory = self.source_encoder(x, src_key_padding_mask=padding_mask)
        queries = self.queries_m.expand(source.shape[0], -1, -1)
        return self.target_out(self.to_target(queries, memory, memory_key_padding_mask=padding_mask))

    def decode(self, target: torch.Tensor, source_len: int) -> torch.Tensor:
        """N: (B, l_t, d_t) -> (B, source_len, d_s)."""
        if not 0 < source_len <= self.config.max_source_len:
            raise ValueError(f"AlignerNet: source_len {source_len}; 1 to max_source_len {self.config.max_source_len}")
        memory = self.target_in(target)
        queries = self.queries_n[:source_len].expand(target.shape[0], -1, -1)
        return self.source_out(self.source_decoder(self.to_source(queries, memory)))

    def forward(self, source: torch.Tensor, target: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict:
        """The two loss terms, their sum and M(s). ``target``: the CLIP text encoder's (B, l_t, d_t)."""
        c = self.config
        if target.shape[1:] != (c.target_len, c.target_dim):
            raise ValueError(f"AlignerNet: target of shape (batch, {c.target_len}, {c.target_dim}) expected, got {tuple(target.shape)}")
        aligned = self.encode(source, padding_mask)
        mse = F.mse_loss(aligned.float(), target.float())
        rebuilt = self.decode(aligned, source.shape[1])
        keep = torch.ones(source.shape[:2], dtype=torch.bool, device=source.device) if padding_mask is None else ~padding_mask
        err = ((rebuilt.float() - source.float()) ** 2).mean(-1)
        rec = (err * keep).sum() / keep.sum().clamp(min=1) * (c.target_len / source.shape[1])
        return {"mse": mse, "rec": rec, "loss": mse + rec, "aligned": aligned}


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Share of the target's variance (around its per-feature mean) the prediction explains."""
    t = target.float().reshape(-1, target.shape[-1])
    p = predicted.float().reshape(-1, target.shape[-1])
    return float(1 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum().clamp(min=1e-12))
