"""Evaluating models on one snapshot: generation, judging, metrics, per model.

:func:`evaluate_model` computes every metric for one model against a shared
:class:`EvalContext` (prompts, seeds, the judge, real test images and their features, held-out
samples for attention IoU). A metric that cannot be computed is left out of ``metrics`` and
named in ``skipped`` with the reason; nothing is ever reported as 0 in its place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evaluation.image_metrics import (
    InceptionFeatures,
    distribution_metrics,
    quality_scores,
)
from evaluation.judge import Judge, semantic_accuracy
from evaluation.models import ModelUnderTest
from evaluation.prompts import EvalPrompt, noise_seed
from evaluation.sampling_engine import sample_and_judge
from evaluation.settings import EvaluationSettings
from evaluation.text_alignment import alignment_scores
from flywheel.backends import BackendUnavailable
from flywheel.faults import kill_point
from flywheel.preview import png_bytes
from flywheel.ray_data import EngineSettings

# part of every cached result's key: bump when a metric's definition changes
METRICS_VERSION = 5


@dataclass
class EvalContext:
    settings: EvaluationSettings
    protocol: object
    judge: Judge | None  # the annotator judge (annotator_acc_*); None: no trained annotator yet
    prompts: list[EvalPrompt]
    held_out: list  # snapshot Samples of the test split (attention IoU, real-image statistics)
    attention_levels: list[int] | None = None
    attention_layers: list[str] | None = None
    truth_judge: object | None = None  # the judge trained on renderer truth only (acc_*); None: not computed
    skipped: dict[str, str] = field(default_factory=dict)  # evaluation-wide: what was skipped and why
    engine: EngineSettings | None = None  # where sampling and the truth judge run (None: here)
    workers: int = 2  # Ray actors
    _real_features: dict[str, np.ndarray] = field(default_factory=dict)
    _inception: object = None

    def feature_space(self) -> str:
        if self._inception is None:
            try:
                self._inception = InceptionFeatures(self.settings.inception_weights)
            except BackendUnavailable as exc:
                self._inception = False
                self.skipped["fid"] = f"{exc}; FD/KID use the judge's features (fd_judge, kid_judge)"
        if self._inception:
            return "inception"
        return "truth" if self.truth_judge is not None else "judge" if self.judge is not None else ""

    def features(self, images: np.ndarray) -> np.ndarray:
        space = self.feature_space()
        if space == "inception":
            return self._inception(images)
        if space == "truth":
            return self.truth_judge.features(list(images))
        return Judge.features(self.judge.views(list(images)))

    def real_features(self, size: tuple[int, int]) -> np.ndarray:
        """Real test images cropped to the generated aspect and resized to its size, through the same feature path."""
        import cv2

        from training.data import crop_box, fit

        key = f"{size[0]}x{size[1]}"
        if key not in self._real_features:
            real = np.stack([fit(s.image, crop_box(s.image.shape[:2], size), size, cv2.INTER_AREA) for s in self.held_out]) \
                if self.held_out else np.zeros((0, *size, 3), np.uint8)
            self._real_features[key] = self.features(real) if len(real) else np.zeros((0, 1))
        return self._real_features[key]

    def identity(self) -> dict:
        """What an evaluation's numbers depend on besides the model (the result cache key)."""
        judge = [getattr(self.judge, "identity", None), self.judge.parser_note] if self.judge else None
        truth = getattr(self.truth_judge, "identity", None)
        return {"metrics_version": METRICS_VERSION, "settings": self.settings.model_dump(mode="json"), "prompts": [p.key for p in self.prompts],
                "held_out": [s.key for s in self.held_out], "judge": judge, "truth_judge": truth,
                "attention": [self.attention_levels, self.attention_layers]}


@dataclass
class ModelEvaluation:
    label: str
    key: str
    registered_model: str | None
    version: str | None
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    per_category: dict[str, float] = field(default_factory=dict)  # by the truth judge
    per_category_annotator: dict[str, float] = field(default_factory=dict)  # by the annotator judge
    skipped: dict[str, str] = field(default_factory=dict)
    has_vae: bool = False
    images: np.ndarray | None = None  # (N, H, W, 3) in prompt-major, seed-minor order
    attention_png: bytes | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("images")
        d.pop("attention_png")
        return d

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "result.json").write_text(json.dumps(self.to_json(), indent=1))
        np.savez_compressed(tmp / "images.npz", images=self.images if self.images is not None else np.zeros((0, 1, 1, 3), np.uint8))
        if self.attention_png:
            (tmp / "attention.png").write_bytes(self.attention_png)
        kill_point("evaluation.result_written")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: Path) -> ModelEvaluation:
        obj = cls(**json.loads((folder / "result.json").read_text()))
        obj.images = np.load(folder / "images.npz")["images"]
        att = folder / "attention.png"
        obj.attention_png = att.read_bytes() if att.exists() else None
        return obj


def evaluate_model(model: ModelUnderTest, ctx: EvalContext) -> ModelEvaluation:
    from training.alignment import attention_iou
    from training.attention import AttentionStore
    from training.data import (
        DaringDataset,
        DiscretizeSettings,
        bucket_size,
        median_aspect,
    )
    from training.run import attention_figure

    s = ctx.settings
    out = ModelEvaluation(model.label, model.key, model.registered_model, model.version, model.run_id)
    base = model.load()
    base.unet.eval()
    out.has_vae = base.vae is not None
    # every model generates at the held-out images' aspect (a square SD base included), never squashed
    h, w = bucket_size(base, median_aspect(ctx.held_out)) if ctx.held_out else base.image_size
    prompts = [p for p in ctx.prompts for _ in s.seeds]
    seeds = [noise_seed(p.key, sd) for p in ctx.prompts for sd in s.seeds]
    truth_answers = None
    if prompts:  # here, or on Ray actors (engine ray) with the truth judge answering there too
        out.images, truth_answers = sample_and_judge(base, ctx.truth_judge, [p.caption for p in prompts], seeds, h, w,
                                                     s.steps, s.guidance_scale, s.batch_size, ctx.engine, ctx.workers)
    else:
        out.images = np.zeros((0, h, w, 3), np.uint8)
        out.skipped["generation"] = "the prompt set is empty (no test-split captions): nothing generated"

    # fine-grained semantic accuracy: each judge answers each caption's questions (acc_*: the truth
    # judge; annotator_acc_*: the flywheel's annotator, what a user without ground truth has)
    questions = [p.questions for p in prompts]
    for key, judge, answer in (("semantic_accuracy", ctx.truth_judge, lambda: truth_answers),
                               ("annotator_semantic_accuracy", ctx.judge, lambda: ctx.judge.answer(ctx.judge.views(list(out.images))))):
        if judge is None:
            out.skipped[key] = ctx.skipped.get(key, "no judge")
        elif not prompts:
            out.skipped[key] = "no prompts"
        else:
            acc = semantic_accuracy(ctx.protocol, answer(), questions, s.bootstrap)
            prefix = "" if key == "semantic_accuracy" else "annotator_"
            out.metrics.update({prefix + k: v for k, v in acc.metrics().items()})
            setattr(out, "per_category" if not prefix else "per_category_annotator", acc.per_category)
            if not acc.questions:
                out.skipped[key] = "the prompts voice no protocol question"

    # image quality
    scores, skipped = quality_scores(out.images, s.quality_metrics, s.quality_weights)
    out.metrics.update(scores)
    out.skipped.update(skipped)
    space = ctx.feature_space()
    if not space:
        out.skipped["fd_kid"] = "no feature space: no Inception weights and no judge"
    elif len(out.images) < 2 or len(ctx.held_out) < 2:
        out.skipped["fd_kid"] = f"needs at least 2 generated and 2 real images (have {len(out.images)}, {len(ctx.held_out)})"
    else:
        out.metrics.update(distribution_metrics(ctx.features(out.images), ctx.real_features((h, w)), space))

    # text-image alignment from local weights only
    scores, skipped = alignment_scores(out.images, [p.caption for p in prompts], s.clip_dir, s.pickscore_dir, s.hpsv2_checkpoint)
    out.metrics.update(scores)
    out.skipped.update(skipped)

    # attention-mask alignment on held-out real samples, captured as in training
    held = ctx.held_out[:s.attention_samples]
    if held:
        ds = DaringDataset(held, ctx.protocol, base.tokenizer, DiscretizeSettings.for_evaluation(base, held), base.tokenizer_2)
        iou = attention_iou(base, base.unet, ds, ctx.attention_levels, ctx.attention_layers)
        out.metrics.update({f"attention_{k}": v for k, v in iou.items() if k != "groups" and not np.isnan(v)})
        out.attention_png = png_bytes(attention_figure(base, base.unet, ds, AttentionStore()))
    else:
        out.skipped["attention_iou"] = "no held-out samples in the snapshot's test split"
    return out

