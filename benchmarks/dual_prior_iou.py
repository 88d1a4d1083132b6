"""Dual-level prior, stage 1: attention-mask IoU of the human tokens (vs the person mask) and of
the <sds> pose token (vs the skeleton mask) on held-out samples, for the model the method adapts
(the profile's dual_prior.base_variant, else the base model) and after binding. Reads the latest CosmicMan-HQ version of the profile (run `make demo` first).

    .venv/bin/python benchmarks/dual_prior_iou.py [--steps 150] [--profile demo]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--held-out", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from flywheel.protocol import load_protocol
    from flywheel.settings import load_settings
    from training.base_model import load_base
    from training.dual_prior.alignment import eval_dataset, prior_iou
    from training.dual_prior.trainer import add_pose_token, load_with_prior, train_stage
    from training.stages import dual_prior_base, training_snapshot

    settings = load_settings(args.profile)
    protocol = load_protocol(settings.protocol_path)
    snapshot = training_snapshot(settings)
    s = settings.training.dual_prior.model_copy(update={"stage1_steps": args.steps, "checkpoint_every": 10**9})
    base_dir = dual_prior_base(settings, snapshot.tag)
    train_samples = list(snapshot.samples("train"))
    held_out = list(snapshot.samples("test", limit=args.held_out))
    base = load_base(base_dir)
    add_pose_token(base, s.pose_token, s.init_token)
    before = prior_iou(base, base.unet, eval_dataset(held_out, protocol, base, s), s.attention_levels)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train_stage("bind", s, base_dir, train_samples, protocol, Path(tmp))
        seconds = time.perf_counter() - t0
        bound = load_with_prior(base_dir, result.final_dir)
        after = prior_iou(bound, bound.unet, eval_dataset(held_out, protocol, bound, s), s.attention_levels)
    print(f"{snapshot.tag}: {len(train_samples)} training images, {len(held_out)} held out; stage 1: {args.steps} steps "
          f"in {seconds:.0f}s (batch {s.batch_size}, lr {s.lr}, LoRA rank {s.lora_rank})")
    print(f"human tokens vs person mask:  base IoU {before['shape_iou']:.3f} -> after binding {after['shape_iou']:.3f} "
          f"({after['shape_samples']} samples)")
    print(f"pose token vs skeleton mask:  base IoU {before['pose_iou']:.3f} -> after binding {after['pose_iou']:.3f} "
          f"({after['pose_samples']} samples)")
    ok = after["shape_iou"] > before["shape_iou"] and after["pose_iou"] > before["pose_iou"]
    print("both higher than the base model:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
