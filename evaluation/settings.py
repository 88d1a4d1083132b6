"""Evaluation settings (pydantic only, cheap to import: the project settings embed them)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class EvaluationSettings(BaseModel):
    prompts: int = Field(48, ge=0, description="held-out prompts: captions of the snapshot's test split, in manifest order")
    seeds: list[int] = Field(default_factory=lambda: [0], description="one generated image per prompt and seed; the noise is seeded from both (evaluation.prompts.noise_seed), so each prompt has its own, the same for every model")
    steps: int = Field(25, ge=1, description="DDIM steps")
    guidance_scale: float = Field(4.0, ge=0)
    grid_prompts: int = Field(8, ge=0, description="prompts shown side by side in the report's image grid")
    attention_samples: int = Field(48, ge=0, description="held-out real samples for the attention-mask IoU")
    parser: Literal["learned", "geometric"] = Field("learned", description="how the judge parses generated images: "
                                                   "a parser trained on the snapshot's train maps, or the no-weights fallback")
    parser_steps: int = Field(1500, ge=1, description="training steps of the learned parser (cached per snapshot)")
    parser_size: tuple[int, int] = Field((96, 64), description="(height, width) the learned parser works at")
    truth_judge_dir: Path | None = Field(Path("models/truth-judge"), description="the truth judge (trained on the "
                                         "renderer's ground truth only): the Acc_* columns; None leaves them not computed")
    judge_dir: Path | None = Field(None, description="annotator directory used as the second judge (annotator_acc_*); "
                                   "default the flywheel's latest")
    judge_calibration_images: int = Field(200, ge=0, description="fresh synthetic images with ground truth on which "
                                          "the judge's own accuracy is measured")
    judge_calibration_seed: int = Field(90210, description="renderer seed of the calibration images (not the source's)")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples (over prompts) for the 95% intervals")
    quality_metrics: list[str] = Field(default_factory=lambda: ["piqe", "liqe", "musiq"],
                                       description="pyiqa no-reference metrics; learned ones need local weights")
    quality_weights: dict[str, Path] = Field(default_factory=dict, description="pyiqa metric -> local weights file")
    inception_weights: Path | None = Field(None, description="torchvision inception_v3 state dict: FID proper; "
                                           "without it FD/KID use the judge's image features (FD_judge, KID_judge)")
    clip_dir: Path | None = Field(None, description="transformers CLIP directory for CLIPScore")
    pickscore_dir: Path | None = Field(None, description="transformers directory of PickScore_v1")
    hpsv2_checkpoint: Path | None = Field(None, description="HPS v2 checkpoint (needs the open_clip package)")
    champion_metric: str = Field("acc_all", description="metric that decides the registered model's champion alias")
    champion_greater_is_better: bool = True
    batch_size: int = Field(8, ge=1)
