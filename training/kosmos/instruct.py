"""Stage 3 of KOSMOS-G: compositional instruction tuning through the frozen UNet and VAE.

Each example is a snapshot image and its caption groups with the garments' crops
(:mod:`training.kosmos.pairs`). The interleaved prompt keeps the body group's text, the scene
group's with p = ``keep_background``, and each garment's text (dropped with p = ``drop_entity_text``)
followed by the garment's image, so the model must read the garment from its picture about half
the time. The diffusion loss (epsilon, the base's own noise schedule) of the UNet conditioned on
M(S(prompt)) trains the source model (its image tower stays frozen) and AlignerNet's M; N, the
UNet, the VAE and the text encoder never change. ``null_condition`` of the examples get the empty
sequence, so the aligned null M(S([])) learns to be classifier-free guidance's unconditional branch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.kosmos.aligner import AlignerNet
from training.kosmos.interleaved import ImageSegment, Segment


@dataclass(frozen=True)
class InstructSettings:
    steps: int = 600
    batch_size: int = 16
    lr: float = 2e-4
    drop_entity_text: float = 0.5  # the paper's p for an entity's words beside its image
    keep_background: float = 0.5  # the paper's p for keeping the scene's words
    null_condition: float = 0.1  # classifier-free guidance's unconditional share
    seed: int = 0


@dataclass
class Example:
    image: np.ndarray  # (H, W, 3) uint8 at the base's resolution
    groups: list[dict]  # caption groups: part, text, class_ids
    crops: dict[str, np.ndarray]  # part -> garment crop


def compositional_prompt(ex: Example, rng: np.random.Generator, s: InstructSettings, human: set[int]) -> list[Segment]:
    """The interleaved prompt of one example (a list of text and image segments)."""
    out: list[Segment] = []

    def text(t: str) -> None:
        out.append(t if not out else ", " + t)

    for g in ex.groups:
        ids = set(g.get("class_ids") or [])
        if not ids:  # the scene
            if rng.random() < s.keep_background:
                text(g["text"])
        elif ids >= human or g["part"] not in ex.crops:  # the body, or a part with no crop: words only
            text(g["text"])
        else:
            if rng.random() >= s.drop_entity_text:
                text(g["text"])
            out.append(ImageSegment(ex.crops[g["part"]], f"crop:{g['part']}"))
    return out


def trainable_parameters(source, aligner: AlignerNet) -> list[torch.nn.Parameter]:
    """S without its image tower, and M (AlignerNet's encoder side), as the public code trains them; M alone when S
    is a frozen model of the user's (``source.trainable`` False, :mod:`training.kosmos.hf_source`)."""
    m = [aligner.source_in, aligner.source_encoder, aligner.to_target, aligner.target_out]
    params = [p for mod in m for p in mod.parameters()] + [aligner.source_positions, aligner.queries_m]
    if not getattr(source, "trainable", True):
        return params
    vision = {id(p) for p in source.vision.parameters()}
    return [p for p in source.parameters() if id(p) not in vision] + params


def instruct_loss(base, source, aligner: AlignerNet, prompts: Sequence[Sequence[Segment]], images: np.ndarray,
                  generator: torch.Generator) -> torch.Tensor:
    """Epsilon MSE of the frozen UNet conditioned on M(S(prompts)) at random timesteps, on ``images``' latents."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        if base.vae is not None:
            latents = base.vae.encode(x).latent_dist.sample(generator) * base.vae.config.scaling_factor
        else:
            latents = x
    s, pad = source.embed(prompts)
    context = aligner.encode(s, pad)
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.randint(0, base.scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    noisy = base.scheduler.add_noise(latents, noise, t)
    pred = base.unet(noisy, t, encoder_hidden_states=context).sample
    return F.mse_loss(pred.float(), noise)


def train_instruct(base, source, aligner: AlignerNet, examples: Sequence[Example], s: InstructSettings,
                   human_class_ids: Collection[int], on_log: Callable[[int, dict], None] | None = None) -> dict:
    """Stage 3; returns the last step's loss. The UNet, VAE and text encoder are frozen (a caller proves it with
    :func:`training.kosmos.generate.weights_digest`) and so is N; epsilon prediction only (SD 1.5's).
    ``human_class_ids``: the protocol's person classes (the body group's, which has no crop)."""
    if base.scheduler.config.prediction_type != "epsilon":
        raise ValueError(f"instruction tuning: the base predicts {base.scheduler.config.prediction_type!r}; "
                         "only epsilon is supported")
    if not examples:
        raise ValueError("instruction tuning: no examples (kosmos_pairs gave no garment crops)")
    for module in (base.unet, base.text_encoder, *([base.vae] if base.vae is not None else [])):
        module.requires_grad_(False).eval()
    human = set(human_class_ids)
    params = trainable_parameters(source, aligner)
    trainable = {id(p) for p in params}
    for p in [*source.parameters(), *aligner.parameters()]:  # N and the image tower stay as they are; S trains
        p.requires_grad_(id(p) in trainable)  # again even though stage 2 froze it
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    rng, gen = np.random.default_rng(s.seed), torch.Generator().manual_seed(s.seed)
    source.train()
    aligner.train()
    last: dict = {}
    for step in range(1, s.steps + 1):
        idx = rng.choice(len(examples), min(s.batch_size, len(examples)), replace=False)
        prompts = [[] if rng.random() < s.null_condition else compositional_prompt(examples[i], rng, s, human)
                   for i in idx]
        loss = instruct_loss(base, source, aligner, prompts, np.stack([examples[i].image for i in idx]), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        last = {"loss": loss.item()}
        if on_log:
            on_log(step, last)
    source.eval()
    aligner.eval()
    return last


def examples_from_pairs(samples, rows: Sequence[dict], size: tuple[int, int], split: str = "train") -> list[Example]:
    """Stage 3's examples: each snapshot sample of ``split`` that has garment rows in ``kosmos_pairs``, its image
    centre-cropped to ``size``'s aspect and resized (as the trainer's data does), with its garments' crops."""
    import json

    import cv2

    from training.data import crop_box, fit
    from training.kosmos.pairs import unpng

    by_key: dict[str, list[dict]] = {}
    for r in rows:
        if r["split"] == split:
            by_key.setdefault(r["key"], []).append(r)
    out = []
    for smp in samples:
        mine = by_key.get(smp.key)
        if not mine:
            continue
        image = fit(smp.image, crop_box(smp.image.shape[:2], size), size, cv2.INTER_AREA)
        out.append(Example(image, json.loads(mine[0]["caption_groups_json"]), {r["part"]: unpng(r["crop_png"]) for r in mine}))
    return out


def garment_captions(examples: Sequence[Example]) -> list[tuple[np.ndarray, str]]:
    """Stage 1's image-caption pairs: each garment crop of the examples with its caption words."""
    return [(ex.crops[g["part"]], g["text"]) for ex in examples for g in ex.groups if g["part"] in ex.crops]
