"""Tiny random SD 1.5 and SDXL directories in the real layouts, written offline.

What a user's real directory holds, at toy width: ``StableDiffusionPipeline`` /
``StableDiffusionXLPipeline.save_pretrained`` output with an ``AutoencoderKL`` of four blocks
(scale 8), a ``UNet2DConditionModel`` with the real block pattern (SD 1.5: three cross-attention
levels over a plain one; SDXL: a plain level, two cross-attention levels with more transformer
layers deeper down, linear projections, the ``text_time`` embedding of pooled text and size ids),
CLIP text encoders (SDXL: a second one with a projection), CLIP BPE tokenizer files
(``vocab.json`` + ``merges.txt``; SDXL's second pads with "!"), and the real scheduler configs
(SD 1.5's PNDM, SDXL's Euler discrete). Built as diffusers' own tests build theirs
(``get_dummy_components``), from config, seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.pretrain.clip import build_clip_tokenizer
from training.tokenizer import protocol_words
from training.unet_layouts import TINY_SD15, TINY_SDXL, TINY_SDXL_POOLED

# SD 1.5's and SDXL's scheduler_config.json as published (beta range, spacing, offsets; keys the
# class does not take included, as in the real files)
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
                  "clip_sample": False}
SDXL_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                  "interpolation_type": "linear", "prediction_type": "epsilon", "sample_max_value": 1.0,
                  "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
                  "trained_betas": None, "use_karras_sigmas": False}


def _tokenizer(protocol, folder: Path, pad_token: str | None = None):
    from transformers import CLIPTokenizer

    texts = protocol_words(protocol) + ["a photo of a person, wearing"]
    tok = build_clip_tokenizer(texts, folder)
    if pad_token:
        tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token=pad_token)
        tok.save_pretrained(folder)
    return tok


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                         norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         sample_size=128)


def _text_encoder(tokenizer, hidden: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def build_sd15(folder: Path, protocol, seed: int = 0, variant: str | None = None) -> Path:
    """A tiny SD 1.5 directory (128x128 px, 16x16 latents); ``variant="fp16"``: fp16 weights only."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = _tokenizer(protocol, folder / "_tok")
    unet = UNet2DConditionModel(**TINY_SD15)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(tokenizer, 32), tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if variant:
        pipe.to(torch.float16)
    pipe.save_pretrained(folder, variant=variant)
    _published_scheduler(folder, "PNDMScheduler", SD15_SCHEDULER)
    return folder


def build_sdxl(folder: Path, protocol, seed: int = 0) -> Path:
    """A tiny SDXL directory (128x128 px, 16x16 latents), ``force_zeros_for_empty_prompt`` as published."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = _tokenizer(protocol, folder / "_tok")
    tokenizer_2 = _tokenizer(protocol, folder / "_tok2", pad_token="!")
    # context 16 + 32 = TINY_SDXL's cross_attention_dim; encoder 2's projection is its pooled width
    text_encoder, text_encoder_2 = _text_encoder(tokenizer, 16), _text_encoder(tokenizer_2, TINY_SDXL_POOLED, projection=True)
    unet = UNet2DConditionModel(**TINY_SDXL)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(folder)
    _published_scheduler(folder, "EulerDiscreteScheduler", SDXL_SCHEDULER)
    return folder


def _published_scheduler(folder: Path, cls: str, config: dict) -> None:
    import diffusers

    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": cls, "_diffusers_version": diffusers.__version__, **config}, indent=2))


def diffusers_pipeline(folder: Path, sdxl: bool):
    """The directory loaded by diffusers itself, sampling with DDIM from its scheduler_config.json as
    written (the project's sampler), for comparison with :func:`training.sampling.generate`. (From
    the file, not ``pipe.scheduler.config``: the pipeline's ``__init__`` rewrites a ``steps_offset``
    of 0, the embedded base's, to 1 with a deprecation warning.)"""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    if sdxl:
        pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                       requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text()))
    pipe.set_progress_bar_config(disable=True)
    return pipe
