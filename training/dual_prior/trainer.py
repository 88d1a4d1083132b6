"""The dual-level prior trainer: stage 1 binds, stage 2 rectifies adversarially.

Trained parameters: LoRA adapters (peft) on the UNet's attention projections and the pose
token's embedding row (in both text encoders for SDXL, as diffusers' SDXL textual inversion);
every other embedding row is restored after each step, as textual inversion does, so the pose
token's row is the only one that changes. The UNet is conditioned as in sampling
(:func:`training.sampling.encode_batch`: SDXL's concatenated context, pooled embedding and size ids).

Stage 1: L = L_noise + w_s·L_bind_shape + w_p·L_bind_pose (binding.py).
Stage 2 (from stage 1's adapters and token): per step, one UNet forward gives the maps;
the critics take ``critic_steps`` updates on those maps, detached, against the real masks;
then, critics frozen, L = L_noise − D_shape(maps) − D_pose(maps) updates the UNet adapters
and the token. Reusing the step's maps for the critic updates spares a UNet forward per
critic update. Two optimisers (generator, critics), both prepared by accelerate, so the
critics' weights and optimiser state are saved in every checkpoint and resumed.

Output of a stage: ``<stage>/final/`` with ``adapter.safetensors`` (the UNet's LoRA state),
``adapter_config.json`` and ``pose_token.safetensors``; :func:`load_with_prior` applies them
onto the base model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from training.attention import AttentionStore, install_capture
from training.base_model import BaseModel, load_base
from training.checkpoints import checkpoints, save_checkpoint
from training.data import DiscretizeSettings
from training.denoising import denoising_target
from training.dual_prior.binding import bind_loss, supervised_maps, token_maps
from training.dual_prior.critic import PatchCritic, critic_loss, generator_loss
from training.dual_prior.data import DualPriorDataset, collate_dual
from training.sampling import encode_batch
from training.settings import DualPriorSettings

log = logging.getLogger(__name__)
STAGES = ("bind", "adversarial")


@dataclass
class StageResult:
    stage: str
    steps: int
    final_dir: Path
    resumed_from: int = 0
    last: dict[str, float] = field(default_factory=dict)


def add_pose_token(base: BaseModel, token: str, init_token: str) -> int:
    """Add ``token`` to each tokenizer with an embedding row initialised from ``init_token``'s;
    returns its id in the first tokenizer."""
    for tokenizer, encoder in base.text_pairs():
        if token in tokenizer.get_vocab():
            continue
        tokenizer.add_tokens([token])
        encoder.resize_token_embeddings(len(tokenizer))
        init = tokenizer(init_token, add_special_tokens=False).input_ids
        emb = encoder.get_input_embeddings().weight
        with torch.no_grad():
            emb[tokenizer.convert_tokens_to_ids(token)] = emb[init[0]] if len(init) == 1 else emb.mean(0)
    return base.tokenizer.convert_tokens_to_ids(token)


EMBEDDING_KEYS = ("embedding", "embedding_2")  # the pose token's row in text encoder 1 and (SDXL) 2


def _lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"])


def save_prior(folder: Path, unet, base: BaseModel, token: str, rank: int) -> Path:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}, folder / "adapter.safetensors")
    rows = {key: encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(token)].detach().cpu().clone()
            for key, (tokenizer, encoder) in zip(EMBEDDING_KEYS, base.text_pairs())}
    save_file(rows, folder / "pose_token.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"token": token, "rank": rank, "base_model": str(base.path)}))
    return folder


def load_with_prior(base_dir: Path, prior_dir: Path) -> BaseModel:
    """The base model with the adapters and the pose token applied (ready to generate with it)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = json.loads((Path(prior_dir) / "adapter_config.json").read_text())
    base = load_base(base_dir)
    add_pose_token(base, meta["token"], meta["token"])
    rows = load_file(Path(prior_dir) / "pose_token.safetensors")
    with torch.no_grad():
        for key, (tokenizer, encoder) in zip(EMBEDDING_KEYS, base.text_pairs()):
            if key not in rows:
                raise ValueError(f"{prior_dir}/pose_token.safetensors: no {key!r} row for this base's text encoder")
            encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(meta["token"])] = rows[key]
    base.unet.add_adapter(_lora_config(meta["rank"]))
    set_peft_model_state_dict(base.unet, load_file(Path(prior_dir) / "adapter.safetensors"))
    return base


def _bind(maps, tokens: torch.Tensor, mask: torch.Tensor, size, delta: float) -> dict[str, torch.Tensor]:
    """Binding loss of the selected tokens' maps, per map (each token at each resolution)."""
    per_map, selected = supervised_maps(maps, tokens, size)
    return bind_loss(per_map.float(), mask, tokens.any(1) & (mask.flatten(1).amax(1) > 0), delta, selected)


def train_stage(stage: str, s: DualPriorSettings, base_dir: Path, samples, protocol, output_dir: Path,
                init_prior: Path | None = None, on_log: Callable[[str, int, dict], None] | None = None,
                on_maps: Callable[[str, int, dict, torch.Tensor, torch.Tensor], None] | None = None) -> StageResult:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    if stage not in STAGES:
        raise ValueError(f"stage {stage!r}: expected one of {STAGES}")
    folder = Path(output_dir) / stage
    accelerator = Accelerator(mixed_precision=s.mixed_precision, project_config=ProjectConfiguration(project_dir=str(folder)))
    set_seed(s.seed)
    base = load_with_prior(base_dir, init_prior) if init_prior else load_base(base_dir)
    add_pose_token(base, s.pose_token, s.init_token)
    unet = base.unet
    unet.requires_grad_(False)
    if not init_prior:
        unet.add_adapter(_lora_config(s.lora_rank))
    for n, p in unet.named_parameters():
        p.requires_grad_("lora" in n)
    texts = [encoder for _, encoder in base.text_pairs()]
    token_ids = [tokenizer.convert_tokens_to_ids(s.pose_token) for tokenizer, _ in base.text_pairs()]
    embeddings = []
    for text in texts:
        text.requires_grad_(False)
        text.get_input_embeddings().weight.requires_grad_(True)
        embeddings.append(text.get_input_embeddings().weight)
    original_rows = [emb.detach().clone() for emb in embeddings]
    store = AttentionStore()
    install_capture(unet, store, s.attention_levels)
    samples = list(samples)
    discretize = DiscretizeSettings.for_model(base, samples, **s.discretize)
    map_size = tuple(s.map_size) if s.map_size else (discretize.mask_height, discretize.mask_width)
    ds = DualPriorDataset(samples, protocol, base.tokenizer, discretize, s.pose_token, map_size, tuple(s.human_words),
                          s.body_group, s.skeleton_thickness, tokenizer_2=base.tokenizer_2)
    loader = torch.utils.data.DataLoader(ds, batch_size=s.batch_size, shuffle=True, collate_fn=collate_dual,
                                         drop_last=len(ds) >= s.batch_size, generator=torch.Generator().manual_seed(s.seed))
    lora_params = [p for p in unet.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW([{"params": lora_params, "lr": s.lr},
                               {"params": embeddings, "lr": s.embedding_lr or s.lr, "weight_decay": 0.0}], lr=s.lr)
    critics = opt_d = None
    if stage == "adversarial":
        shape_critic = PatchCritic(s.critic_layers, s.critic_width, s.critic_dropout)
        pose_critic = PatchCritic(s.critic_layers, s.critic_width, s.critic_dropout)
        opt_d = torch.optim.AdamW([*shape_critic.parameters(), *pose_critic.parameters()], lr=s.critic_lr, betas=(0.5, 0.9))
        # each critic prepared on its own: a wrapped (DDP) ModuleDict could not be indexed
        unet, shape_critic, pose_critic, opt_g, opt_d, loader, *texts = accelerator.prepare(
            unet, shape_critic, pose_critic, opt_g, opt_d, loader, *texts)
        critics = {"shape": shape_critic, "pose": pose_critic}
    else:
        unet, opt_g, loader, *texts = accelerator.prepare(unet, opt_g, loader, *texts)
    base.text_encoder = texts[0]  # encode_batch goes through the prepared modules
    if base.is_sdxl:
        base.text_encoder_2 = texts[1]
    step = 0
    if (found := checkpoints(folder)):
        step, path = found[-1]
        accelerator.load_state(str(path))
    resumed = step
    total = s.stage1_steps if stage == "bind" else s.stage2_steps
    scheduler = base.scheduler
    flip_gen = torch.Generator().manual_seed(s.seed + 1)
    last: dict[str, float] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    unet.train()
    while step < total:
        for batch in loader:
            x = batch["pixel_values"].to(accelerator.device)
            if base.vae is not None:
                with torch.no_grad():
                    x = base.vae.encode(x).latent_dist.sample() * base.vae.config.scaling_factor
            noise = torch.randn_like(x)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (x.shape[0],), device=x.device)
            context, added = encode_batch(base, batch)  # with grad: the pose token's rows learn
            store.clear()
            store.latent_size = tuple(x.shape[-2:])
            store.recording = True
            pred = unet(scheduler.add_noise(x, noise, t), t, encoder_hidden_states=context,
                        **({"added_cond_kwargs": added} if added else {})).sample
            store.recording = False
            loss_noise = F.mse_loss(pred.float(), denoising_target(scheduler, x, noise, t).float())
            maps = store.by_resolution()
            shape_maps = token_maps(maps, batch["human_tokens"].to(x.device), map_size).float()
            pose_maps = token_maps(maps, batch["pose_tokens"].to(x.device), map_size).float()
            shape_mask, pose_mask = batch["shape_mask"].to(x.device), batch["pose_mask"].to(x.device)
            logs = {"loss_noise": loss_noise.item()}
            if stage == "bind":
                shape = _bind(maps, batch["human_tokens"].to(x.device), shape_mask, map_size, s.margin_delta)
                pose = _bind(maps, batch["pose_tokens"].to(x.device), pose_mask, map_size, s.margin_delta)
                loss = loss_noise + s.shape_weight * shape["total"] + s.pose_weight * pose["total"]
                logs.update({f"shape_{k}": v.item() for k, v in shape.items()})
                logs.update({f"pose_{k}": v.item() for k, v in pose.items()})
            else:
                for _ in range(s.critic_steps):
                    d = {name: critic_loss(critics[name], real, fake, s.gp_weight, s.flip_prob, flip_gen)
                         for name, real, fake in (("shape", shape_mask, shape_maps), ("pose", pose_mask, pose_maps))}
                    opt_d.zero_grad(set_to_none=True)
                    accelerator.backward(d["shape"]["loss"] + d["pose"]["loss"])
                    opt_d.step()
                g_shape, g_pose = generator_loss(critics["shape"], shape_maps), generator_loss(critics["pose"], pose_maps)
                loss = loss_noise + g_shape + g_pose
                for name in ("shape", "pose"):
                    logs.update({f"critic_{name}_{k}": v.item() for k, v in d[name].items()})
                logs.update({"gen_shape": g_shape.item(), "gen_pose": g_pose.item()})
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(lora_params, s.max_grad_norm)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            with torch.no_grad():  # textual inversion: only the pose token's rows may change
                for emb, original, tid in zip(embeddings, original_rows, token_ids):
                    keep = torch.ones(emb.shape[0], dtype=torch.bool, device=emb.device)
                    keep[tid] = False
                    emb[keep] = original[keep].to(emb.device)
            store.clear()
            step += 1
            last = logs
            bar.update(1)
            bar.set_postfix(noise=f"{logs['loss_noise']:.4f}")
            if on_log and accelerator.is_main_process and (step % s.log_every == 0 or step == total):
                on_log(stage, step, logs)
            if on_maps and accelerator.is_main_process and (step % s.image_log_every == 0 or step == total):
                on_maps(stage, step, batch, shape_maps.detach(), pose_maps.detach())
            if step % s.checkpoint_every == 0 and accelerator.is_main_process:
                save_checkpoint(accelerator, folder, step, s.checkpoints_total_limit)
            if step >= total:
                break
    bar.close()
    base.text_encoder = accelerator.unwrap_model(base.text_encoder)
    if base.is_sdxl:
        base.text_encoder_2 = accelerator.unwrap_model(base.text_encoder_2)
    final = folder / "final"
    if accelerator.is_main_process:  # one writer; the others wait before anyone reads it
        save_prior(final, accelerator.unwrap_model(unet), base, s.pose_token, s.lora_rank)
    accelerator.wait_for_everyone()
    return StageResult(stage, step, final, resumed, last)
