"""Training settings (pydantic only, cheap to import: the project settings embed them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel as Model
from pydantic import Field

from training.pretrain.settings import PretrainSettings


class TrainSettings(Model):
    act_fn: str | None = Field(None, description="UNet activation (CosmicMan Prime); None keeps the base model's")
    alpha: float = Field(1.0, ge=0, description="weight of L_noise")
    beta: float = Field(0.1, ge=0, description="weight of L_HOLA; 0 = plain fine-tune")
    lr: float = Field(1e-5, gt=0, description="paper: 1e-5 (full fine-tune of SD)")
    weight_decay: float = 1e-2
    lr_warmup_steps: int = 0
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_steps: int = Field(1000, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    use_ema: bool = False
    ema_decay: float = 0.9999
    max_grad_norm: float = 1.0
    snr_gamma: float | None = Field(None, description="Min-SNR-γ loss weighting (5.0 is the usual choice)")
    noise_offset: float = 0.0
    lora_rank: int = Field(0, ge=0, description="0 = full UNet fine-tune; >0 = LoRA on to_q/to_k/to_v/to_out, saved as "
                           "an adapter (diffusers LoRA format, `pipe.load_lora_weights`) with a reference to its base; "
                           "the registered version carries base + adapter")
    lora_merge: bool = Field(False, description="with lora_rank > 0: save the UNet with the adapter merged into its "
                             "weights (a full pipeline, loadable without peft) instead of the adapter")
    train_text_encoder: bool = Field(False, description="also fine-tune the (first) text encoder, as diffusers' "
                                     "--train_text_encoder; the tiny model's random encoder needs it to carry the prompt")
    attention_levels: list[int] | None = Field(None, description="captured resolution levels; default the mid ones")
    attention_layers: list[str] | None = Field(None, description="glob patterns of processor names (override levels)")
    checkpoint_every: int = Field(500, ge=1)
    checkpoints_total_limit: int = Field(2, ge=1)
    resume: bool = True
    log_every: int = Field(10, ge=1)
    attention_log_every: int = Field(200, ge=1)
    validation_prompts: list[str] = Field(default_factory=lambda: [
        "a woman, red t-shirt, blue pants", "a man, green t-shirt, black pants"])
    validation_steps: int = 25
    seed: int = 0
    discretize: dict = Field(default_factory=dict, description="DiscretizeSettings fields")




class TrainingProfile(Model):
    base_model_dir: Path | None = Field(None, description="diffusers SD directory; default the embedded base "
                                        "(models/embedded-base, made by pretrain-base)")
    pretrain: PretrainSettings = Field(default_factory=PretrainSettings, description="pretrain-base's recipe")
    snapshot_version: int | None = Field(None, description="CosmicMan-HQ version to train on; default the latest")
    registered_model: str = Field("cosmicman", description="one registered model for every variant (plain "
                                  "fine-tune, Daring, activation variants, dual prior): each version carries a "
                                  "`variant` tag; aliases `champion` (best overall) and `champion-<variant>`")
    accelerator_pool: str = Field("accelerator", description="Dagster pool: two trainings never share the accelerator")
    eval_samples: int = Field(32, ge=1, description="held-out samples for the attention-mask IoU")
    max_fallback_parsing: float = Field(0.25, ge=0, le=1, description="HOLA and the dual prior refuse a snapshot whose "
                                        "share of geometry-fallback parsing maps (no parsing weights) is above this")
    validation_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    activations: list[str] = Field(default_factory=lambda: ["silu", "gelu", "mish"], description="CosmicMan Prime sweep")
    threads: int | None = Field(None, description="torch CPU threads (None: torch's default)")
    train: TrainSettings = Field(default_factory=TrainSettings)
    dual_prior: "DualPriorSettings" = Field(default_factory=lambda: DualPriorSettings())
    kosmos: "KosmosSettings" = Field(default_factory=lambda: KosmosSettings())




class DualPriorSettings(Model):
    """Dual-level prior training (stage 1 binding, stage 2 adversarial rectification)."""

    base_variant: str | None = Field(None, description="start from this trained variant's final model (e.g. "
                                     "plain-finetune) instead of the base model: the method adapts a pretrained denoiser")
    pose_token: str = "<sds>"
    init_token: str = Field("person", description="the pose token's embedding starts as this word's")
    human_words: list[str] = Field(default_factory=lambda: ["man", "woman", "person", "girl", "boy", "child", "people"])
    body_group: bool = Field(False, description="also supervise the caption's body group tokens with M_shape")
    map_size: tuple[int, int] | None = Field(None, description="supervision size (h, w); default the UNet input size")
    skeleton_thickness: int = Field(2, ge=1)
    lora_rank: int = Field(8, ge=1)
    lr: float = Field(5e-6, gt=0, description="paper: AdamW 5e-6 (pretrained SD)")
    embedding_lr: float | None = Field(None, description="pose-token embedding learning rate; default lr")
    stage1_steps: int = Field(1000, ge=0)
    stage2_steps: int = Field(1000, ge=0)
    shape_weight: float = 1.0
    pose_weight: float = 1.0
    margin_delta: float = 0.1
    critic_layers: int = Field(11, ge=2, description="paper appendix: an 11-layer convolutional critic")
    critic_width: int = 32
    critic_dropout: float = Field(0.2, ge=0, lt=1)
    critic_lr: float = 1e-4
    critic_steps: int = Field(1, ge=1, description="critic updates per generator update")
    gp_weight: float = Field(10.0, ge=0, description="λ of WGAN-GP")
    flip_prob: float = Field(0.1, ge=0, le=1, description="per sample, swap real/fake roles in the critic loss")
    batch_size: int = Field(4, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    max_grad_norm: float = 1.0
    attention_levels: list[int] | None = None
    checkpoint_every: int = Field(500, ge=1)
    checkpoints_total_limit: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    image_log_every: int = Field(200, ge=1)
    registered_model: str = Field("cosmicman", description="the dual prior's versions go beside the other variants'")
    seed: int = 0
    discretize: dict = Field(default_factory=dict)


class KosmosSettings(Model):
    """KOSMOS-G on the base (``cosmicman train-kosmos-g``, asset ``kosmos_g_checkpoint``): the tiny source model S,
    AlignerNet, and the three stages' sizes. Stages 1-2 read dense protocol captions; stage 3 reads kosmos_pairs."""

    clip_dir: Path | None = Field(None, description="CLIP directory whose tokenizer and image tower S uses (frozen); "
                                  "default models/embedded-base-clip, the pair pretrained with the embedded base")
    source_dir: Path | None = Field(None, description="a local Hugging Face image-text-to-text model (LLaVA-style "
                                    "processor) to use as S instead of the tiny one: frozen, so stage 1 is skipped "
                                    "and stage 3 trains M only; never downloaded")
    source_width: int = Field(128, ge=8)
    source_layers: int = Field(3, ge=1)
    source_heads: int = Field(4, ge=1)
    image_tokens: int = Field(8, ge=1, description="resampled embeddings per image in S's sequence")
    max_source_len: int = Field(128, ge=16)
    aligner_preset: Literal["tiny", "paper"] = Field("tiny", description="tiny: 2 layers of 128 (this machine); "
                                                     "paper: 12 layers of 768 (KOSMOS-G's)")
    captions: int = Field(3000, ge=1, description="protocol captions stages 1 and 2 train on")
    held_out_captions: int = Field(100, ge=2, description="captions of another seed for R² and retrieval")
    lm_steps: int = Field(600, ge=0, description="stage 1 (S's next-token pretraining); 0 leaves S untrained")
    lm_pair_share: float = Field(0.5, ge=0, le=1, description="share of each stage-1 batch that is image-caption pairs "
                                 "(a stage-3 garment crop, then its words), the rest dense captions")
    align_steps: int = Field(2400, ge=1, description="stage 2 (AlignerNet on text-only captions)")
    instruct_steps: int = Field(2000, ge=0, description="stage 3 (compositional instruction tuning through the frozen "
                                "UNet); 0 skips it")
    batch_size: int = Field(32, ge=1, description="stages 1 and 2")
    lr: float = Field(1e-3, gt=0, description="stages 1 and 2")
    instruct_batch_size: int = Field(16, ge=1)
    instruct_lr: float = Field(2e-4, gt=0)
    subject_prompts: int = Field(60, ge=0, description="held-out garments (test split, with a reference on another "
                                 "person) generated after stage 3 for the subject figures; 0: none")
    sample_steps: int = Field(25, ge=1, description="DDIM steps of the subject samples")
    registered_model: str = Field("cosmicman-kosmos-g", description="one version per stage (tag `kosmos.stage`)")
    seed: int = 0


TrainingProfile.model_rebuild()
