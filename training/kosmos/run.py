"""A tracked KOSMOS-G training: a parent MLflow run with one nested run per stage, each stage's model registered.

Stage 1 (``lm``) pretrains the tiny source model S on dense protocol captions and garment image-caption pairs
(next text token; skipped for a user's Hugging Face source model, which comes pretrained); stage 2
(``align``) trains AlignerNet alone on text-only captions against the base's frozen text encoder, and logs R²
and caption retrieval on held-out captions before and after; stage 3 (``instruct``) tunes S and AlignerNet's M
on compositional prompts of kosmos_pairs' garments through the frozen UNet and VAE, then generates "a person
wearing <garment>" for held-out garments and logs the subject figures (:mod:`evaluation.subject`). Each stage
writes its model directory (:mod:`training.kosmos.checkpoint`) and registers it as a version of
``registered_model`` (the KOSMOS-G pyfunc with the base beside it), tagged ``kosmos.stage``. The UNet's and the
VAE's digests are taken before stage 1 and checked after every stage: a run whose base changed fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

STAGES = ("lm", "align", "instruct")


@dataclass
class KosmosRun:
    run_id: str
    experiment_id: str
    model_name: str
    stage_run_ids: dict[str, str]
    versions: dict[str, str]  # stage -> registered model version
    metrics: dict[str, float]
    model_dirs: dict[str, Path]
    subject: dict = field(default_factory=dict)  # the subject scores after stage 3 (evaluation.subject)


class BaseChangedError(RuntimeError):
    """The frozen UNet or VAE changed during KOSMOS-G training."""


def _digests(base) -> dict[str, str]:
    from training.kosmos.generate import weights_digest

    return {"unet": weights_digest(base.unet), **({"vae": weights_digest(base.vae)} if base.vae is not None else {})}


def garment_grid(crops: Sequence[np.ndarray], images: np.ndarray, n: int = 8) -> np.ndarray:
    """Up to ``n`` columns: each garment's crop (letterboxed to the image size) above what was generated from it."""
    import cv2

    from training.kosmos.source import square
    from training.sampling import image_grid

    h, w = images.shape[1:3]
    tiles = []
    for crop in crops[:n]:
        side = min(h, w)
        tile = np.full((h, w, 3), 255, np.uint8)
        small = cv2.resize(square(crop), (side, side), interpolation=cv2.INTER_AREA)
        tile[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side] = small
        tiles.append(tile)
    k = len(tiles)
    return image_grid(np.concatenate([np.stack(tiles), images[:k]]), k)


def subject_figures(base, source, aligner, held_pairs: Sequence[dict], judge, clip_dir: Path, steps: int
                    ) -> tuple[dict, np.ndarray | None]:
    """ "a person wearing <image>" for each held-out garment, judged and compared with its reference crop on another
    person (:func:`evaluation.subject.subject_scores`); and a grid of the first garments over their samples."""
    from evaluation.subject import subject_scores
    from training.kosmos.generate import KosmosGenerator
    from training.kosmos.pairs import unpng

    if not held_pairs:
        return {"not_computed": {"subject": "no held-out garment with a reference on another person"}}, None
    crops = [unpng(r["crop_png"]) for r in held_pairs]
    gen = KosmosGenerator(base, source, aligner, aligned_null=True)
    images = gen.generate([("a person wearing <image>", [c]) for c in crops], seeds=list(range(len(crops))), steps=steps)
    signatures = [json.loads(r["signature_json"]) for r in held_pairs]
    colour = sorted({c for s in signatures for c in s if c.endswith("_color")})
    kind = sorted({c for s in signatures for c in s if c.endswith("_type") or c == "dress"})
    scores = subject_scores(images, [unpng(r["reference_crop_png"]) for r in held_pairs],
                            ["a person wearing " + r["entity_text"] for r in held_pairs], signatures, judge, clip_dir,
                            colour_categories=colour, type_categories=kind)
    scores["garments"] = len(held_pairs)
    return scores, garment_grid(crops, images)


def held_out_garments(pairs: Sequence[dict], count: int) -> list[dict]:
    """Test-split garments of the main parts that have a reference crop on another person, at most ``count``."""
    rows = [r for r in pairs if r["split"] == "test" and r["reference_key"]
            and r["part"] in ("top", "dress", "bottom")]
    return rows[:count]


def run_kosmos_g(s, base_dir: Path, clip_dir: Path, examples: Sequence, held_pairs: Sequence[dict], protocol,
                 output_dir: Path, tracking, experiment: str, snapshot=None, judge=None,
                 tags: dict[str, str] | None = None) -> KosmosRun:
    """The three stages under one parent run (see the module docstring). ``s``: :class:`training.settings.KosmosSettings`;
    ``examples``: stage 3's (:func:`training.kosmos.instruct.examples_from_pairs`); ``held_pairs``: the garments the
    subject figures generate; ``judge``: the truth judge (None: the garment's attributes are not judged)."""
    import mlflow

    from flywheel.tracking import flatten, mlflow_run
    from training.base_model import load_base
    from training.kosmos.align import alignment_scores, protocol_captions, train_alignment
    from training.kosmos.aligner import AlignerConfig, AlignerNet
    from training.kosmos.checkpoint import save_kosmos
    from training.kosmos.instruct import InstructSettings, garment_captions, train_instruct
    from training.kosmos.interleaved import parse
    from training.kosmos.pairs import unpng
    from training.kosmos.source import TinySourceConfig, TinySourceModel, image_caption_prompt, train_source_lm
    from training.mlflow_model import KOSMOS_G, kosmos_signature, log_and_register
    from training.run import git_commit

    torch.manual_seed(s.seed)
    base = load_base(base_dir)
    if base.is_sdxl:
        raise ValueError(f"{base_dir}: KOSMOS-G here aligns to one text encoder; an SDXL base needs a second aligner")
    frozen = _digests(base)
    if s.source_dir is not None:
        from training.kosmos.hf_source import HFSourceModel

        source = HFSourceModel(s.source_dir)
    else:
        source = TinySourceModel.from_clip(clip_dir, TinySourceConfig(width=s.source_width, layers=s.source_layers,
                                                                      heads=s.source_heads, image_tokens=s.image_tokens,
                                                                      max_len=s.max_source_len))
    aligner = AlignerNet(AlignerConfig.preset(s.aligner_preset, source.width, base.text_encoder.config.hidden_size,
                                              max_source_len=s.max_source_len))
    captions = protocol_captions(protocol, s.captions, seed=s.seed + 1)
    held_captions = protocol_captions(protocol, s.held_out_captions, seed=999_999)
    run_tags = tracking.dagster_run_tags({"cosmicman.stage": "kosmos_g", "git.commit": git_commit(),
                                          **(snapshot.tracking_tags() if snapshot is not None else {}), **(tags or {})})
    version_tags = {"git.commit": run_tags["git.commit"], "dagster.run_id": run_tags.get("dagster.run_id", "none"),
                    "base_model": str(base_dir), "unet_digest": frozen["unet"]}
    if snapshot is not None:
        version_tags.update({"snapshot.version": snapshot.version, "snapshot.tag": snapshot.tag or "untagged",
                             "snapshot.data_hash": snapshot.data_hash or "unknown"})
    metrics: dict[str, float] = {}
    stage_runs, versions, dirs, subject = {}, {}, {}, {}

    def finish_stage(stage: str, aligned_null: bool) -> None:
        if _digests(base) != frozen:
            raise BaseChangedError(f"{base_dir}: the base's UNet or VAE changed during KOSMOS-G stage {stage!r}")
        mlflow.log_metric("base_unchanged", 1.0)
        dirs[stage] = save_kosmos(output_dir / stage, source, aligner, stage=stage, base_model=str(base_dir),
                                  unet_digest=frozen["unet"], extra={"aligned_null": aligned_null})
        versions[stage], _ = log_and_register(KOSMOS_G, {"base": str(base_dir), "kosmos": str(dirs[stage])},
                                              s.registered_model, f"kosmos-g-{stage}",
                                              {**version_tags, "kosmos.stage": stage}, model_signature=kosmos_signature())

    with mlflow_run(tracking, experiment, "kosmos-g", tags=run_tags, system_metrics=True) as parent:
        if snapshot is not None:
            from flywheel.mlflow_dataset import snapshot_dataset

            mlflow.log_input(snapshot_dataset(snapshot), context="training")
        mlflow.log_params(flatten({"base_model": str(base_dir), "clip_dir": str(clip_dir),
                                   "stage3_examples": len(examples), "subject_garments": len(held_pairs),
                                   **flatten(s.model_dump(mode="json"), "kosmos.")}))
        stages = [st for st in STAGES if (st != "instruct" or s.instruct_steps)
                  and (st != "lm" or s.source_dir is None)]  # a user's model comes pretrained
        for stage in stages:
            with mlflow_run(tracking, experiment, f"kosmos-g-{stage}", tags={**run_tags, "kosmos.stage": stage},
                            nested=True) as child:
                stage_runs[stage] = child.info.run_id
                t0 = time.perf_counter()
                log = lambda step, m: mlflow.log_metrics(m, step=step) if step % 10 == 0 or step == 1 else None
                if stage == "lm":
                    train_source_lm(source, captions, s.lm_steps, s.batch_size, s.lr, s.seed, on_log=log,
                                    pairs=garment_captions(examples), pair_share=s.lm_pair_share)
                    with torch.no_grad():
                        found = {"lm_held_out_loss": source.lm_loss([parse(c) for c in held_captions]).item()}
                        if held_pairs:  # the held-out garments' words from their images
                            found["lm_held_out_pair_loss"] = source.lm_loss(
                                [image_caption_prompt(unpng(r["crop_png"]), r["entity_text"]) for r in held_pairs]).item()
                elif stage == "align":
                    found = {f"before_{k}": v for k, v in alignment_scores(source, aligner, base, held_captions).items()
                             if k != "captions"}
                    train_alignment(source, aligner, base, captions, s.align_steps, s.batch_size, s.lr, s.seed,
                                    on_log=log)
                    found.update({k: v for k, v in alignment_scores(source, aligner, base, held_captions).items()
                                  if k != "captions"})
                else:
                    train_instruct(base, source, aligner, examples,
                                   InstructSettings(steps=s.instruct_steps, batch_size=s.instruct_batch_size,
                                                    lr=s.instruct_lr, seed=s.seed),
                                   protocol.human_class_ids, on_log=log)
                    found = {}
                found[f"{stage}_seconds"] = time.perf_counter() - t0
                mlflow.log_metrics(found)
                metrics.update({k if k.startswith(stage) else f"{stage}.{k}": v for k, v in found.items()})
                finish_stage(stage, aligned_null=stage == "instruct")
                if stage == "instruct" and s.subject_prompts:
                    subject, grid = subject_figures(base, source, aligner, held_pairs, judge, clip_dir, s.sample_steps)
                    if grid is not None:
                        mlflow.log_image(grid, "subject_samples.png")
                    numbers = {f"subject.{k}": float(v) for k, v in subject.items()
                               if isinstance(v, (int, float))}
                    mlflow.log_metrics(numbers)
                    mlflow.log_dict(subject, "subject_scores.json")
                    metrics.update(numbers)
        mlflow.log_metrics(metrics)
        return KosmosRun(parent.info.run_id, parent.info.experiment_id, s.registered_model, stage_runs, versions,
                         metrics, dirs, subject)
