"""The denoising objective, by the scheduler's prediction type (epsilon as SD 1.5 and the
embedded tiny model, v as SD 2.x, or the clean sample), and its Min-SNR-γ weighting."""

from __future__ import annotations

import torch


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return alphas / (1 - alphas)


def denoising_target(scheduler, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts, by the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x, noise, t)
    if kind == "sample":
        return x
    raise ValueError(f"scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023) for the scheduler's prediction type: the
    x0-error weight min(SNR, γ), expressed in the loss being weighted."""
    snr_t = snr(scheduler, t)
    clipped = torch.minimum(snr_t, torch.full_like(snr_t, gamma))
    kind = scheduler.config.prediction_type
    return clipped / snr_t if kind == "epsilon" else clipped / (snr_t + 1) if kind == "v_prediction" else clipped
