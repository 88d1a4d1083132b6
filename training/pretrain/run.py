"""``pretrain-base``: corpus -> VAE -> latents -> CLIP -> UNet -> a StableDiffusionPipeline directory.

Every stage checkpoints its state (weights, optimizer, step, random generator) under
``work_dir`` every ``checkpoint_every`` steps, written atomically, and a rerun continues
from there; a finished stage is skipped. Raising a stage's step count and rerunning
trains it further. Metrics and sample grids go to one MLflow run when tracking is set.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel, CLIPTextModel

from flywheel.atomic import replace_dir
from flywheel.protocol import load_protocol
from training.base_model import BaseModel
from training.pretrain.clip import (
    ContrastiveTerm,
    build_clip,
    build_clip_tokenizer,
    train_clip_steps,
)
from training.pretrain.corpus import build_corpus
from training.pretrain.settings import PretrainSettings
from training.pretrain.unet import (
    Ema,
    build_scheduler,
    build_unet,
    train_unet_steps,
    unet_optimizer,
)
from training.pretrain.vae import (
    build_vae,
    encode_corpus,
    latent_scaling_factor,
    train_vae_steps,
)
from training.tokenizer import protocol_words

Log = Callable[[str, int, dict], None]


@dataclass
class PretrainResult:
    output_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage in this call
    total_seconds: dict[str, float] = field(default_factory=dict)  # summed over every call on this work_dir
    scaling_factor: float = 0.0
    grid: np.ndarray | None = None
    run_id: str | None = None


def save_atomic(obj, path: Path) -> None:
    """torch.save via a temporary name: a kill never leaves a torn checkpoint."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class WallClock:
    """Wall time per stage, summed over every call on a work_dir and saved as it goes, so a killed
    and resumed run still reports its whole cost (the model card's figure)."""

    def __init__(self, path: Path):
        self.path = path
        self.total: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.this_call: dict[str, float] = {}
        self._mark = time.perf_counter()

    def charge(self, stage: str) -> None:
        now = time.perf_counter()
        for d in (self.total, self.this_call):
            d[stage] = d.get(stage, 0.0) + now - self._mark
        self._mark = now
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.total, indent=1))
        tmp.replace(self.path)


def _run_stage(name: str, path: Path, total: int, modules: dict, optimizer, generator: torch.Generator, every: int,
               train: Callable[[int, int], None], clock: WallClock, extra_state: Callable[[], dict] | None = None,
               restore: Callable[[dict], None] | None = None) -> int:
    """Train ``modules`` from the checkpoint at ``path`` (if any) to ``total`` steps, checkpointing as it goes."""
    step = 0
    if path.exists():
        state = torch.load(path, weights_only=False)
        for k, m in modules.items():
            if k in state:  # a module new to this stage (the text encoder, once trained too) keeps its weights
                m.load_state_dict(state[k])
        if len(state["optimizer"]["param_groups"]) == len(optimizer.param_groups):
            optimizer.load_state_dict(state["optimizer"])
        else:  # the trained modules changed: Adam's moments start afresh (the warm-up restarts too, see below)
            state["warmup_from"] = state["step"]
        generator.set_state(state["generator"])
        step = state["step"]
        if restore:
            restore(state)
    while step < total:
        stop = min(total, step + every)
        train(step, stop)
        step = stop
        save_atomic({**{k: m.state_dict() for k, m in modules.items()}, "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "step": step, **(extra_state() if extra_state else {})}, path)
        clock.charge(name)
    clock.charge(name)
    return step


def pretrain_base(s: PretrainSettings, work_dir: Path, output_dir: Path, protocol_path: str | Path | None = None,
                  on_log: Log | None = None, on_grid: Callable[[int, np.ndarray], None] | None = None) -> PretrainResult:
    """Run (or continue) every stage; write the pipeline to ``output_dir`` (atomically: ``.partial`` then rename)."""
    from training.sampling import generate, image_grid

    if s.threads:
        torch.set_num_threads(s.threads)

    def log(stage: str, step: int, metrics: dict) -> None:
        if on_log and step % s.log_every == 0:
            on_log(stage, step, {f"{stage}/{k}": v for k, v in metrics.items()})
    work_dir, output_dir = Path(work_dir), Path(output_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    result = PretrainResult(output_dir)
    protocol = load_protocol(protocol_path)

    clock = WallClock(work_dir / "timing.json")
    corpus = build_corpus(s.corpus, protocol_path, work_dir / "cache")
    clock.charge("corpus")

    tok_dir = work_dir / f"tokenizer-{s.corpus.digest()}"
    if not (tok_dir / "tokenizer_config.json").exists():
        build_clip_tokenizer(corpus.captions + [" ".join(protocol_words(protocol))], tok_dir.with_suffix(".partial"))
        tok_dir.with_suffix(".partial").rename(tok_dir)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    # VAE
    torch.manual_seed(s.seed)
    vae = build_vae(s.vae, s.corpus.height)
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(s.seed + 1)
    _run_stage("vae", work_dir / "vae.pt", s.vae.steps, {"vae": vae}, opt, gen, s.checkpoint_every,
               lambda a, b: train_vae_steps(vae, opt, corpus.images, s.vae, a, b, gen, lambda k, m: log("vae", k, m)), clock)
    vae.eval().requires_grad_(False)

    latents_path = work_dir / f"latents-{s.corpus.image_digest()}-{s.corpus.count}-vae{s.vae.steps}.npz"
    if latents_path.exists():
        with np.load(latents_path) as z:
            means, stds = z["means"], z["stds"]
    else:
        means, stds = encode_corpus(vae, corpus.images)
        tmp = latents_path.with_name(latents_path.name + ".tmp.npz")
        np.savez(tmp, means=means, stds=stds)
        tmp.replace(latents_path)
    scaling = latent_scaling_factor(means, stds)
    vae.register_to_config(scaling_factor=scaling)
    result.scaling_factor = scaling
    clock.charge("latents")

    # CLIP (text encoder + vision tower)
    torch.manual_seed(s.seed + 2)
    clip = build_clip(s.clip, tokenizer)
    opt = torch.optim.AdamW(clip.parameters(), lr=s.clip.lr, weight_decay=0.1)
    gen = torch.Generator().manual_seed(s.seed + 3)
    _run_stage("clip", work_dir / "clip.pt", s.clip.steps, {"clip": clip}, opt, gen, s.checkpoint_every,
               lambda a, b: train_clip_steps(clip, opt, tokenizer, corpus.images, corpus.captions, s.clip, a, b, gen,
                                             lambda k, m: log("clip", k, m)), clock)
    clip.eval().requires_grad_(False)
    text_encoder = text_encoder_of(clip)

    # UNet
    torch.manual_seed(s.seed + 4)
    latent_size = tuple(means.shape[-2:])
    unet = build_unet(s.unet, means.shape[2], latent_size, text_encoder.config.hidden_size)
    joint = bool(s.unet.text_encoder_lr)
    ema = Ema(unet, s.unet.ema_decay)
    text_ema = Ema(text_encoder, s.unet.ema_decay) if joint else None
    scheduler = build_scheduler(s.unet)
    contrast = None
    if joint and s.unet.contrastive_weight:
        contrast = ContrastiveTerm(clip, corpus.images, s.clip.vision_size, s.unet.contrastive_weight)
    opt = unet_optimizer(unet, text_encoder, s.unet, contrast)
    gen = torch.Generator().manual_seed(s.seed + 5)
    warmup = {"from": 0}  # the step Adam's moments started at: a seeded or widened checkpoint warms up again
    base = BaseModel(output_dir, ema.model, text_ema.model if joint else text_encoder, tokenizer, scheduler, vae=vae)

    def sample_grid() -> np.ndarray:
        prompts = s.sample_prompts
        images = generate(base, ema.model, prompts, list(range(len(prompts))), *base.image_size,
                          steps=s.sample_steps, guidance_scale=s.guidance_scale)
        return image_grid(images, cols=4)

    def train(a: int, b: int) -> None:
        train_unet_steps(unet, ema, opt, text_encoder, tokenizer, scheduler, means, stds, corpus.captions, scaling,
                         s.unet, a, b, gen, lambda k, m: log("unet", k, m), text_ema=text_ema,
                         warmup_from=warmup["from"], contrast=contrast)
        if on_grid and (b // s.sample_every > a // s.sample_every) and b < s.unet.steps:
            on_grid(b, sample_grid())

    def unet_state() -> dict:
        state = {"ema": ema.model.state_dict(), "ema_step": ema.step, "warmup_from": warmup["from"]}
        if joint:
            state["ema_text_encoder"] = text_ema.model.state_dict()
        return state

    def restore_unet(st: dict) -> None:
        ema.model.load_state_dict(st["ema"])
        ema.step = st["ema_step"]
        warmup["from"] = st.get("warmup_from", 0)
        if joint:  # a checkpoint from before the text encoder was trained: its EMA starts at the current weights,
            # as far along its decay as the UNet's, so that the exported pair averages over the same steps
            text_ema.model.load_state_dict(st.get("ema_text_encoder", text_encoder.state_dict()))
            text_ema.step = st["ema_step"]

    # the text encoder the UNet reads is part of this stage's state (once trained with it, it is no longer CLIP's)
    modules = {"unet": unet, "text_encoder": text_encoder}
    if contrast is not None:  # its vision tower and projections train here too
        modules["clip"] = clip
    _run_stage("unet", work_dir / "unet.pt", s.unet.steps, modules, opt, gen, s.checkpoint_every, train, clock,
               extra_state=unet_state, restore=restore_unet)

    partial = output_dir.with_name(output_dir.name + ".partial")
    clip_partial = partial.with_name(clip_dir(output_dir).name + ".partial")
    base.save(partial)
    write_card_inputs(partial, s, scaling)
    if contrast is not None:  # save the pair trained together: the vision tower learnt against this text encoder
        load_text_encoder_into(clip, text_ema.model)
    clip.save_pretrained(clip_partial)
    tokenizer.save_pretrained(clip_partial)
    for folder in (partial / "tokenizer", clip_partial):  # CLIP's own files too, as SD 1.5's tokenizer/ has them
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(tok_dir / name, folder / name)
    replace_dir(partial, output_dir)
    replace_dir(clip_partial, clip_dir(output_dir))
    result.grid = sample_grid()
    clock.charge("export")
    result.seconds, result.total_seconds = dict(clock.this_call), dict(clock.total)
    if on_grid:
        on_grid(s.unet.steps, result.grid)
    return result


def clip_dir(output_dir: Path) -> Path:
    """The full CLIP model (text and vision towers) beside the pipeline: the embedded CLIPScore backend."""
    return Path(output_dir).with_name(Path(output_dir).name + "-clip")


def text_encoder_of(clip: CLIPModel) -> CLIPTextModel:
    text = CLIPTextModel(clip.config.text_config)
    state = clip.text_model.state_dict()
    if all(k.startswith("text_model.") for k in text.state_dict()):  # transformers < 5 wraps the transformer
        state = {f"text_model.{k}": v for k, v in state.items()}
    text.load_state_dict(state)
    return text.eval().requires_grad_(False)


def load_text_encoder_into(clip: CLIPModel, text: CLIPTextModel) -> None:
    """The inverse of :func:`text_encoder_of`: ``text``'s weights into ``clip``'s text tower."""
    state = text.state_dict()
    if all(k.startswith("text_model.") for k in state):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    clip.text_model.load_state_dict(state)


def write_card_inputs(folder: Path, s: PretrainSettings, scaling: float) -> None:
    (folder / "pretrain_settings.json").write_text(json.dumps({"settings": s.model_dump(mode="json"),
                                                               "vae_scaling_factor": scaling}, indent=1))
