"""Continue pretraining from a finished pipeline (the committed embedded base) on a new machine.

The stage checkpoints live in the work folder, which a fresh clone does not have. For each
stage whose checkpoint is missing, :func:`seed_checkpoints` writes one from the pipeline's
weights at the step count its ``pretrain_settings.json`` records (fresh optimizer state, a new
random stream), so ``pretrain-base --from-pipeline models/embedded-base --unet-steps N`` trains
the UNet further instead of starting over. The recipe must match apart from step counts, the
weak-caption recipe (the renders must be the same; their captions may be rewritten, e.g. by newer
caption rules), the UNet's pooled-prompt path (``text_time_embedding``), which a UNet trained
without it grows (zero-initialised, so it starts as the trained UNet), and the UNet's
optimisation settings (learning rates, warm-up, batch, dropout, loss weighting, EMA decay,
whether the text encoder trains too, and with what contrastive weight): the architecture and the noise schedule must match. A seeded UNet warms its
learning rate up again, since Adam's moments start afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from training.pretrain.settings import PretrainSettings

_STAGES = ("vae", "clip", "unet")
# may differ from the pipeline's: added to trained weights (the pooled-prompt path), or how training goes on
_MAY_CHANGE = {"unet": {"text_time_embedding", "text_time_embedding_heads", "lr", "warmup_steps", "lr_schedule",
                        "min_lr_ratio", "batch_size", "caption_dropout", "snr_gamma", "ema_decay", "text_encoder_lr",
                        "contrastive_weight"}}


class RecipeMismatch(ValueError):
    pass


def _state(name: str, module: torch.nn.Module, lr: float, step: int, seed: int, **extra) -> dict:
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed * 1000 + step)  # not the stream the first run used
    return {name: module.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "step": step, **extra}


def seed_checkpoints(pipeline: Path, work_dir: Path, s: PretrainSettings) -> list[str]:
    """Write the missing stage checkpoints of ``work_dir`` from ``pipeline``; returns the stages seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel

    from training.pretrain.run import clip_dir, save_atomic

    pipeline, work_dir = Path(pipeline), Path(work_dir)
    recorded = pipeline / "pretrain_settings.json"
    if not recorded.exists():
        raise RecipeMismatch(f"{recorded}: missing (only a pipeline written by pretrain-base can be continued)")
    done = PretrainSettings(**json.loads(recorded.read_text())["settings"])
    if done.corpus.image_digest() != s.corpus.image_digest():
        raise RecipeMismatch(f"{recorded}: its corpus renders differ from the settings' (continuing needs the same "
                             f"images; only the caption recipe may change)")
    for stage in _STAGES:
        skip = {"steps", *_MAY_CHANGE.get(stage, ())}
        ours, theirs = getattr(s, stage).model_dump(exclude=skip), getattr(done, stage).model_dump(exclude=skip)
        if ours != theirs:
            diff = sorted(k for k in ours if ours[k] != theirs.get(k))
            raise RecipeMismatch(f"{recorded}: {stage} settings differ from the pipeline's ({', '.join(diff)})")
        if getattr(s, stage).steps < getattr(done, stage).steps:
            raise RecipeMismatch(f"{stage}.steps {getattr(s, stage).steps} is below the {getattr(done, stage).steps} "
                                 f"steps {pipeline} was trained for")
    work_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = work_dir / f"tokenizer-{s.corpus.digest()}"
    if not tok_dir.exists():
        shutil.copytree(pipeline / "tokenizer", tok_dir)
    seeded = []
    if not (work_dir / "vae.pt").exists():
        save_atomic(_state("vae", AutoencoderKL.from_pretrained(pipeline / "vae"), s.vae.lr, done.vae.steps, s.seed), work_dir / "vae.pt")
        seeded.append("vae")
    if not (work_dir / "clip.pt").exists():
        save_atomic(_state("clip", CLIPModel.from_pretrained(clip_dir(pipeline)), s.clip.lr, done.clip.steps, s.seed),
              work_dir / "clip.pt")
        seeded.append("clip")
    if not (work_dir / "unet.pt").exists():
        from training.pretrain.unet import grow_unet

        trained = UNet2DConditionModel.from_pretrained(pipeline / "unet")  # the saved weights are the EMA's
        try:
            unet = grow_unet(trained, s.unet)
        except ValueError as exc:
            raise RecipeMismatch(f"{pipeline / 'unet'}: {exc}") from exc
        extra = {"ema": unet.state_dict(), "ema_step": done.unet.steps, "warmup_from": done.unet.steps}
        if done.unet.text_encoder_lr:  # the pipeline's text encoder was trained with its UNet: continue from it
            from transformers import CLIPTextModel

            text = CLIPTextModel.from_pretrained(pipeline / "text_encoder").state_dict()
            extra |= {"text_encoder": text, "ema_text_encoder": text}
        save_atomic(_state("unet", unet, s.unet.lr, done.unet.steps, s.seed, **extra), work_dir / "unet.pt")
        seeded.append("unet")
    return seeded
