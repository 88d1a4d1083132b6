"""The Daring trainer (CosmicMan Sec. 4) on accelerate: L = α·L_noise + β·L_HOLA.

β = 0 is the plain denoising fine-tune (no capturing processor is installed at all). Full
UNet fine-tuning (paper: AdamW, lr 1e-5, weight decay 1e-2) or LoRA adapters (peft) on the
attention projections; mixed precision, gradient accumulation, gradient checkpointing, EMA,
gradient clipping, SNR-γ weighting and noise offset; a checkpoint every N steps (oldest
pruned beyond a limit) and resume from the latest; validation samples. LoRA training saves
the adapter (diffusers' LoRA format, :mod:`training.lora`) with a reference to its base, and a
merged UNet only with ``lora_merge``. The same code runs under ``accelerate launch`` on several
processes (GPUs, or CPU over gloo): the logged losses are the mean over the processes, the main
process alone saves, the others wait for it, and every process's final weights must agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from training.attention import AttentionStore, install_capture
from training.base_model import BaseModel, load_base
from training.checkpoints import checkpoints, save_checkpoint
from training.data import DaringDataset, DiscretizeSettings, collate
from training.denoising import denoising_target, min_snr_weights
from training.distributed import process_state
from training.hola import hola_loss
from training.sampling import encode_batch
from training.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class StepLosses:
    noise: float
    hola: float
    lr: float


@dataclass
class TrainResult:
    output_dir: Path
    unet_dir: Path
    steps: int
    losses: StepLosses | None
    history: list[tuple[int, StepLosses]] = field(default_factory=list)
    resumed_from: int = 0
    captured_layers: list[str] = field(default_factory=list)
    adapter_dir: Path | None = None  # = unet_dir when a LoRA adapter (not a pipeline) was saved there
    world_size: int = 1
    weights_sha256: str | None = None  # of the final UNet, the same on every process (checked when several)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train(settings: TrainSettings, base_path: Path, dataset_samples, protocol, output_dir: Path,
          on_log: Callable[[int, StepLosses], None] | None = None,
          on_attention: Callable[[int, BaseModel, torch.nn.Module, dict, AttentionStore], None] | None = None) -> TrainResult:
    """Train from ``base_path`` on ``dataset_samples`` (snapshot samples); returns where the UNet went."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    s = settings
    output_dir = Path(output_dir)
    process_state()  # joined by the Accelerator: one process group across a multi-process launch, CPU included
    accelerator = Accelerator(mixed_precision=s.mixed_precision, gradient_accumulation_steps=s.gradient_accumulation_steps,
                              project_config=ProjectConfiguration(project_dir=str(output_dir)))
    set_seed(s.seed)
    base = load_base(base_path, s.act_fn)
    unet = base.unet
    for module in (base.text_encoder, base.vae, base.text_encoder_2):
        if module is not None:
            module.requires_grad_(False)
            module.to(accelerator.device)
    text_encoder = base.text_encoder
    if s.train_text_encoder:
        if s.lora_rank:
            raise ValueError("train_text_encoder: supported with full fine-tuning only (lora_rank 0)")
        text_encoder.requires_grad_(True)
        text_encoder.train()
    if s.lora_rank:
        from training.lora import lora_config

        unet.requires_grad_(False)
        unet.add_adapter(lora_config(s.lora_rank))
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    store = AttentionStore()
    captured = install_capture(unet, store, s.attention_levels, s.attention_layers) if s.beta > 0 else []
    ema = EMAModel([p for p in unet.parameters() if p.requires_grad], decay=s.ema_decay) if s.use_ema else None

    dataset_samples = list(dataset_samples)
    dataset = DaringDataset(dataset_samples, protocol, base.tokenizer, DiscretizeSettings.for_model(base, dataset_samples, **s.discretize),
                            base.tokenizer_2)
    if len(dataset) == 0:
        raise ValueError("training: the snapshot split has no samples")
    loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch_size, shuffle=True, collate_fn=collate, drop_last=len(dataset) >= s.batch_size,
                                         generator=torch.Generator().manual_seed(s.seed))
    params = [p for p in unet.parameters() if p.requires_grad]
    if s.train_text_encoder:
        params += list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=s.lr_warmup_steps * accelerator.num_processes)
    if s.train_text_encoder:  # prepared too, so it is checkpointed and resumed with the UNet
        unet, text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, loader, lr_scheduler)
        base.text_encoder = text_encoder  # encode_text goes through the prepared (possibly DDP-wrapped) module
    else:
        unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    step = 0
    existing = checkpoints(output_dir)
    if s.resume and existing:
        step, path = existing[-1]
        accelerator.load_state(str(path))
        log.info("resumed from %s", path)
    resumed_from = step
    scheduler = base.scheduler
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(s.mixed_precision, torch.float32)
    history: list[tuple[int, StepLosses]] = []
    last: StepLosses | None = None
    from tqdm.auto import tqdm

    bar = tqdm(total=s.max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    unet.train()
    while step < s.max_steps:
        for batch in loader:
            with accelerator.accumulate(*([unet, text_encoder] if s.train_text_encoder else [unet])):
                x = batch["pixel_values"].to(accelerator.device, weight_dtype)
                if base.vae is not None:
                    with torch.no_grad():
                        x = base.vae.encode(x.to(base.vae.dtype)).latent_dist.sample() * base.vae.config.scaling_factor
                noise = torch.randn_like(x)
                if s.noise_offset:
                    noise = noise + s.noise_offset * torch.randn(x.shape[0], x.shape[1], 1, 1, device=x.device, dtype=x.dtype)
                t = torch.randint(0, scheduler.config.num_train_timesteps, (x.shape[0],), device=x.device).long()
                noisy = scheduler.add_noise(x, noise, t)
                with torch.set_grad_enabled(s.train_text_encoder):
                    context, added = encode_batch(base, batch)
                store.clear()
                store.latent_size = tuple(x.shape[-2:])
                store.recording = s.beta > 0
                pred = unet(noisy, t, encoder_hidden_states=context.to(weight_dtype),
                            **({"added_cond_kwargs": added} if added else {})).sample
                store.recording = False  # a checkpointing recompute during backward must not store again
                target = denoising_target(scheduler, x, noise, t)
                if s.snr_gamma:
                    weights = min_snr_weights(scheduler, t, s.snr_gamma)
                    loss_noise = (F.mse_loss(pred.float(), target.float(), reduction="none").mean((1, 2, 3)) * weights).mean()
                else:
                    loss_noise = F.mse_loss(pred.float(), target.float())
                loss_hola = hola_loss(store.by_resolution(), batch["masks"].to(x.device).float(),
                                      batch["token_group"].to(x.device), batch["group_valid"].to(x.device)) \
                    if s.beta > 0 else loss_noise.new_zeros(())
                loss = s.alpha * loss_noise + s.beta * loss_hola
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, s.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                store.clear()
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step([p for p in accelerator.unwrap_model(unet).parameters() if p.requires_grad])
            step += 1
            # the mean over the processes (each saw its own shard of the batch); the same on every process
            noise_mean, hola_mean = accelerator.reduce(torch.stack([loss_noise.detach().float(), loss_hola.detach().float()]),
                                                       "mean").tolist()
            last = StepLosses(noise_mean, hola_mean, lr_scheduler.get_last_lr()[0])
            if not math.isfinite(last.noise) or not math.isfinite(last.hola):
                raise FloatingPointError(f"training diverged at step {step}: L_noise {last.noise}, L_HOLA {last.hola}")
            bar.update(1)
            bar.set_postfix(noise=f"{last.noise:.4f}", hola=f"{last.hola:.4f}")
            if step % s.log_every == 0 or step == s.max_steps:
                history.append((step, last))
                if on_log and accelerator.is_main_process:
                    on_log(step, last)
            if on_attention and accelerator.is_main_process and (step % s.attention_log_every == 0 or step == s.max_steps):
                on_attention(step, base, accelerator.unwrap_model(unet), dataset, store)
            if step % s.checkpoint_every == 0 and accelerator.is_main_process:
                save_checkpoint(accelerator, output_dir, step, s.checkpoints_total_limit)
            if step >= s.max_steps:
                break
    bar.close()
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.copy_to([p for p in final.parameters() if p.requires_grad])
    adapter = bool(s.lora_rank) and not s.lora_merge
    if s.lora_rank and s.lora_merge:  # fold the adapters into the weights: a plain UNet, loadable without peft
        final.fuse_lora()
        final.unload_lora()
    from diffusers.models.attention_processor import AttnProcessor2_0

    final.set_attn_processor(AttnProcessor2_0())
    # the size it was trained at (the snapshot's aspect bucket) becomes the pipeline's default size
    final.register_to_config(sample_size=[dataset.s.height // base.vae_scale, dataset.s.width // base.vae_scale])
    unet_dir = output_dir / "final"
    if s.train_text_encoder:
        base.text_encoder = accelerator.unwrap_model(text_encoder).eval()
    digest = None
    if accelerator.num_processes > 1:
        digest = _agree_on_weights(accelerator, final, output_dir)
    if accelerator.is_main_process:
        shutil.rmtree(unet_dir, ignore_errors=True)  # an earlier run's pipeline (or adapter) must not mix with this one
        if adapter:
            from training.lora import save_adapter

            save_adapter(unet_dir, final, base, base_path, s.act_fn)
        else:
            base.save(unet_dir, unet=final)  # with the fine-tuned text encoder when it was trained
    accelerator.wait_for_everyone()  # what the main process saved is complete before any process reads it
    return TrainResult(output_dir, unet_dir, step, last, history, resumed_from, captured,
                       adapter_dir=unet_dir if adapter else None, world_size=accelerator.num_processes, weights_sha256=digest)


def _agree_on_weights(accelerator, final: torch.nn.Module, output_dir: Path) -> str:
    """Every process writes its final UNet's digest to ``processes/rank-<i>.json`` (the evidence of
    what each one ended with) and raises unless all agree: the main process saves only its own copy."""
    from accelerate.utils import gather_object

    digest = weights_digest(final)
    folder = output_dir / "processes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{accelerator.process_index}.json").write_text(json.dumps(
        {"rank": accelerator.process_index, "world_size": accelerator.num_processes, "device": str(accelerator.device),
         "unet_sha256": digest}))
    digests = gather_object([digest])
    if len(set(digests)) > 1:
        raise RuntimeError(f"{output_dir}: the processes ended with different UNet weights ({digests}); "
                           "the saved model would be the main process's alone")
    return digest
