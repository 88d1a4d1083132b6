"""Stage 2's critics and WGAN-GP (paper Eqs. 9-13, Appendix A).

A critic is a convolutional patch critic over a one-channel attention map (default 11
convolutions as the paper's appendix; no batch normalisation, which would break the
per-sample gradient penalty; dropout, which the appendix adds to keep it from overpowering
the generator). Its score is the mean of its patch outputs.

Critic loss (Eq. 9): mean D(fake) − mean D(real) + λ·GP, fakes detached, GP from per-sample
interpolations computed in fp32. Label flipping: for each sample, with probability p, the
roles of its real and fake maps are swapped in the critic loss (that sample contributes
D(real) − D(fake)); the gradient penalty is unaffected. Generator loss (Eqs. 11-13):
−mean D(fake) per critic, critic parameters frozen.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchCritic(nn.Module):
    def __init__(self, layers: int = 11, width: int = 32, dropout: float = 0.2):
        super().__init__()
        if layers < 2:
            raise ValueError("a critic needs at least 2 layers")
        mods: list[nn.Module] = []
        cin = 1
        for i in range(layers - 1):
            cout = min(width * 2 ** (i // 3), width * 4)
            stride = 2 if i % 3 == 2 else 1  # downsample every third layer: patch-level outputs
            mods += [nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2), nn.Dropout2d(dropout)]
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, H, W) or (B, 1, H, W) -> (B,) mean patch score."""
        if maps.ndim == 3:
            maps = maps[:, None]
        return self.net(maps).flatten(1).mean(1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||∇D(x̂)||₂ − 1)²] over per-sample interpolations x̂, in fp32."""
    real, fake = real.float(), fake.float()
    eps = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with torch.autocast(device_type=real.device.type, enabled=False):
        score = critic(x)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float = 10.0,
                flip_prob: float = 0.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    fake = fake.detach()
    d_real, d_fake = critic(real), critic(fake)
    flip = (torch.rand(real.shape[0], generator=generator) < flip_prob).to(real.device) if flip_prob > 0 \
        else torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    per_sample = torch.where(flip, d_real - d_fake, d_fake - d_real)
    gp = gradient_penalty(critic, real, fake)
    return {"loss": per_sample.mean() + gp_weight * gp, "gp": gp, "wasserstein": (d_real - d_fake).mean(),
            "d_real": d_real.mean(), "d_fake": d_fake.mean(), "flipped": flip.float().mean()}


def generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """−mean D(fake), with the critic's parameters frozen (gradients reach only the maps)."""
    was = [p.requires_grad for p in critic.parameters()]
    for p in critic.parameters():
        p.requires_grad_(False)
    try:
        return -critic(fake).mean()
    finally:
        for p, w in zip(critic.parameters(), was):
            p.requires_grad_(w)
