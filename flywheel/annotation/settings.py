"""Settings of the annotation flywheel and its annotator (pydantic only: cheap to import, as the profile loader
and every spawned worker does)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PretrainSettings(BaseModel):
    """How the part encoder is pretrained on the pool (no labels)."""

    steps: int = Field(600, ge=0, description="optimiser steps of contrastive pretraining (0: a random encoder)")
    batch_size: int = Field(256, ge=2, description="crops per step (each gives two views; every other crop is a negative)")
    lr: float = Field(2e-3, gt=0)
    temperature: float = Field(0.2, gt=0)
    width: int = Field(64, ge=8, description="channels of the encoder's last layers")
    grid: int = Field(2, ge=1, description="the embedding pools the last feature map to grid x grid cells")
    max_crops: int = Field(60_000, ge=1, description="pretrain on at most this many part crops of the pool")
    seed: int = 0


class AnnotatorSettings(BaseModel):
    backend: Literal["part_stats", "learned", "attribute_cnn", "vlm"] = Field(
        "learned", description="learned: per-category linear models over part features and the embeddings of a part "
        "encoder pretrained on the pool without labels (the default); part_stats: the same models over part features "
        "only (no pretraining); "
        "attribute_cnn: a multi-head CNN over part crops (needs more labels); vlm: a local BLIP-2 / InstructBLIP "
        "checkpoint fine-tuned with LoRA (vlm_dir)")
    regularisation: float = Field(0.3, gt=0, description="part_stats, learned: inverse L2 strength of each category's model")
    pseudo_label_confidence: float | None = Field(None, gt=0, le=1, description="part_stats, learned: after each "
                                                  "fit, answers this confident on the unlabelled pool join the labels "
                                                  "for one more fit (self-training; never counted as labels). Off by "
                                                  "default: at 0.9 it lifted five categories over 85% on the demo pool "
                                                  "but sank rare ones (skirt length 0.28 -> 0.02)")
    crop_size: int = Field(48, ge=16)
    width: int = Field(64, ge=8, description="channels of the encoder's last layer")
    epochs: int = Field(12, ge=1)
    min_steps: int = Field(400, ge=1, description="small label sets still get this many optimiser steps")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    pretrain: PretrainSettings = Field(default_factory=PretrainSettings, description="learned: the part encoder's "
                                       "self-supervised pretraining on the pool")
    vlm_dir: str | None = Field(None, description="vlm: a local transformers BLIP-2 / InstructBLIP directory (never downloaded)")
    vlm_device: str | None = Field(None, description="vlm: torch device (default: cuda when available)")
    vlm_lora_rank: int = Field(8, ge=1)
    vlm_lora_targets: tuple[str, ...] = Field(("q_proj", "v_proj"), description="vlm: module names LoRA adapts "
                                              "(the language model's attention projections)")
    vlm_lr: float = Field(1e-4, gt=0)
    vlm_batch_size: int = Field(8, ge=1, description="vlm: images per forward pass")


class AnnotationSettings(BaseModel):
    target_accuracy: float = Field(0.85, gt=0, le=1, description="paper: categories above 85% are no longer labelled")
    eval_size: int = Field(150, ge=2, description="images in the fixed evaluation set I_e")
    eval_labels: Literal["labelling", "truth"] = Field("labelling", description="labelling: I_e is labelled through "
                                                       "the labelling backend and counted in the cost; truth: read from "
                                                       "ground truth for free (synthetic benchmarks only)")
    seed_size: int = Field(10, ge=1, description="iteration 0: images labelled on every category")
    batch_size: int = Field(60, ge=1, description="images sampled per later iteration (I_i)")
    max_iterations: int = Field(8, ge=1)
    label_budget: float = Field(0.05, gt=0, le=1, description="share of pool images x applicable categories")
    sampling: Literal["uncertainty", "random"] = "uncertainty"
    patience: int = Field(2, ge=1, description="iterations without gain before stopping")
    min_gain: float = Field(0.005, ge=0)
    min_eval_count: int = Field(5, ge=1, description="images of I_e a category must apply to for its accuracy to be "
                                "measured; below, it is 'not measured' (and labelled for), never counted as met")
    seed: int = 0
    annotator: AnnotatorSettings = Field(default_factory=AnnotatorSettings)
