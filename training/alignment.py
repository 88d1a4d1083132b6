"""Attention-mask alignment: how well each caption group's attention lands on its mask.

For held-out samples, one denoising forward at a fixed timestep with the capturing
processor on the chosen layers; per masked group, the mean of its tokens' normalised maps
(upsampled to the mask grid) keeps its k most attended pixels, k the mask's pixel count, and
that region's IoU with the mask is the score. (A fixed threshold on max-normalised maps would
reward a flat map: it selects the whole image and scores the mask's area share.) The
same measure serves training reports and evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from training.attention import AttentionStore, install_capture, remove_capture
from training.base_model import BaseModel
from training.data import collate
from training.hola import normalise_maps
from training.sampling import encode_batch


def topk_iou(attention: np.ndarray, mask: np.ndarray) -> float:
    """IoU between the mask and the ``mask.sum()`` most attended pixels (ties broken by position)."""
    k = int(mask.sum())
    if k == 0:
        return float("nan")
    chosen = np.zeros(attention.size, bool)
    chosen[np.argsort(-attention.reshape(-1), kind="stable")[:k]] = True
    inter = np.logical_and(chosen, mask.reshape(-1)).sum()
    return float(inter / (2 * k - inter))


@torch.no_grad()
def captured_maps(base: BaseModel, unet, batch: dict, store: AttentionStore, timestep: int = 300, seed: int = 0
                  ) -> dict[tuple[int, int], torch.Tensor]:
    """One denoising forward of a batch's real images noised to ``timestep`` (fixed noise), conditioned
    as in training: the captured maps by resolution (see :meth:`AttentionStore.by_resolution`)."""
    device = next(unet.parameters()).device
    x = batch["pixel_values"].to(device)
    if base.vae is not None:
        x = base.vae.encode(x).latent_dist.mean * base.vae.config.scaling_factor
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    t = torch.full((x.shape[0],), timestep, device=device, dtype=torch.long)
    context, added = encode_batch(base, batch)
    store.clear()
    store.latent_size = tuple(x.shape[-2:])
    store.recording = True
    unet(base.scheduler.add_noise(x, noise, t), t, encoder_hidden_states=context,
         **({"added_cond_kwargs": added} if added else {}))
    store.recording = False
    maps = store.by_resolution()
    store.clear()
    return maps


@torch.no_grad()
def group_maps(base: BaseModel, unet, batch: dict, store: AttentionStore, timestep: int = 300, seed: int = 0
               ) -> torch.Tensor:
    """(B, G, H, W) mean normalised attention map per group, at the masks' resolution."""
    maps = captured_maps(base, unet, batch, store, timestep, seed)
    device = next(unet.parameters()).device
    masks = batch["masks"].to(device)
    g = masks.shape[1]
    member = ((batch["token_group"].to(device)[..., None] == torch.arange(g, device=device)) & batch["group_valid"].to(device)[:, None]).float()
    acc = torch.zeros_like(masks)
    for m in maps.values():
        m = F.interpolate(normalise_maps(m.float()), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        acc += torch.einsum("bthw,btg->bghw", m, member) / member.sum(1).clamp(min=1)[..., None, None]
    return acc / max(1, len(maps))


def attention_iou(base: BaseModel, unet, dataset, levels=None, patterns=None, batch_size: int = 16,
                  limit: int | None = None) -> dict:
    """Mean IoU over every valid (sample, group), with a bootstrap 95% interval over samples (a sample's
    groups share its maps, so samples are resampled, not groups); also split into the body group and
    the outfit groups."""
    store = AttentionStore()
    install_capture(unet, store, levels, patterns)
    body, outfit, sample_of = [], [], []
    try:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        for i in range(0, n, batch_size):
            batch = collate([dataset[j] for j in range(i, min(n, i + batch_size))])
            maps = group_maps(base, unet, batch, store)
            pred = maps.cpu().numpy()
            masks = batch["masks"].numpy() > 0.5
            valid = batch["group_valid"].numpy() & (batch["token_group"].numpy()[:, :, None] == np.arange(masks.shape[1])).any(1)
            for b, g in zip(*np.nonzero(valid)):
                v = topk_iou(pred[b, g], masks[b, g])
                (body if g == 0 else outfit).append(v)
                sample_of.append((i + int(b), v))
    finally:
        remove_capture(unet)
    every = body + outfit
    out = {"iou": float(np.mean(every)) if every else float("nan"), "iou_body": float(np.mean(body)) if body else float("nan"),
           "iou_outfit": float(np.mean(outfit)) if outfit else float("nan"), "groups": len(every)}
    if sample_of:
        out["iou_ci_low"], out["iou_ci_high"] = sample_bootstrap_interval(sample_of)
    return out


def sample_bootstrap_interval(values: list[tuple[int, float]], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of (sample, value) pairs, resampling samples with all their values."""
    ids = sorted({s for s, _ in values})
    index = {s: k for k, s in enumerate(ids)}
    sums, counts = np.zeros(len(ids)), np.zeros(len(ids))
    for s, v in values:
        sums[index[s]] += v
        counts[index[s]] += 1
    draw = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))
    means = sums[draw].sum(1) / counts[draw].sum(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
