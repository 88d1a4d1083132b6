"""The embedded base's ``AutoencoderKL``: small, trained on the corpus at the model's size.

SD's VAE is trained with perceptual and adversarial terms on LAION; this one learns an
L1 + MSE reconstruction with a light KL term on random crops of the corpus renders, which is enough for
flat-shaded figures. Its ``scaling_factor`` is set, as SD's 0.18215 was, to 1 / std of
the latents, so the UNet sees unit-variance inputs. :func:`encode_corpus` caches the
latent distribution's mean and std once; each UNet epoch samples from them.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from training.pretrain.settings import VaeSettings


def build_vae(s: VaeSettings, height: int) -> AutoencoderKL:
    n = len(s.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=s.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=s.block_out_channels, layers_per_block=1, norm_num_groups=s.norm_num_groups,
                         sample_size=height)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_crops(x: torch.Tensor, crop: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    (ch, cw), (h, w) = crop, x.shape[-2:]
    ys = torch.randint(0, h - ch + 1, (len(x),), generator=generator)
    xs = torch.randint(0, w - cw + 1, (len(x),), generator=generator)
    return torch.stack([im[:, y:y + ch, q:q + cw] for im, y, q in zip(x, ys.tolist(), xs.tolist())])


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    l1, mse = (recon - x).abs().mean(), ((recon - x) ** 2).mean()
    kl = posterior.kl().mean() / x[0].numel()
    loss = l1 + mse + kl_weight * kl
    return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def train_vae_steps(vae: AutoencoderKL, optimizer, images: np.ndarray, s: VaeSettings, start: int, stop: int,
                    generator: torch.Generator, on_log=None) -> None:
    vae.train()
    for step in tqdm(range(start, stop), desc="vae", initial=start, total=s.steps):
        idx = torch.randint(0, len(images), (s.batch_size,), generator=generator).numpy()
        x = random_crops(to_tensor(images[idx]), s.crop, generator)
        flip = torch.rand(len(idx), generator=generator) < 0.5
        x[flip] = x[flip].flip(-1)
        loss, logs = vae_loss(vae, x, s.kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if on_log:
            on_log(step + 1, logs)


@torch.no_grad()
def encode_corpus(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent mean and std (unscaled) of every image and of its mirror: (N, 2, C, h, w) each, float16."""
    vae.eval()
    means, stds = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="encoding latents"):
        x = to_tensor(images[i:i + batch_size])
        pair = []
        for view in (x, x.flip(-1)):
            dist = vae.encode(view).latent_dist
            pair.append((dist.mean, dist.std))
        means.append(torch.stack([p[0] for p in pair], 1).half().numpy())
        stds.append(torch.stack([p[1] for p in pair], 1).half().numpy())
    return np.concatenate(means), np.concatenate(stds)


def latent_scaling_factor(means: np.ndarray, stds: np.ndarray) -> float:
    """1 / std of sampled latents (SD computed its 0.18215 the same way)."""
    m = means[:, 0].astype(np.float32)
    var = m.var() + (stds[:, 0].astype(np.float32) ** 2).mean()
    return float(1.0 / np.sqrt(var))
