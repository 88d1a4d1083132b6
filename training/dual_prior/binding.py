"""Stage 1's supervision: masks, token selection and the binding losses (paper Eqs. 2-8).

Every captured map of a supervised token is upsampled to one fixed size and divided by its
spatial maximum (so it can reach a binary mask's scale). For a map M̂ and its mask M:

- suppression (Eq. 2): activation outside the mask, Σ M̂·1(M=0), divided here by the number
  of pixels so that the weight does not depend on the map size;
- margin (Eqs. 3-5): the paper writes max(0, f − g + δ) with f the minimum inside and g the
  maximum outside, which penalises a *large* inside minimum — the opposite of its stated
  intent ("human-related activation at least larger than non-human-related activation").
  We implement the intent, max(0, g − f + δ): inside must exceed outside by δ;
- scale (Eq. 6): (1/HW)·||M̂ − M||².

L_bind = L_s + L_margin + L_scale for shape (human tokens vs the person mask M_shape) and
for pose (the pose token vs the skeleton mask M_pose), computed per map and averaged over the
supervised maps (every selected token at every captured resolution: :func:`supervised_maps`), then
over samples. Averaging the maps first and normalising once (:func:`token_maps`) is a different loss:
one token's strong map would hide another's leak. The critics and the IoU read the averaged map.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# COCO-17 skeleton: pairs of keypoint indices joined by a line
COCO_LIMBS = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
              (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
HUMAN_WORDS = ("man", "woman", "person", "girl", "boy", "child", "people", "lady", "guy", "kid")


def skeleton_mask(keypoints, height: int, width: int, source_size: tuple[int, int], thickness: int = 2) -> np.ndarray:
    """(height, width) float32 mask of lines between adjacent visible COCO keypoints.
    ``keypoints``: 51 floats (x, y, v) in pixels of an image of ``source_size`` (h, w)."""
    mask = np.zeros((height, width), np.uint8)
    if keypoints is None or len(keypoints) < 51:
        return mask.astype(np.float32)
    k = np.asarray(keypoints, np.float32).reshape(17, 3)
    sy, sx = height / source_size[0], width / source_size[1]
    for a, b in COCO_LIMBS:
        if k[a, 2] > 0 and k[b, 2] > 0:
            cv2.line(mask, (int(round(k[a, 0] * sx)), int(round(k[a, 1] * sy))),
                     (int(round(k[b, 0] * sx)), int(round(k[b, 1] * sy))), 1, thickness)
    return mask.astype(np.float32)


def flip_keypoints(keypoints, width: int) -> list[float] | None:
    """Mirror COCO keypoints horizontally, swapping left and right joints."""
    if keypoints is None or len(keypoints) < 51:
        return keypoints
    k = np.asarray(keypoints, np.float32).reshape(17, 3).copy()
    k[:, 0] = np.where(k[:, 2] > 0, width - 1 - k[:, 0], k[:, 0])
    order = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    return k[order].reshape(-1).tolist()


def token_maps(maps: dict[tuple[int, int], torch.Tensor], token_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mean over the selected tokens and the captured resolutions of their maps, upsampled to
    ``size`` and max-normalised: (B, H, W). ``token_mask``: (B, T) bool."""
    w = token_mask.to(next(iter(maps.values())).dtype)
    acc = None
    for m in maps.values():
        sel = torch.einsum("bthw,bt->bhw", m, w) / w.sum(1).clamp(min=1)[:, None, None]
        up = F.interpolate(sel[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        acc = up if acc is None else acc + up
    acc = acc / len(maps)
    return acc / (acc.flatten(1).amax(1)[:, None, None] + 1e-6)


def supervised_maps(maps: dict[tuple[int, int], torch.Tensor], token_mask: torch.Tensor, size: tuple[int, int]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every captured map of every selected token, each upsampled to ``size`` and divided by its
    own maximum: ((B, K, H, W) maps, (B, K) bool which are selected), K = tokens x resolutions.
    Only the tokens selected somewhere in the batch are kept, so K stays small."""
    cols = token_mask.any(0).nonzero()[:, 0]
    out, valid = [], []
    for m in maps.values():
        up = F.interpolate(m[:, cols], size=size, mode="bilinear", align_corners=False)
        out.append(up / (up.flatten(2).amax(2)[..., None, None] + 1e-6))
        valid.append(token_mask[:, cols])
    return torch.cat(out, 1), torch.cat(valid, 1)


def suppression_loss(m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (m * (mask < 0.5)).flatten(-2).mean(-1)


def margin_loss(m: torch.Tensor, mask: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    mask = mask.expand_as(m)
    inside, outside = mask >= 0.5, mask < 0.5
    f = torch.where(inside, m, torch.full_like(m, float("inf"))).flatten(-2).amin(-1)
    g = torch.where(outside, m, torch.full_like(m, float("-inf"))).flatten(-2).amax(-1)
    ok = inside.flatten(-2).any(-1) & outside.flatten(-2).any(-1)
    return torch.where(ok, F.relu(g - f + delta), torch.zeros_like(f))


def scale_loss(m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((m - mask) ** 2).flatten(-2).mean(-1)


def bind_loss(m: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor, delta: float = 0.1,
              map_valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The three terms and their sum: per map, averaged over each sample's maps (``m`` (B, K, H, W)
    with ``map_valid`` (B, K), or one map per sample (B, H, W)), then over samples with ``valid``
    (a token and a mask). ``mask``: (B, H, W)."""
    if m.dim() == 3:
        m, map_valid = m[:, None], torch.ones(m.shape[0], 1, dtype=torch.bool, device=m.device)
    per_map = map_valid.to(m.dtype)
    count = per_map.sum(1)
    v = valid.to(m.dtype) * (count > 0)
    n = v.sum().clamp(min=1)
    mask = mask[:, None]
    terms = {"suppress": suppression_loss(m, mask), "margin": margin_loss(m, mask, delta), "scale": scale_loss(m, mask)}
    out = {k: ((t * per_map).sum(1) / count.clamp(min=1) * v).sum() / n for k, t in terms.items()}
    out["total"] = out["suppress"] + out["margin"] + out["scale"]
    return out
