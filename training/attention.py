"""Capturing cross-attention maps on chosen layers only (for HOLA and the pose/shape losses).

``install_capture(unet, store, levels|patterns)`` replaces the processor of the chosen
cross-attention layers (``attn2``) with :class:`CapturingAttnProcessor`; every other layer,
every self-attention included, keeps diffusers' fused scaled-dot-product processor. The
capturing processor computes softmax(QKᵀ/√d) explicitly — the only place that
materialises attention probabilities — uses them for the output, and hands the head-mean
map (B, HW, T) to the :class:`AttentionStore`. Nothing is cloned or detached: the maps stay
in the autograd graph, so the loss trains ``to_q``/``to_k`` of exactly these layers.

The store records only while ``store.recording`` is on. The trainer turns it on for the
forward pass and off before ``backward``, so a gradient-checkpointing recompute (which
calls the processor again during backward) never stores a second copy; ``clear()`` after
each step drops the maps, so nothing outlives the step.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


@dataclass
class CapturedMap:
    layer: str
    probs: torch.Tensor  # (B, H*W, T) head-mean attention probabilities
    height: int
    width: int


@dataclass
class AttentionStore:
    recording: bool = False
    maps: list[CapturedMap] = field(default_factory=list)
    latent_size: tuple[int, int] = (0, 0)  # (h, w) of the UNet input, to recover each layer's grid

    def add(self, layer: str, probs: torch.Tensor) -> None:
        if not self.recording:
            return
        h, w = self.latent_size
        factor = math.sqrt(h * w / probs.shape[1])
        self.maps.append(CapturedMap(layer, probs, int(round(h / factor)), int(round(w / factor))))

    def clear(self) -> None:
        self.maps = []

    def by_resolution(self) -> dict[tuple[int, int], torch.Tensor]:
        """Maps averaged over the layers that share a resolution: {(h, w): (B, T, h, w)}."""
        groups: dict[tuple[int, int], list[torch.Tensor]] = {}
        for m in self.maps:
            b, _, t = m.probs.shape
            groups.setdefault((m.height, m.width), []).append(m.probs.transpose(1, 2).reshape(b, t, m.height, m.width))
        return {k: torch.stack(v).mean(0) for k, v in groups.items()}


class CapturingAttnProcessor:
    """Cross-attention with explicit probabilities (see module docstring)."""

    def __init__(self, store: AttentionStore, name: str):
        self.store, self.name = store, name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        scores = query @ key.transpose(-1, -2) * (head_dim ** -0.5)
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            scores = scores + mask.view(batch, attn.heads, -1, mask.shape[-1])
        probs = scores.softmax(dim=-1)
        self.store.add(self.name, probs.mean(dim=1))
        hidden_states = (probs @ value).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


_LEVEL = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")


def layer_level(name: str, n_levels: int) -> int:
    """Resolution level of a processor name: 0 = full resolution, n_levels-1 = the coarsest."""
    m = _LEVEL.match(name)
    if m is None:
        raise ValueError(f"{name}: not a UNet attention processor name")
    if m.group(1) is None:
        return n_levels - 1
    i = int(m.group(2))
    return i if m.group(1) == "down_blocks" else n_levels - 1 - i


def default_levels(n_levels: int) -> list[int]:
    """The mid-resolution levels: all but the finest and the coarsest (SD 1.5: 32x32 and 16x16
    latents at 512 px; the tiny model: its middle level)."""
    return list(range(1, n_levels - 1)) or [n_levels - 1]


def select_layers(unet, levels: list[int] | None = None, patterns: list[str] | None = None) -> list[str]:
    """Cross-attention processor names chosen by glob ``patterns`` or by resolution ``levels``."""
    names = [n for n in unet.attn_processors if ".attn2." in n]
    if patterns:
        chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not chosen:
            raise ValueError(f"attention layer patterns {patterns} match no cross-attention layer (there are: {names[:4]}...)")
        return chosen
    n_levels = len(unet.config.block_out_channels)
    levels = default_levels(n_levels) if levels is None else levels
    chosen = [n for n in names if layer_level(n, n_levels) in set(levels)]
    if not chosen:
        raise ValueError(f"attention levels {levels}: no cross-attention layer at these levels")
    return chosen


def install_capture(unet, store: AttentionStore, levels: list[int] | None = None, patterns: list[str] | None = None) -> list[str]:
    """Capturing processors on the chosen layers, the fused processor everywhere else."""
    chosen = set(select_layers(unet, levels, patterns))
    unet.set_attn_processor({n: CapturingAttnProcessor(store, n) if n in chosen else AttnProcessor2_0()
                             for n in unet.attn_processors})
    return sorted(chosen)


def remove_capture(unet) -> None:
    unet.set_attn_processor(AttnProcessor2_0())


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, G, H, W) masks in [0, 1] to a captured grid, by area (soft edges, no aliasing)."""
    return F.adaptive_avg_pool2d(masks, size) if masks.shape[-2:] != size else masks
