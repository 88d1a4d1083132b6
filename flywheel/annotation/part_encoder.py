"""A part-crop encoder pretrained on the pool itself, without labels (SimCLR).

The flywheel buys few labels, so whatever the annotator learns about shapes (a shirt's collar, a
skirt's length, a face's build) must come from the unlabelled pool. Two augmented views of every
part crop (:mod:`crops`: RGB + the part's mask, 48 px) are pulled together and pushed away from
every other crop in the batch by the NT-Xent loss of SimCLR (Chen et al. 2020). The augmentations
move, scale and mirror the crop, blur it, add noise and, as in SimCLR, scramble its colours
(channels permuted, brightness and contrast changed, sometimes grey): colour alone would tell two
crops apart, so an encoder left with colours learns little else. Colour answers come from the
exact colour statistics the annotator reads beside the embedding; the encoder is for shapes
(a collar, a hem, a build).

The embedding the annotator reads is the encoder's last feature map pooled to a 2x2 grid (a
sleeve's length or a dress's hem is *where* the pixels are), taken before the projection head, as
SimCLR's linear evaluation does.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flywheel.annotation.settings import PretrainSettings


def _block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartEncoder(nn.Module):
    """(N, 4, S, S) crops in [0, 1] -> (N, width * grid * grid) embeddings; ``project`` is SimCLR's head."""

    def __init__(self, width: int = 64, grid: int = 2):
        super().__init__()
        self.body = nn.Sequential(_block(4, width // 4, 2), _block(width // 4, width // 2, 2), _block(width // 2, width, 2),
                                  _block(width, width, 1))
        self.grid = grid
        self.project = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.body(x), self.grid).flatten(1)

    def projected(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(x).mean((2, 3)))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random view of each crop: scale 0.75-1.15, shift up to 12%, mirror half, colours
    scrambled (:func:`scramble_colours`), blur a third, Gaussian noise (sigma up to 0.03)."""
    n = len(x)
    x = scramble_colours(x, gen)
    scale = torch.empty(n).uniform_(0.75, 1.15, generator=gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    shift = torch.empty(n, 2).uniform_(-0.12, 0.12, generator=gen)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    out = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    blur = torch.rand(n, generator=gen) < 0.33
    if blur.any():
        out[blur] = F.avg_pool2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), 3, 1)
    return out + torch.randn(out.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.03


def scramble_colours(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RGB channels permuted per crop, brightness x0.6-1.4, contrast x0.6-1.4 about the crop's mean,
    a quarter of the crops grey; the mask channel (the fourth) untouched."""
    n = len(x)
    perm = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    rgb = torch.gather(x[:, :3], 1, perm[:, :, None, None].expand(-1, -1, *x.shape[2:]))
    grey = torch.rand(n, generator=gen) < 0.25
    rgb = torch.where(grey[:, None, None, None], rgb.mean(1, keepdim=True).expand_as(rgb), rgb)
    mean = rgb.mean((1, 2, 3), keepdim=True)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    bright = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    rgb = ((rgb - mean) * contrast + mean) * bright
    return torch.cat([rgb.clamp(0, 1), x[:, 3:]], 1)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's positive is the other view of the same crop, among 2N - 1 candidates."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def present_crops(crops: np.ndarray) -> np.ndarray:
    """(M, 4, S, S) every crop of (N, P, 4, S, S) whose part is in the image (its mask is not empty)."""
    flat = crops.reshape(-1, *crops.shape[2:])
    return flat[flat[:, 3].reshape(len(flat), -1).max(1) > 0]


def pretrain_encoder(crops: np.ndarray, settings: PretrainSettings, log=None) -> tuple[PartEncoder, dict]:
    """A :class:`PartEncoder` trained by SimCLR on the present part crops of ``crops`` (N, P, 4, S, S)
    uint8; returns it (in eval mode) and a summary (crops, steps, first and last loss, seconds)."""
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    data = present_crops(crops)
    if len(data) > settings.max_crops:
        data = data[np.random.default_rng(settings.seed).choice(len(data), settings.max_crops, replace=False)]
    encoder = PartEncoder(settings.width, settings.grid)
    summary = {"crops": int(len(data)), "steps": settings.steps, "first_loss": float("nan"), "last_loss": float("nan")}
    if len(data) < 2 or settings.steps == 0:
        return encoder.eval(), summary
    opt = torch.optim.AdamW(encoder.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1)
    batch = min(settings.batch_size, len(data))
    encoder.train()
    t0, losses = time.perf_counter(), []
    for step in range(settings.steps):
        idx = torch.randint(len(data), (batch,), generator=gen).numpy()
        x = torch.from_numpy(data[idx]).float().div_(255.0)
        loss = nt_xent(encoder.projected(augment(x, gen)), encoder.projected(augment(x, gen)), settings.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % 100 == 0:
            log(f"part encoder step {step + 1}/{settings.steps}: loss {np.mean(losses[-100:]):.3f}")
    window = max(1, min(20, len(losses) // 4))
    summary.update(first_loss=float(np.mean(losses[:window])), last_loss=float(np.mean(losses[-window:])),
                   seconds=round(time.perf_counter() - t0, 1))
    return encoder.eval(), summary


@torch.inference_mode()
def embed(encoder: PartEncoder, crops: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(N, P, D) float32 embeddings of (N, P, 4, S, S) uint8 crops; an absent part's is zeros."""
    n, p = crops.shape[:2]
    flat = crops.reshape(n * p, *crops.shape[2:])
    out = np.zeros((n * p, encoder.project[0].in_features * encoder.grid ** 2), np.float32)
    present = np.flatnonzero(flat[:, 3].reshape(len(flat), -1).max(1) > 0) if len(flat) else np.zeros(0, np.int64)
    for i in range(0, len(present), batch_size):
        idx = present[i:i + batch_size]
        out[idx] = encoder(torch.from_numpy(flat[idx]).float().div_(255.0)).numpy()
    return out.reshape(n, p, -1)
