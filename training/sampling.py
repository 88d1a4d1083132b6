"""Generating images from a base model and a (fine-tuned) UNet, with or without a VAE.

Used for validation samples, the registered MLflow model and evaluation. DDIM sampling
with classifier-free guidance; a model without a VAE samples in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler

from training.base_model import BaseModel


def encode_text(base: BaseModel, input_ids: torch.Tensor, input_ids_2: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict | None]:
    """Encoder hidden states for the UNet (SD 1.5: the text encoder's last layer; SDXL: both
    encoders' penultimate layers concatenated, plus pooled embeddings and size ids)."""
    device = next(base.text_encoder.parameters()).device
    if not base.is_sdxl:
        return base.text_encoder(input_ids.to(device))[0], None
    out1 = base.text_encoder(input_ids.to(device), output_hidden_states=True)
    out2 = base.text_encoder_2((input_ids_2 if input_ids_2 is not None else input_ids).to(device), output_hidden_states=True)
    hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    b = input_ids.shape[0]
    h, w = base.image_size
    size = torch.tensor([h, w, 0, 0, h, w], device=device, dtype=hidden.dtype)
    return hidden, {"text_embeds": out2.text_embeds, "time_ids": size.repeat(b, 1)}


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(list(prompts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


@torch.no_grad()
def generate(base: BaseModel, unet, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int,
             steps: int = 25, guidance_scale: float = 4.0, batch_size: int = 8) -> np.ndarray:
    """(N, H, W, 3) uint8 images, one per (prompt, seed)."""
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    scheduler = DDIMScheduler.from_config(base.scheduler.config)
    out = []
    lh, lw = height // base.vae_scale, width // base.vae_scale
    for i in range(0, len(prompts), batch_size):
        batch, batch_seeds = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
        cond, added = encode_text(base, tokenize(base.tokenizer, batch),
                                  tokenize(base.tokenizer_2, batch) if base.is_sdxl else None)
        uncond, added_u = encode_text(base, tokenize(base.tokenizer, [""] * len(batch)),
                                      tokenize(base.tokenizer_2, [""] * len(batch)) if base.is_sdxl else None)
        context = torch.cat([uncond, cond]).to(dtype)
        extra = {"added_cond_kwargs": {k: torch.cat([added_u[k], added[k]]) for k in added}} if added else {}
        x = torch.stack([torch.randn(base.latent_channels, lh, lw, generator=torch.Generator().manual_seed(int(s)))
                         for s in batch_seeds]).to(device, dtype) * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(torch.cat([x, x]), t)
            eps_u, eps_c = unet(inp, t, encoder_hidden_states=context, **extra).sample.chunk(2)
            x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
        if base.vae is not None:
            x = base.vae.decode(x.to(base.vae.dtype) / base.vae.config.scaling_factor).sample
        out.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, height, width, 3), np.uint8)


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * h, cols * w, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = im
    return grid
