"""The truth judge: an image classifier trained only on the synthetic renderer's exact ground truth.

The annotator-judge (:mod:`evaluation.judge`) is the flywheel's own annotator, the model that
wrote the training captions, so a generator that learns the annotator's mistakes scores as right.
This judge is independent of every flywheel label: :func:`train_truth_judge` takes settings only,
renders its own scenes from its own seed range (``render_people`` at ``render_scale`` times the
working size, area-downscaled to it, as a generated image of the embedded base is 96x64), and
learns the answers the renderer drew them from. A small ResNet-style CNN sees the whole image (no
external parser, no crops): one head per protocol category, trained with cross-entropy on the
categories whose truth is not None, plus an auxiliary per-pixel loss on the renderer's own parsing
map (renderer truth as well), whose predicted soft masks pool each part's colour and features for
that part's heads, so a 3-pixel shoe is not lost in the whole image. Training images get the
degradations generated images have (resolution loss, blur, noise, JPEG, slight colour shifts). At
prediction the protocol hierarchy holds: a child is answered only when its parents' predicted
answers ask it.

Saved as a folder: ``weights.safetensors`` + ``config.json`` (settings, categories and answers,
training summary) + ``checksums.sha256`` (:mod:`flywheel.checksums`), checked at load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn
from torch.nn import functional as F

from flywheel.checksums import (
    CHECKSUMS,
    ChecksumError,
    sha256_file,
    verify_checksums,
    write_checksums,
)
from flywheel.protocol import Protocol
from flywheel.synthetic.scene import render_people

WEIGHTS_FILE, CONFIG_FILE = "weights.safetensors", "config.json"
HELD_OUT_SEED = 9_200_011  # the benchmark's and the model card's renders: never trained on
OOD_NOTE = ("trained only on the synthetic renderer's exact ground truth (never on flywheel labels); "
            "generated images are outside its training distribution, so its answers about them are indicative")


class TruthJudgeSettings(BaseModel):
    """How the truth judge is trained (its renders come from ``seed``; see the module docstring)."""

    renders: int = Field(36_000, ge=1, description="training scenes, rendered once and cached in memory (uint8)")
    seed: int = Field(9_100_007, description="renderer seed of the training scenes (keep clear of the source's and "
                      "other components' seeds: 0, 1, 7_000_003, the held-out 9_200_011)")
    epochs: float = Field(7.5, gt=0, description="passes over the renders")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (overrides epochs)")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(3e-3, gt=0, description="peak learning rate (one-cycle schedule, AdamW)")
    weight_decay: float = Field(5e-4, ge=0)
    height: int = Field(96, ge=16, description="working height (the embedded base generates 96x64)")
    width: int = Field(64, ge=16)
    render_scale: int = Field(2, ge=1, description="scenes are rendered at this multiple, then area-downscaled")
    channels: tuple[int, ...] = Field((16, 32, 64, 128), min_length=3, description="backbone widths per level")
    blocks: tuple[int, ...] = Field((0, 0, 1, 1), description="residual blocks per level, after its (strided) conv")
    hidden: int = Field(256, ge=8, description="width of the shared feature every head reads")
    degrade_fraction: float = Field(0.75, ge=0, le=1, description="training images that get degradations")
    flip: bool = Field(True, description="mirror half the training images (no category is left/right)")
    balance: float = Field(0.0, ge=0, le=1, description="category loss weight ~ (share of renders it is asked on) ** "
                           "-balance: rare children (skirt length) count more, as they do in the per-category mean; 0: plain sum")
    bf16: bool = Field(True, description="train under bfloat16 autocast (faster on CPUs with AVX-512 BF16); "
                       "prediction is float32")
    parsing_weight: float = Field(4.0, ge=0, description="weight of an auxiliary per-pixel loss on the renderer's parsing "
                                  "maps (renderer truth as well; it teaches where the small parts are); 0: answers only")

    @model_validator(mode="after")
    def _divisible(self):
        if len(self.blocks) != len(self.channels):
            raise ValueError(f"blocks {self.blocks}: one count per level of channels {self.channels}")
        step = 2 ** len(self.channels)
        if self.height % step or self.width % step:
            raise ValueError(f"height {self.height} and width {self.width} must be multiples of {step} "
                             f"(2 ** number of backbone levels, {len(self.channels)})")
        return self


# ---- data: renders and their truth -----------------------------------------------------------


def render_set(protocol: Protocol, n: int, seed: int, height: int = 96, width: int = 64, scale: int = 2
               ) -> tuple[np.ndarray, list[dict[str, str | None]], np.ndarray]:
    """``n`` single-person renders from ``seed``: (N, height, width, 3) uint8 images (rendered at
    ``scale`` times the size, INTER_AREA-downscaled), each person's true answers, and the
    renderer's parsing maps at half the working size (N, height/2, width/2) in side-free classes
    (:func:`side_free_classes`)."""
    rng = np.random.default_rng(seed)
    lut = side_free_classes(protocol)[0]
    images = np.empty((n, height, width, 3), np.uint8)
    maps = np.empty((n, height // 2, width // 2), np.uint8)
    truths = []
    for i in range(n):
        image, labels, people, _ = render_people(rng, protocol, width * scale, height * scale, 1)
        images[i] = image if scale == 1 else cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        maps[i] = lut[cv2.resize(labels, (width // 2, height // 2), interpolation=cv2.INTER_NEAREST)]
        truths.append({c: people[0].answers.get(c) for c in protocol.categories})
    return images, truths, maps


def side_free_classes(protocol: Protocol) -> tuple[np.ndarray, list[str]]:
    """(lookup class id -> side-free id, side-free names): left-/right- pairs merged (a mirrored
    image keeps its map's meaning)."""
    names = [c.removeprefix("left-").removeprefix("right-") for c in protocol.parsing_classes]
    merged = list(dict.fromkeys(names))
    return np.array([merged.index(c) for c in names], np.uint8), merged


def encode_truths(protocol: Protocol, truths: Sequence[Mapping[str, str | None]]) -> np.ndarray:
    """(N, categories) int64 answer indices, -1 where the truth is None (not asked)."""
    out = np.full((len(truths), len(protocol.categories)), -1, np.int64)
    for i, truth in enumerate(truths):
        for k, (name, cat) in enumerate(protocol.categories.items()):
            if truth.get(name) is not None:
                out[i, k] = cat.answer_index(truth[name])
    return out


def degrade(image: np.ndarray, rng: np.random.Generator, p: float = 0.5, colour: bool = True) -> np.ndarray:
    """A generated image's artefacts, each with probability ``p`` (``p=1``: all four): area
    downscale by 1.3-2.5x and linear upscale, Gaussian blur (sigma 0.3-1.0), Gaussian noise
    (sigma 2-8 of 255), JPEG at quality 30-90; ``colour``: gain +-6% per channel, offset +-8."""
    h, w = image.shape[:2]
    x = image
    if rng.random() < p:
        f = rng.uniform(1.3, 2.5)
        small = cv2.resize(x, (max(4, round(w / f)), max(4, round(h / f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < p:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0))
    noise = rng.random() < p
    if colour or noise:
        y = x.astype(np.float32)
        if colour:
            y = y * rng.uniform(0.94, 1.06, 3).astype(np.float32) + np.float32(rng.uniform(-8, 8))
        if noise:
            y = y + rng.normal(0, rng.uniform(2, 8), y.shape).astype(np.float32)
        x = np.clip(y + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < p:
        _, buf = cv2.imencode(".jpg", x[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(x)


# ---- the network -----------------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class TruthJudgeNet(nn.Module):
    """RGB (N, 3, H, W) -> {category: logits}.

    The first level works at half size on a 2x2 space-to-depth input (every pixel kept, a
    quarter of the cost); each later level halves the size. A parsing head (levels 2 and 3)
    predicts the renderer's map at half size; its soft masks pool the first three levels' features
    over each protocol part (the shoes, the belt, the scarf...), so a category's head reads its
    part's pooled feature beside the whole image's (the last map, kept spatially and averaged).
    Everything is learned from the image: no external parser, no crops."""

    def __init__(self, heads: Mapping[str, int], height: int, width: int, channels: Sequence[int], blocks: Sequence[int],
                 hidden: int, part_masks: np.ndarray, head_parts: Sequence[int], part_width: int = 64):
        super().__init__()
        self.levels = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip([12, *channels], channels)):
            first = [nn.PixelUnshuffle(2)] if i == 0 else []
            self.levels.append(nn.Sequential(*first, _conv(cin, cout, 1 if i == 0 else 2),
                                             *[_Residual(cout) for _ in range(blocks[i])]))
        cells = (height // 2 ** len(channels)) * (width // 2 ** len(channels))
        self.project = nn.Sequential(nn.Conv2d(channels[-1], 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.shared = nn.Sequential(nn.Linear(32 * cells + channels[-1], hidden), nn.ReLU(inplace=True), nn.Dropout(0.1))
        classes, parts = part_masks.shape[1], part_masks.shape[0]
        self.parse_fine = nn.Conv2d(channels[1], classes, 1)
        self.parse_coarse = nn.Conv2d(channels[2], classes, 1, bias=False)
        self.register_buffer("part_masks", torch.from_numpy(part_masks.astype(np.float32)), persistent=False)  # (P, C)
        pooled = 1 + 3 + sum(channels[:3])  # log area, mean colour, three levels' features
        self.part_project = nn.ModuleList(nn.Sequential(nn.Linear(pooled, part_width), nn.ReLU(inplace=True))
                                          for _ in range(parts))
        self.head_parts = list(head_parts)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden + part_width, n) for name, n in heads.items()})

    def _levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out

    def _global(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.shared(torch.cat([self.project(fmap).flatten(1), fmap.mean((2, 3))], 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._global(self._levels(x)[-1])

    def forward(self, x: torch.Tensor, parsing: bool = False):
        """{category: logits}; with ``parsing``, also the (N, classes, H/2, W/2) parsing logits."""
        maps = self._levels(x)
        size = maps[0].shape[-2:]
        fine = self.parse_fine(maps[1]) + F.interpolate(self.parse_coarse(maps[2]), size=maps[1].shape[-2:], mode="nearest")
        logits = F.interpolate(fine, size=size, mode="bilinear", align_corners=False)
        masks = torch.einsum("nchw,pc->nphw", logits.detach().softmax(1), self.part_masks)  # (N, P, h, w) soft part masks
        area = masks.sum((2, 3), keepdim=True)
        masks = masks / area.clamp_min(1e-3)  # each part's pooling weights sum to 1 (when it is there at all)
        pooled = [area.flatten(2).add(1).log()]
        for f in (F.avg_pool2d(x, 2), *maps[:3]):  # mean colour, then each level's features at its own size
            k = size[0] // f.shape[-2]
            weights = masks if k == 1 else F.avg_pool2d(masks, k) * (k * k)
            pooled.append(torch.einsum("nphw,nchw->npc", weights, f))
        pooled = torch.cat(pooled, 2)
        parts = [project(pooled[:, p]) for p, project in enumerate(self.part_project)]
        g = self._global(maps[-1])
        answers = {name: head(torch.cat([g, parts[p]], 1)) for (name, head), p in zip(self.heads.items(), self.head_parts)}
        return (answers, logits) if parsing else answers


def part_masks(protocol: Protocol) -> tuple[np.ndarray, list[int]]:
    """((parts, side-free classes) 0/1 matrix, each category's part row): a part without classes
    (the scene) pools the background."""
    lut, names = side_free_classes(protocol)
    rows = []
    for part in protocol.parts.values():
        row = np.zeros(len(names), np.float32)
        row[[int(lut[c]) for c in part.class_ids] or [0]] = 1
        rows.append(row)
    return np.stack(rows), [protocol.part_index[c] for c in protocol.categories]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)
    return x.contiguous(memory_format=torch.channels_last)


# ---- the judge -------------------------------------------------------------------------------


class TruthJudge:
    """Answers every protocol category about whole images; ``answer_images`` is what evaluation
    calls (images of another size are area-resized to the working size first)."""

    def __init__(self, protocol: Protocol, settings: TruthJudgeSettings, training: dict | None = None):
        self.protocol, self.settings = protocol, settings
        self.categories = list(protocol.categories)
        self.net = TruthJudgeNet({c: len(protocol.categories[c].answers) for c in self.categories},
                                 settings.height, settings.width, settings.channels, settings.blocks, settings.hidden,
                                 *part_masks(protocol))
        self.net = self.net.to(memory_format=torch.channels_last)
        self.training = dict(training or {})  # what train_truth_judge measured: renders, steps, seconds
        self.version = ""  # sha256 (first 12) of the weights once trained or loaded
        self.parser_note = OOD_NOTE
        self.note = OOD_NOTE

    @property
    def identity(self) -> str:
        return (f"truth judge {self.version or '(untrained)'} (whole-image CNN, {self.settings.renders} renders "
                f"of seed {self.settings.seed}, renderer ground truth only)")

    def _input(self, images: Sequence[np.ndarray]) -> np.ndarray:
        h, w = self.settings.height, self.settings.width
        out = np.empty((len(images), h, w, 3), np.uint8)
        for i, im in enumerate(images):
            im = np.asarray(im)
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"image {i}: expected an RGB uint8 array (H, W, 3), got {im.dtype} {im.shape}")
            out[i] = im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        return out

    @torch.inference_mode()
    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 256) -> dict[str, np.ndarray]:
        """{category: (N, answers) softmax}, whatever the hierarchy says."""
        self.net.eval()
        x = self._input(images)
        out: dict[str, list[np.ndarray]] = {c: [] for c in self.categories}
        for s in range(0, len(x), batch_size):
            for c, logits in self.net(_to_tensor(x[s:s + batch_size])).items():
                out[c].append(logits.softmax(1).numpy())
        n = {c: len(self.protocol.categories[c].answers) for c in self.categories}
        return {c: np.concatenate(v) if v else np.zeros((0, n[c]), np.float32) for c, v in out.items()}

    def predict(self, images: Sequence[np.ndarray]) -> tuple[list[dict[str, str | None]], list[dict[str, float]]]:
        """(answers, confidences) per image; parents first, a child is None unless its predicted
        parents ask it (``protocol.applies``)."""
        probs = self.probabilities(images)
        answers, confidences = [], []
        for i in range(len(images)):
            a: dict[str, str | None] = {}
            conf: dict[str, float] = {}
            for name in self.categories:  # protocol order: parents before children
                if self.protocol.applies(name, a):
                    j = int(probs[name][i].argmax())
                    a[name], conf[name] = self.protocol.categories[name].answers[j], float(probs[name][i, j])
                else:
                    a[name] = None
            answers.append(a)
            confidences.append(conf)
        return answers, confidences

    def answer_images(self, images: Sequence[np.ndarray]) -> list[dict[str, str | None]]:
        return self.predict(images)[0]

    @torch.inference_mode()
    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, hidden) the shared feature the heads read (a feature space for FD/KID)."""
        self.net.eval()
        x = self._input(images)
        return np.concatenate([self.net.features(_to_tensor(x[s:s + 256])).numpy() for s in range(0, len(x), 256)]
                              or [np.zeros((0, self.settings.hidden), np.float32)]).astype(np.float64)

    # ---- save / load -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write weights, config and their checksums into ``folder`` (each via a temporary name)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(folder / f"{WEIGHTS_FILE}.tmp"))
        (folder / f"{WEIGHTS_FILE}.tmp").replace(folder / WEIGHTS_FILE)
        config = {"kind": "truth-judge", "protocol": {"name": self.protocol.name, "version": self.protocol.version},
                  "categories": {c: list(self.protocol.categories[c].answers) for c in self.categories},
                  "settings": self.settings.model_dump(mode="json"), "training": self.training, "note": OOD_NOTE}
        (folder / f"{CONFIG_FILE}.tmp").write_text(json.dumps(config, indent=1) + "\n")
        (folder / f"{CONFIG_FILE}.tmp").replace(folder / CONFIG_FILE)
        write_checksums(folder)
        self.version = sha256_file(folder / WEIGHTS_FILE)[:12]
        return folder

    @classmethod
    def load(cls, folder: str | Path, protocol: Protocol) -> TruthJudge:
        """A saved judge; every file is checked against its checksums (:mod:`flywheel.checksums`)
        and the protocol's categories and answers must be the ones it was trained for."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not verify_checksums(folder):
            raise ChecksumError(f"{folder / CHECKSUMS}: missing (a truth judge folder has {WEIGHTS_FILE}, {CONFIG_FILE}, "
                                f"{CHECKSUMS})")
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise ChecksumError(f"{folder / name}: missing (not listed in {folder / CHECKSUMS})")
        config = json.loads((folder / CONFIG_FILE).read_text())
        theirs = {c: list(a.answers) for c, a in protocol.categories.items()}
        if config.get("categories") != theirs:
            diff = sorted(set(theirs) ^ set(config.get("categories", {})) or
                          {c for c in theirs if config["categories"].get(c) != theirs[c]})
            raise ValueError(f"{folder / CONFIG_FILE}: trained for other categories or answers than protocol "
                             f"{protocol.source} (differs in {diff})")
        judge = cls(protocol, TruthJudgeSettings(**config["settings"]), config.get("training"))
        judge.net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        judge.version = sha256_file(folder / WEIGHTS_FILE)[:12]
        return judge


# ---- training ---------------------------------------------------------------------------------


def train_truth_judge(protocol: Protocol, settings: TruthJudgeSettings,
                      progress: Callable[[str, int, int, float], None] | None = None) -> TruthJudge:
    """Render ``settings.renders`` scenes from ``settings.seed`` and fit a judge to their truth.

    Takes no labels, pool or annotator on purpose: its only supervision is the renderer's.
    ``progress(phase, done, total, loss)`` is called while rendering and every 20 steps."""
    s = settings
    t0 = time.perf_counter()
    images, truths, maps = render_set(protocol, s.renders, s.seed, s.height, s.width, s.render_scale)
    render_seconds = time.perf_counter() - t0
    if progress:
        progress("rendered", s.renders, s.renders, float("nan"))
    targets = torch.from_numpy(encode_truths(protocol, truths))
    asked = (targets >= 0).float().mean(0).clamp_min(1 / s.renders)  # share of renders each category is asked on
    weights = asked ** -s.balance
    weights = weights * asked.sum() / (weights * asked).sum()  # the same total weight as the plain sum
    batch = min(s.batch_size, s.renders)
    steps = s.max_steps or max(1, round(s.epochs * s.renders / batch))
    rng = np.random.default_rng([s.seed, 1])
    t1 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        judge = TruthJudge(protocol, s)  # the weights' initialisation follows the seed too
        net = judge.net
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps, pct_start=0.15)
        net.train()
        order, pos, loss = rng.permutation(s.renders), 0, torch.tensor(float("nan"))
        for step in range(steps):
            if pos + batch > s.renders:
                order, pos = rng.permutation(s.renders), 0
            idx = order[pos:pos + batch]
            pos += batch
            xb = np.stack([degrade(images[i], rng, p=0.5) if rng.random() < s.degrade_fraction else images[i] for i in idx])
            mb = maps[idx]
            if s.flip:
                mirror = rng.random(len(xb)) < 0.5
                xb[mirror], mb[mirror] = xb[mirror, :, ::-1], mb[mirror, :, ::-1]
            yb = targets[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
                logits, parsing = net(_to_tensor(xb), parsing=True)
            losses = [F.cross_entropy(logits[c].float(), yb[:, k], ignore_index=-1, reduction="sum")
                      for k, c in enumerate(judge.categories)]
            loss = (torch.stack(losses) * weights).sum() / len(idx)
            if s.parsing_weight:
                loss = loss + s.parsing_weight * F.cross_entropy(parsing.float(), torch.from_numpy(mb).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress and (step % 20 == 0 or step == steps - 1):
                progress("training", step + 1, steps, float(loss.detach()))
    judge.training = {"renders": s.renders, "steps": steps, "final_loss": round(float(loss.detach()), 4),
                      "render_seconds": round(render_seconds, 1), "train_seconds": round(time.perf_counter() - t1, 1),
                      "torch_threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in net.parameters())}
    return judge


# ---- how well it does -------------------------------------------------------------------------


def category_accuracy(protocol: Protocol, predictions: Sequence[Mapping[str, str | None]],
                      truths: Sequence[Mapping[str, str | None]]) -> dict[str, tuple[float, int]]:
    """{category: (accuracy, images)} over the images whose truth answers the category (a
    prediction of None there, from a mispredicted parent, counts as wrong)."""
    out = {}
    for name in protocol.categories:
        hits = [pred.get(name) == truth[name] for pred, truth in zip(predictions, truths) if truth.get(name) is not None]
        out[name] = (float(np.mean(hits)) if hits else float("nan"), len(hits))
    return out


def degraded_copies(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image with every degradation of :func:`degrade` (random strengths, no colour shift),
    one seeded mix per image: the benchmark's 'degraded' set."""
    rng = np.random.default_rng([seed, 2])
    return np.stack([degrade(im, rng, p=1.0, colour=False) for im in images])


def held_out_report(judge: TruthJudge, n: int = 2000, seed: int = HELD_OUT_SEED, by_shot: bool = False
                    ) -> dict[str, dict[str, tuple[float, int]]]:
    """{'clean': per-category accuracy, 'degraded': ...} on ``n`` fresh renders of ``seed``; with
    ``by_shot`` also 'clean, <person type>': the clean accuracy within each true shot (what the
    person's size in the frame allows)."""
    s = judge.settings
    images, truths, _ = render_set(judge.protocol, n, seed, s.height, s.width, s.render_scale)
    clean = judge.answer_images(list(images))
    out = {"clean": category_accuracy(judge.protocol, clean, truths),
           "degraded": category_accuracy(judge.protocol, judge.answer_images(list(degraded_copies(images, seed))), truths)}
    for shot in judge.protocol.categories["person_type"].answers if by_shot else ():
        keep = [i for i, t in enumerate(truths) if t["person_type"] == shot]
        out[f"clean, {shot}"] = category_accuracy(judge.protocol, [clean[i] for i in keep], [truths[i] for i in keep])
    return out


def mean_accuracy(per_category: Mapping[str, tuple[float, int]]) -> float:
    values = [a for a, n in per_category.values() if n]
    return float(np.mean(values)) if values else float("nan")


# ---- the committed artefact ---------------------------------------------------------------------


def write_truth_judge(protocol: Protocol, settings: TruthJudgeSettings, folder: str | Path, held_out: int = 2000,
                      progress: Callable[[str, int, int, float], None] | None = None
                      ) -> tuple[TruthJudge, dict[str, dict[str, tuple[float, int]]]]:
    """Train (:func:`train_truth_judge`), score on ``held_out`` renders of :data:`HELD_OUT_SEED`,
    save into ``folder`` and write its model card (README.md). Returns (judge, held-out report)."""
    judge = train_truth_judge(protocol, settings, progress)
    report = held_out_report(judge, held_out, by_shot=True) if held_out else {}
    judge.training["held_out"] = {"renders": held_out, "seed": HELD_OUT_SEED,
                                  **{f"mean_{k}": round(mean_accuracy(report[k]), 4) for k in ("clean", "degraded") if report}}
    judge.save(folder)
    (Path(folder) / "README.md").write_text(model_card(judge, report))
    return judge, report


def model_card(judge: TruthJudge, report: Mapping[str, Mapping[str, tuple[float, int]]]) -> str:
    """README.md of a saved judge: recipe, training time, held-out accuracy per category."""
    s, t = judge.settings, judge.training
    recipe = {
        "data": (f"{s.renders} single-person scenes of `flywheel.synthetic.scene.render_people`, seed {s.seed}, rendered "
                 f"at {s.width * s.render_scale}x{s.height * s.render_scale} (w x h) and INTER_AREA-downscaled to "
                 f"{s.width}x{s.height}; targets: the renderer's exact answers (None = not asked, no loss) and its "
                 "parsing map (left/right merged, half size)"),
        "augmentation": (f"{s.degrade_fraction:.0%} of the images get `degrade` (each with p 0.5: downscale 1.3-2.5x "
                         "and upscale, Gaussian blur sigma 0.3-1.0, Gaussian noise sigma 2-8, JPEG quality 30-90; "
                         "always a colour shift of +-6% gain, +-8 offset)" + (", half mirrored" if s.flip else "")),
        "network": (f"2x2 space-to-depth, levels {list(s.channels)} (residual blocks {list(s.blocks)}), BatchNorm; a "
                    "parsing head on levels 2-3 whose soft masks pool colour and features per protocol part; one "
                    f"linear head per category on a {s.hidden}-wide whole-image feature plus its part's pooled feature "
                    f"({t.get('parameters', '?')} parameters)"),
        "training": (f"{t.get('steps')} AdamW steps of {s.batch_size} (one-cycle, peak lr {s.lr}, weight decay "
                     f"{s.weight_decay}{', bfloat16 autocast' if s.bf16 else ''}); loss: cross-entropy summed over the "
                     "answered categories" + (f" (weighted by asked share ** -{s.balance})" if s.balance else "")
                     + f" + {s.parsing_weight} x per-pixel parsing cross-entropy; final loss {t.get('final_loss')}"),
        "time": (f"on the development machine (2 CPU cores shared with another job, {t.get('torch_threads')} torch "
                 f"thread): rendering {t.get('render_seconds')} s, training {t.get('train_seconds')} s"),
        "prediction": ("parents first; a child category is answered only when `protocol.applies` holds for the "
                       "predicted parents, else None"),
    }
    lines = ["# Truth judge", "",
             (f"An evaluation judge for generated {s.height}x{s.width} (h x w) images, independent of the flywheel "
              f"(`evaluation/truth_judge.py`): {OOD_NOTE}."), "", "## Recipe", ""]
    lines += [f"- {k}: {v}" for k, v in recipe.items()]
    lines += ["", "Train it again with `cosmicman train-judge`; `benchmarks/truth_judge.py` scores it.", ""]
    if report:
        held = t.get("held_out", {})
        lines += [f"## Accuracy on {held.get('renders')} held-out renders (seed {held.get('seed')})", "",
                  ("Per category, over the renders whose truth answers it (a None from a mispredicted parent counts "
                   "as wrong). Degraded: every degradation above at a random strength, one seeded mix per image, no "
                   "colour shift."), "",
                  "| category | renders | clean | degraded |", "| --- | ---: | ---: | ---: |"]
        shots = [k for k in report if k.startswith("clean, ")]
        for name, (acc, n) in report["clean"].items():
            lines.append(f"| {name} | {n} | {acc:.3f} | {report['degraded'][name][0]:.3f} |")
        clean, degraded = mean_accuracy(report["clean"]), mean_accuracy(report["degraded"])
        lines += [f"| **mean over categories** | | **{clean:.3f}** | **{degraded:.3f}** |", ""]
        weak = [name for name, (acc, _) in report["clean"].items() if acc < 0.9]
        if shots and weak:
            lines += ["## Where it falls short", "",
                      ("Categories below 0.9 clean, by the person's true shot (renders in brackets). Most of the "
                       "shortfall is in full-body frames, where a mouth, a hat's shape or a shoe is a few pixels at "
                       "96x64, and in body shape on headshots, whose body is out of frame (three answers); the training "
                       "loss was still falling at the end, so part of the rest is the CPU training budget."), "",
                      "| category | " + " | ".join(k.removeprefix("clean, ") for k in shots) + " |",
                      "| --- |" + " ---: |" * len(shots)]
            for name in weak:
                cells = [f"{report[k][name][0]:.3f} ({report[k][name][1]})" if report[k][name][1] else "-" for k in shots]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"
