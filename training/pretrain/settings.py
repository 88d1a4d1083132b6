"""Settings of ``cosmicman pretrain-base`` (pydantic only, cheap to import; the model card records them)."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class WeakCaptionRecipe(BaseModel):
    """How weak a pretraining caption is (kept in the model card)."""

    p_gender: float = Field(0.9, ge=0, le=1, description="the caption names the gender")
    p_shot: float = Field(0.6, ge=0, le=1, description="the caption names the shot (full body, upper body, headshot)")
    p_main_garment: float = Field(0.85, ge=0, le=1, description="the top (or dress) is named")
    p_colour: float = Field(0.85, ge=0, le=1, description="a named garment has its colour")
    p_type: float = Field(0.6, ge=0, le=1, description="a named garment has its type (else a generic word)")
    p_second_garment: float = Field(0.3, ge=0, le=1, description="one more garment (bottom, hat, scarf, shoes, bag)")
    p_age: float = Field(0.2, ge=0, le=1)
    wrong_word_share: float = Field(0.1, ge=0, le=1, description="each content word is replaced by a wrong one")
    p_filler: float = Field(0.5, ge=0, le=1, description="web boilerplate around the content (site and file names, "
                            "keyword lists), as alt text has: the content then sits anywhere in the 77 tokens, not "
                            "only in the first 20, so the text encoder and the UNet learn to read every position "
                            "(dense captions put the top's colour 30-60 tokens in). 0 until the eighth embedded base")
    filler_fragments: tuple[int, int] = Field((1, 8), description="how many boilerplate fragments a padded caption "
                                              "has (uniform, inclusive), split at random between before and after")
    rules: int = Field(2, ge=1, le=2, description="version of the caption rules: 1 (the first three embedded bases) "
                       "wrote a drawn shot only when the drawn template had a slot for it, so the shot was named in "
                       "3/7 of p_shot; 2 always writes it")

    @model_validator(mode="after")
    def _fragment_range(self):
        low, high = self.filler_fragments
        if low < 0 or low > high:
            raise ValueError(f"filler_fragments {self.filler_fragments}: needs 0 <= low <= high (how many boilerplate "
                             "fragments a padded caption has, inclusive)")
        return self


class CorpusSettings(BaseModel):
    count: int = Field(20000, ge=1, description="renders in the corpus")
    seed: int = Field(7_000_003, description="render seed: a range no snapshot uses (snapshots use small seeds)")
    height: int = Field(96, ge=16)
    width: int = Field(64, ge=16)
    render_scale: int = Field(2, ge=1, description="render at this multiple of the size, then area-downscale")
    person_type_weights: dict[str, float] = Field(default_factory=lambda: {"full body": 0.5, "upper body": 0.3, "headshot": 0.2})
    captions: WeakCaptionRecipe = Field(default_factory=WeakCaptionRecipe)
    workers: int = Field(2, ge=1)

    def digest(self) -> str:
        raw = self.model_dump(exclude={"workers"})
        return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]

    def image_digest(self) -> str:
        """The renders' key (captions aside): what the VAE latents depend on."""
        raw = self.model_dump(exclude={"workers", "captions"})
        return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


class VaeSettings(BaseModel):
    block_out_channels: tuple[int, ...] = Field((16, 32, 64), description="one entry per level: 3 levels = 4x downsampling")
    latent_channels: int = 4
    norm_num_groups: int = 8
    steps: int = Field(800, ge=0)
    batch_size: int = Field(32, ge=1)
    crop: tuple[int, int] = Field((48, 32), description="trained on random crops (h, w): it is convolutional, and "
                                  "full 96x64 images cost four times as much per step")
    lr: float = 1e-3
    kl_weight: float = 1e-6


class ClipSettings(BaseModel):
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    projection_dim: int = 64
    vision_size: int = Field(48, description="the vision tower sees the image resized to a square of this side")
    vision_patch: int = 8
    vision_hidden: int = 128
    vision_layers: int = 2
    steps: int = Field(400, ge=0)
    batch_size: int = Field(128, ge=2)
    lr: float = 1e-3
    max_tokens: int = Field(24, description="text length during contrastive training (weak captions are shorter)")


class UnetSettings(BaseModel):
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    # cross-attention at 1/2 and 1/4 of the latent (12x8 and 6x4 tokens for 24x16 latents) and in
    # the mid block; at the full latent size it doubled the step time on two cores (2.9 vs 1.5 s)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_heads: int = 4
    text_time_embedding: bool = Field(True, description="diffusers' addition_embed_type='text' (DeepFloyd IF's "
                                      "attention-pooled prompt added to the timestep embedding): a global path for the "
                                      "prompt, learnt in hundreds of steps; cross-attention still places things")
    text_time_embedding_heads: int = 4
    prediction_type: str = "epsilon"
    beta_schedule: str = "squaredcos_cap_v2"
    steps: int = Field(2400, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="after the warm-up: constant, or a "
                                                      "cosine decay to min_lr_ratio x lr at the last step, over the "
                                                      "steps since the optimizer started (a continuation decays over its own steps)")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine: the learning rate at the last step, as a share of lr")
    caption_dropout: float = 0.1
    snr_gamma: float | None = 5.0
    ema_decay: float = Field(0.995, description="a window of about 200 steps: runs here are a few thousand steps long")
    text_encoder_lr: float | None = Field(5e-4, description="train the text encoder with the UNet at this learning "
                                          "rate (None: frozen, SD 1.5's recipe). The contrastive CLIP barely separates "
                                          "man from woman; the UNet's loss teaches it what the image needs. The "
                                          "contrastive CLIP stays the CLIPScore backend")
    contrastive_weight: float = Field(0.0, ge=0, description="with the text encoder trained: add this times CLIP's "
                                      "loss (the live text encoder against the vision tower, on the step's images) to "
                                      "the diffusion loss, so words the UNet does not use yet stay apart; the vision "
                                      "tower trains too and the saved CLIP is then the pair trained here")


class PretrainSettings(BaseModel):
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    vae: VaeSettings = Field(default_factory=VaeSettings)
    clip: ClipSettings = Field(default_factory=ClipSettings)
    unet: UnetSettings = Field(default_factory=UnetSettings)
    seed: int = 0
    threads: int | None = Field(None, description="torch CPU threads (None: torch's default); more threads than free "
                                "cores slows CPU training several times over")
    log_every: int = Field(25, ge=1, description="steps between logged losses")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints of each stage")
    sample_every: int = Field(400, ge=1, description="UNet steps between sample grids logged to MLflow")
    sample_steps: int = Field(25, ge=1, description="DDIM steps of the sample grids")
    guidance_scale: float = 7.5  # SD 1.5's default; 4.0 left gender and colour words weaker (0.73 / 0.39 vs 0.80 / 0.45)
    sample_prompts: list[str] = Field(default_factory=lambda: [
        f"{shot} of a {g} wearing a {c} t-shirt" for shot in ("full-body shot", "upper-body shot")
        for g in ("man", "woman") for c in ("red", "blue", "green", "yellow")])
