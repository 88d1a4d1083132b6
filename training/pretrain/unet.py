"""The embedded base's latent ``UNet2DConditionModel``, trained on the cached corpus latents.

SD 1.5's recipe at small scale: the text encoder frozen, epsilon prediction, 10% of
captions dropped for classifier-free guidance, Min-SNR-5 loss weighting (faster
convergence at no cost per step) and an EMA of the weights, which is what is saved.
``UnetSettings.text_encoder_lr`` trains the text encoder too (its own EMA), as small
from-scratch text-to-image models do when no large pretrained encoder exists.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from tqdm import tqdm

from training.denoising import denoising_target, min_snr_weights
from training.pretrain.clip import ContrastiveTerm, hidden_state_distance
from training.pretrain.settings import UnetSettings


def build_unet(s: UnetSettings, latent_channels: int, latent_size: tuple[int, int], cross_attention_dim: int
               ) -> UNet2DConditionModel:
    extra = {}
    if s.text_time_embedding:
        extra = {"addition_embed_type": "text", "addition_embed_type_num_heads": s.text_time_embedding_heads}
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=s.down_block_types, up_block_types=s.up_block_types, block_out_channels=s.block_out_channels,
        layers_per_block=s.layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=s.attention_heads,  # diffusers' SD-era name for the number of heads
        norm_num_groups=math.gcd(32, *s.block_out_channels), **extra)
    zero_init_text_time_embedding(unet)
    return unet


def zero_init_text_time_embedding(unet: UNet2DConditionModel) -> None:
    """Start the pooled-prompt path at zero (its last LayerNorm's gain and bias): the UNet first
    behaves as one without it, so the path can be added to a trained UNet without disturbing it."""
    emb = getattr(unet, "add_embedding", None)
    if emb is not None and hasattr(emb, "norm2"):
        with torch.no_grad():
            emb.norm2.weight.zero_()
            emb.norm2.bias.zero_()


def grow_unet(trained: UNet2DConditionModel, s: UnetSettings) -> UNet2DConditionModel:
    """``trained``'s weights in a UNet built from ``s``, which may add the pooled-prompt path (zero-initialised);
    any other difference is an error naming the weights that do not fit."""
    c = trained.config
    unet = build_unet(s, c.in_channels, tuple(c.sample_size), c.cross_attention_dim)
    weights, wanted = trained.state_dict(), unet.state_dict()
    for name, p in wanted.items():  # before loading: load_state_dict raises a bare RuntimeError on a shape
        if name in weights and p.shape != weights[name].shape:
            raise ValueError(f"the trained UNet does not fit the settings: {name} has shape "
                             f"{tuple(weights[name].shape)}, the settings give {tuple(p.shape)}")
    result = unet.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("add_embedding.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"the trained UNet does not fit the settings: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return unet


def build_scheduler(s: UnetSettings) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=s.beta_schedule, prediction_type=s.prediction_type,
                         clip_sample=False)


class Ema:
    """Exponential moving average of the UNet's weights, with the usual warm-up."""

    def __init__(self, model: torch.nn.Module, decay: float, step: int = 0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.step = decay, step

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)


def unet_optimizer(unet: torch.nn.Module, text_encoder: torch.nn.Module, s: UnetSettings,
                   contrast: ContrastiveTerm | None = None) -> torch.optim.AdamW:
    """AdamW over the UNet, over the text encoder (a second group) when it is trained too, and over the
    contrastive term's vision tower and projections (a third) when that is kept beside it."""
    groups = [{"params": list(unet.parameters()), "lr": s.lr}]
    if s.text_encoder_lr:
        groups.append({"params": list(text_encoder.parameters()), "lr": s.text_encoder_lr})
        if contrast is not None:
            groups.append({"params": contrast.parameters(), "lr": s.text_encoder_lr})
    return torch.optim.AdamW(groups, lr=s.lr, weight_decay=1e-2)


# the prompt pairs whose hidden states drifted together under the diffusion loss alone (logged as they train)
SHOT_PROBE = (["headshot of a man wearing a red t-shirt", "headshot of a woman wearing a blue t-shirt"],
              ["upper-body shot of a man wearing a red t-shirt", "upper-body shot of a woman wearing a blue t-shirt"])


def lr_factor(s: UnetSettings, step: int, started: int) -> float:
    """The learning rate of ``step`` as a share of the configured one: a linear warm-up over ``s.warmup_steps``
    from ``started`` (the step the optimizer's moments started at), then constant or a cosine decay to
    ``s.min_lr_ratio`` at step ``s.steps - 1``."""
    warm = min(1.0, (step - started + 1) / max(1, s.warmup_steps))
    if s.lr_schedule == "constant":
        return warm
    span = max(1, s.steps - 1 - started - s.warmup_steps)
    done = min(1.0, max(0.0, (step - started - s.warmup_steps) / span))
    return warm * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done)))


def train_unet_steps(unet, ema: Ema, optimizer, text_encoder, tokenizer, scheduler: DDPMScheduler,
                     means: np.ndarray, stds: np.ndarray, captions: list[str], scaling_factor: float, s: UnetSettings,
                     start: int, stop: int, generator: torch.Generator, on_log=None, text_ema: Ema | None = None,
                     warmup_from: int = 0, contrast: ContrastiveTerm | None = None) -> None:
    """Steps ``start``..``stop`` of UNet training; ``means``/``stds``: (N, 2, C, h, w) latents of each image and its mirror.
    With ``s.text_encoder_lr`` the text encoder is trained as well and ``text_ema`` follows it. The learning rate
    warms up over ``s.warmup_steps`` from ``warmup_from``, the step the optimizer's moments started at.
    ``contrast`` adds ``contrast.weight`` times CLIP's loss on the same images (text encoder trained only)."""
    joint = bool(s.text_encoder_lr)
    if joint and text_ema is None:
        raise ValueError("text_encoder_lr is set: the text encoder's EMA (text_ema) is required")
    if contrast is not None and not joint:
        raise ValueError("a contrastive term needs the text encoder trained (text_encoder_lr)")
    unet.train()
    text_encoder.train(joint).requires_grad_(joint)
    if contrast is not None:
        contrast.train(True)
    base_lrs = [s.lr, s.text_encoder_lr, s.text_encoder_lr][:len(optimizer.param_groups)]
    lr_share = lambda step: lr_factor(s, step, warmup_from)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for step in tqdm(range(start, stop), desc="unet", initial=start, total=s.steps):
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * lr_share(step)
        idx = torch.randint(0, len(means), (s.batch_size,), generator=generator).numpy()
        view = torch.randint(0, 2, (s.batch_size,), generator=generator).numpy()
        mean = torch.from_numpy(means[idx, view].astype(np.float32))
        std = torch.from_numpy(stds[idx, view].astype(np.float32))
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor
        dropped = torch.tensor([torch.rand(1, generator=generator).item() < s.caption_dropout for _ in idx])
        texts = ["" if d else captions[i] for d, i in zip(dropped.tolist(), idx)]
        ids = tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        with torch.set_grad_enabled(joint):
            encoded = text_encoder(ids)
            context = encoded[0]
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (s.batch_size,), generator=generator)
        noisy = scheduler.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=context).sample
        target = denoising_target(scheduler, latents, noise, t)
        per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        if s.snr_gamma:
            per_sample = per_sample * min_snr_weights(scheduler, t, s.snr_gamma)
        loss = per_sample.mean()
        metrics = {"loss": loss.item(), "lr": s.lr * lr_share(step)}
        if contrast is not None:
            clip_loss = contrast.loss(encoded.pooler_output, idx, ~dropped)
            metrics["clip_loss"] = clip_loss.item()
            loss = loss + contrast.weight * clip_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(unet)
        if joint:
            text_ema.update(text_encoder)
        if on_log:
            if joint and (step + 1) % 100 == 0:
                metrics["headshot_upper_body_distance"] = hidden_state_distance(text_encoder, tokenizer, *SHOT_PROBE)
            on_log(step + 1, metrics)
    text_encoder.eval().requires_grad_(False)
    if contrast is not None:
        contrast.train(False)
