"""How well the human tokens' maps cover the person and the pose token's maps the skeleton:
the IoU of each mask with the same number of most attended pixels (see training.alignment)."""

from __future__ import annotations

import numpy as np
import torch

from training.alignment import captured_maps, topk_iou
from training.attention import AttentionStore, install_capture, remove_capture
from training.dual_prior.binding import token_maps
from training.dual_prior.data import collate_dual


@torch.no_grad()
def prior_iou(base, unet, dataset, levels=None, timestep: int = 300, batch_size: int = 8, seed: int = 0) -> dict[str, float]:
    store = AttentionStore()
    install_capture(unet, store, levels)
    shape_iou, pose_iou = [], []
    try:
        for i in range(0, len(dataset), batch_size):
            batch = collate_dual([dataset[j] for j in range(i, min(len(dataset), i + batch_size))])
            maps = captured_maps(base, unet, batch, store, timestep, seed + i)
            size = tuple(batch["shape_mask"].shape[-2:])
            shape = token_maps(maps, batch["human_tokens"], size).numpy()
            pose = token_maps(maps, batch["pose_tokens"], size).numpy()
            for b in range(len(batch["caption"])):
                if batch["human_tokens"][b].any() and batch["shape_mask"][b].any():
                    shape_iou.append(topk_iou(shape[b], batch["shape_mask"][b].numpy() > 0.5))
                if batch["pose_mask"][b].any():
                    pose_iou.append(topk_iou(pose[b], batch["pose_mask"][b].numpy() > 0.5))
    finally:
        remove_capture(unet)
    return {"shape_iou": float(np.mean(shape_iou)) if shape_iou else float("nan"),
            "pose_iou": float(np.mean(pose_iou)) if pose_iou else float("nan"),
            "shape_samples": len(shape_iou), "pose_samples": len(pose_iou)}


def eval_dataset(samples, protocol, base, settings):
    """Held-out items without augmentation (no flip, no dropout, no shuffling)."""
    from training.data import DiscretizeSettings
    from training.dual_prior.data import DualPriorDataset

    map_size = tuple(settings.map_size) if settings.map_size else base.latent_size
    samples = list(samples)
    return DualPriorDataset(samples, protocol, base.tokenizer, DiscretizeSettings.for_evaluation(base, samples), settings.pose_token,
                            map_size, tuple(settings.human_words), settings.body_group, settings.skeleton_thickness,
                            tokenizer_2=base.tokenizer_2)
