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


def encode_text(base: BaseModel, input_ids: torch.Tensor, input_ids_2: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict | None]:
    """Encoder hidden states for the UNet (SD 1.5: the text encoder's last layer; SDXL: both
    encoders' penultimate layers concatenated, plus encoder 2's pooled embedding and the size ids),
    as diffusers' pipelines compute them. SDXL needs ``input_ids_2`` from ``tokenizer_2``
    (it pads differently, so tokenizer 1's ids would give encoder 2 another context); ``size`` is
    the (h, w) of the images in pixels for SDXL's size ids (default the base's)."""
    device = next(base.text_encoder.parameters()).device
    if not base.is_sdxl:
        return base.text_encoder(input_ids.to(device))[0], None
    if input_ids_2 is None:
        raise ValueError("encode_text: an SDXL base needs input_ids_2 (the prompt tokenized by tokenizer_2)")
    out1 = base.text_encoder(input_ids.to(device), output_hidden_states=True)
    out2 = base.text_encoder_2(input_ids_2.to(device), output_hidden_states=True)
    hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    return hidden, {"text_embeds": out2.text_embeds, "time_ids": size_ids(base, input_ids.shape[0], hidden, size)}


def size_ids(base: BaseModel, batch: int, like: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop top-left (0, 0), target size."""
    h, w = size or base.image_size
    return torch.tensor([h, w, 0, 0, h, w], device=like.device, dtype=like.dtype).repeat(batch, 1)


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(list(prompts), padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids


def encode_prompts(base: BaseModel, prompts: Sequence[str], size: tuple[int, int] | None = None
                   ) -> tuple[torch.Tensor, dict | None]:
    """:func:`encode_text` of prompts, tokenized by each of the base's tokenizers."""
    return encode_text(base, tokenize(base.tokenizer, prompts), tokenize(base.tokenizer_2, prompts) if base.is_sdxl else None,
                       size)


def encode_batch(base: BaseModel, batch: dict) -> tuple[torch.Tensor, dict | None]:
    """:func:`encode_text` of a training or evaluation batch (``input_ids``, SDXL's ``input_ids_2``,
    size ids from its ``pixel_values``): the same conditioning in training as in sampling."""
    return encode_text(base, batch["input_ids"], batch.get("input_ids_2"), tuple(batch["pixel_values"].shape[-2:]))


def unconditional(base: BaseModel, n: int, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict | None]:
    """The classifier-free guidance branch: the encoded empty prompt, or zeros where the SDXL
    pipeline's ``force_zeros_for_empty_prompt`` says so (its real default)."""
    context, added = encode_prompts(base, [""] * n, size)
    if base.force_zeros_for_empty_prompt:
        context = torch.zeros_like(context)
        added = {**added, "text_embeds": torch.zeros_like(added["text_embeds"])}
    return context, added


@torch.no_grad()
def generate(base: BaseModel, unet, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int,
             steps: int = 25, guidance_scale: float = 4.0, batch_size: int = 8) -> np.ndarray:
    """(N, H, W, 3) uint8 images, one per (prompt, seed)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        batch, batch_seeds = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
        cond, added = encode_prompts(base, batch, (height, width))
        uncond, added_u = unconditional(base, len(batch), (height, width))
        out.append(sample_from_embeddings(base, unet, cond, uncond, batch_seeds, height, width, steps, guidance_scale,
                                          added, added_u))
    return np.concatenate(out) if out else np.zeros((0, height, width, 3), np.uint8)


def sample_from_embeddings(base: BaseModel, unet, cond: torch.Tensor, uncond: torch.Tensor, seeds: Sequence[int],
                           height: int, width: int, steps: int = 25, guidance_scale: float = 4.0,
                           added: dict | None = None, added_u: dict | None = None) -> np.ndarray:
    """DDIM with classifier-free guidance from given text conditioning (B, L, d) and its unconditional
    counterpart: what :func:`generate` does after encoding, and what a replaced text encoder (KOSMOS-G's
    aligned embeddings) feeds the same UNet. One image per seed."""
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    # from the directory's own config, as a diffusers pipeline builds its scheduler
    scheduler = DDIMScheduler.from_config(base.scheduler_config or base.scheduler.config)
    lh, lw = height // base.vae_scale, width // base.vae_scale
    context = torch.cat([uncond, cond]).to(device, dtype)
    extra = {"added_cond_kwargs": {k: torch.cat([added_u[k], added[k]]) for k in added}} if added else {}
    x = torch.stack([torch.randn(base.latent_channels, lh, lw, generator=torch.Generator().manual_seed(int(s)))
                     for s in seeds]).to(device, dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([x, x]), t)
        eps_u, eps_c = unet(inp, t, encoder_hidden_states=context, **extra).sample.chunk(2)
        x = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, x).prev_sample
    if base.vae is not None:
        x = base.vae.decode(x.to(base.vae.dtype) / base.vae.config.scaling_factor).sample
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * h, cols * w, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = im
    return grid
