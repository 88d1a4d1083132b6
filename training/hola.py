"""HOLA, CosmicMan's Human body and Outfit guided Loss for Alignment (paper Eq. 5).

    L_HOLA = 1/N Σ_i ( Σ_{j∈g_i} ||m_j − h_i||² + || mean_{j∈g_i} m_j − h_i ||² )

for the N groups of a caption that have a mask (the body group h_1 and one outfit group
per garment); m_j is token j's cross-attention map, h_i the group's mask at the map's
resolution. Choices the paper leaves open, made here:

- Maps are each token's softmax probabilities over tokens, head-averaged, divided by their
  spatial maximum, so a map can equal a binary mask (raw probabilities are shared between
  tokens and cannot all reach 1 on the same pixels).
- ||·||² is the mean over pixels, not the sum, so resolutions weigh the same; the loss is
  averaged over the captured resolutions.
- Group weighting: every valid group of a sample weighs 1/N (as Eq. 5); samples weigh equally.
  The group mean uses 1/n over its n tokens (Eq. 5's 1/(e−s) counts one fewer).
- Tokens outside every masked group never enter: the start-of-text token (which takes most
  of the attention in CLIP-conditioned UNets and means nothing spatially), the "other"
  group (scene phrases, no mask), padding and end tokens.
- A sample without valid groups (caption dropped for classifier-free guidance, or every
  group empty) contributes 0 and does not count in the batch mean; an all-empty batch gives 0.
"""

from __future__ import annotations

import torch

from training.attention import resize_masks


def normalise_maps(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, T, h, w) probabilities -> each token's map divided by its spatial maximum."""
    return maps / (maps.flatten(2).amax(-1)[..., None, None] + eps)


def hola_loss(maps: dict[tuple[int, int], torch.Tensor], masks: torch.Tensor, token_group: torch.Tensor,
              group_valid: torch.Tensor) -> torch.Tensor:
    """``maps``: {(h, w): (B, T, h, w)} attention probabilities (see :meth:`AttentionStore.by_resolution`);
    ``masks``: (B, G, H, W) group masks; ``token_group``: (B, T) the group index of each token, -1 for
    none; ``group_valid``: (B, G) which mask slots hold a group."""
    if not maps:
        return masks.new_zeros(())
    g = masks.shape[1]
    member = (token_group[..., None] == torch.arange(g, device=token_group.device)) & group_valid[:, None, :]
    member = member.to(masks.dtype)  # (B, T, G)
    n_tokens = member.sum(1)  # (B, G)
    valid = (n_tokens > 0).to(masks.dtype)
    n_groups = valid.sum(1)  # (B,)
    has_groups = (n_groups > 0).to(masks.dtype)
    total = masks.new_zeros(())
    for size, m in maps.items():
        m = normalise_maps(m.to(masks.dtype))
        h = resize_masks(masks, size)  # (B, G, h, w)
        tok_mask = torch.einsum("btg,bghw->bthw", member, h)  # each token's own group mask (zeros for none)
        per_token = ((m - tok_mask) ** 2).mean((-1, -2))  # (B, T)
        term1 = torch.einsum("bt,btg->bg", per_token, member)
        mean_map = torch.einsum("bthw,btg->bghw", m, member) / n_tokens.clamp(min=1)[..., None, None]
        term2 = ((mean_map - h) ** 2).mean((-1, -2)) * valid
        per_sample = (term1 + term2).sum(1) / n_groups.clamp(min=1)
        total = total + (per_sample * has_groups).sum() / has_groups.sum().clamp(min=1)
    return total / len(maps)
