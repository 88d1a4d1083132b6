"""Base models: any diffusers-format Stable Diffusion directory, or the embedded tiny one.

``load_base(path)`` reads the diffusers layout (``model_index.json``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, optional ``vae/``; SDXL adds
``text_encoder_2/`` and ``tokenizer_2/``). A model without a VAE works in pixel space. A
directory holding only one weight variant (``*.fp16.safetensors``) loads that variant; weights
are used in float32 here (mixed precision is the trainer's business). Training noises with
DDPM on the directory's scheduler config; the config itself (class and every field) is kept and
written back unchanged by :meth:`BaseModel.save`, so a fine-tune keeps the user's scheduler.

The embedded default is ``models/embedded-base`` (pretrained by :mod:`training.pretrain`; its
``checksums.sha256`` is verified here at load). ``create_tiny_base(folder, protocol)`` writes a
random tiny model for fast unit tests, made offline from config: a pixel-space
UNet2DConditionModel at 96x64, a 2-layer CLIP text model and the protocol's word-level
tokenizer, in the same layout.

The UNet's activation (CosmicMan Prime's study) is a load-time choice: ``act_fn`` rebuilds
the UNet from its config with another activation and loads the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
)

from flywheel.checksums import ChecksumError, verify_checksums
from flywheel.protocol import Protocol
from training.tokenizer import build_tokenizer

ACTIVATIONS = ("silu", "swish", "gelu", "mish", "relu")  # diffusers.models.activations.get_activation


class BaseModelError(ValueError):
    pass


@dataclass
class BaseModel:
    path: Path
    unet: UNet2DConditionModel
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: DDPMScheduler
    vae: AutoencoderKL | None = None
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object | None = None
    scheduler_config: dict | None = None  # the directory's scheduler_config.json as written (class included)
    force_zeros_for_empty_prompt: bool = False  # SDXL: the unconditional branch is zeros, not the encoded ""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def text_pairs(self) -> list[tuple[object, torch.nn.Module]]:
        """(tokenizer, text encoder) of each encoder the UNet is conditioned on (two for SDXL)."""
        return [(self.tokenizer, self.text_encoder)] + ([(self.tokenizer_2, self.text_encoder_2)] if self.is_sdxl else [])

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    @property
    def latent_size(self) -> tuple[int, int]:
        """(h, w) of the UNet's input (an int ``sample_size`` means square)."""
        size = self.unet.config.sample_size
        return tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    @property
    def image_size(self) -> tuple[int, int]:
        """(h, w) of the images it generates and trains on."""
        h, w = self.latent_size
        return h * self.vae_scale, w * self.vae_scale

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    def save(self, folder: Path, unet: UNet2DConditionModel | None = None) -> Path:
        """Write the pipeline in diffusers layout (with ``unet`` replacing the base UNet)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (unet or self.unet).save_pretrained(folder / "unet")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.scheduler.save_pretrained(folder / "scheduler")
        scheduler_class = "DDPMScheduler"
        if self.scheduler_config:  # the user's scheduler, not the DDPM view training used
            (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
            scheduler_class = self.scheduler_config.get("_class_name", scheduler_class)
        index = {"_class_name": "StableDiffusionXLPipeline" if self.is_sdxl else "StableDiffusionPipeline",
                 "_diffusers_version": _diffusers_version(),
                 "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", scheduler_class],
                 "text_encoder": ["transformers", type(self.text_encoder).__name__],
                 "tokenizer": ["transformers", type(self.tokenizer).__name__],
                 "vae": ["diffusers", "AutoencoderKL"] if self.vae is not None else [None, None]}
        if self.vae is not None:
            self.vae.save_pretrained(folder / "vae")
        if self.is_sdxl:
            self.text_encoder_2.save_pretrained(folder / "text_encoder_2")
            self.tokenizer_2.save_pretrained(folder / "tokenizer_2")
            index["text_encoder_2"] = ["transformers", type(self.text_encoder_2).__name__]
            index["tokenizer_2"] = ["transformers", type(self.tokenizer_2).__name__]
            index["force_zeros_for_empty_prompt"] = self.force_zeros_for_empty_prompt
        (folder / "model_index.json").write_text(json.dumps(index, indent=1))
        return folder


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def weight_variant(folder: Path) -> str | None:
    """The variant to load from a component folder: None when plain weights are there, else the
    one variant present (``diffusion_pytorch_model.fp16.safetensors`` -> "fp16")."""
    names = [f.name for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin")] if Path(folder).is_dir() else []
    if not names or any(n.count(".") == 1 for n in names):
        return None
    variants = sorted({n.split(".")[-2] for n in names})
    if len(variants) > 1:
        raise BaseModelError(f"{folder}: weights in several variants ({', '.join(variants)}) and none plain; pass variant=")
    return variants[0]


def load_unet(path: Path, act_fn: str | None = None, variant: str | None = None) -> UNet2DConditionModel:
    unet = UNet2DConditionModel.from_pretrained(path / "unet", variant=variant or weight_variant(path / "unet"),
                                                torch_dtype=torch.float32)
    if act_fn and act_fn != unet.config.act_fn:
        if act_fn not in ACTIVATIONS:
            raise BaseModelError(f"act_fn {act_fn!r}: not an activation diffusers supports ({', '.join(ACTIVATIONS)})")
        state = unet.state_dict()
        unet = UNet2DConditionModel.from_config({**unet.config, "act_fn": act_fn})
        unet.load_state_dict(state)  # activations have no weights: the same parameters fit
    return unet


def load_base(path: str | Path, act_fn: str | None = None, variant: str | None = None) -> BaseModel:
    """The base model in ``path`` (see the module docstring); ``variant`` picks a weight variant
    (default: the plain weights, or the only variant present)."""
    path = Path(path)
    index_path = path / "model_index.json"
    if not index_path.exists():
        raise BaseModelError(f"{path}: not a diffusers model directory (no model_index.json)")
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        if not (path / part).is_dir():
            raise BaseModelError(f"{path}: missing {part}/ (diffusers layout expected)")
    try:
        verify_checksums(path)  # a directory that ships checksums (the embedded base) is checked before use
    except ChecksumError as exc:
        raise BaseModelError(str(exc)) from None
    index = json.loads(index_path.read_text())
    sdxl = (path / "text_encoder_2").is_dir()

    def weights(cls, part: str):
        dtype = {"dtype" if cls.__module__.startswith("transformers") else "torch_dtype": torch.float32}
        return cls.from_pretrained(path / part, variant=variant or weight_variant(path / part), **dtype)

    scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text()) \
        if (path / "scheduler" / "scheduler_config.json").exists() else None
    model = BaseModel(
        path=path,
        unet=load_unet(path, act_fn, variant),
        text_encoder=weights(CLIPTextModel, "text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer", use_fast=True),
        scheduler=DDPMScheduler.from_pretrained(path / "scheduler"),
        vae=weights(AutoencoderKL, "vae") if (path / "vae").is_dir() and index.get("vae", [None])[0] else None,
        text_encoder_2=weights(CLIPTextModelWithProjection, "text_encoder_2") if sdxl else None,
        tokenizer_2=AutoTokenizer.from_pretrained(path / "tokenizer_2", use_fast=True) if sdxl else None,
        scheduler_config=scheduler_config,
        # diffusers' StableDiffusionXLPipeline defaults to True when model_index.json does not say
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)) if sdxl else False,
    )
    if not model.tokenizer.is_fast:
        raise BaseModelError(f"{path}/tokenizer: a fast tokenizer is needed (Daring's token spans use offset mappings)")
    return model


def create_tiny_base(folder: str | Path, protocol: Protocol, act_fn: str = "silu", height: int = 96, width: int = 64,
                     seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a random tiny base model for unit tests (see module docstring) to ``folder``. ``prediction_type``
    is the scheduler's (epsilon as SD 1.5, v_prediction as SD 2.x, or sample); the trainer and
    sampler follow it (see :mod:`training.denoising`)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(protocol)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, projection_dim=64))
    unet = UNet2DConditionModel(
        sample_size=(height, width), in_channels=3, out_channels=3, act_fn=act_fn,
        # attention only at 1/4 and 1/8 of the input (24x16 and 12x8 tokens): CPU attention
        # backward at 1/2 (1,536 tokens) cost 90% of a step
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 96, 128), layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=2,  # diffusers' SD-era name for the number of heads
        norm_num_groups=16)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                              clip_sample=True)
    base = BaseModel(Path(folder), unet, text, tokenizer, scheduler)
    return base.save(Path(folder))
