"""The AI annotator: answers protocol questions with confidences, and learns from labels.

The default backend is a small multi-head attribute network, trainable from scratch on
CPU in minutes. A shared convolutional encoder embeds every part crop (chosen by the
parsing map, see :mod:`crops`); each category has its own head, which sees its part's
embedding next to the whole body's and the scene's. Predictions follow the protocol's
hierarchy: a child question is answered only when its parent's predicted answer allows it.
Training uses only the (image, category) pairs that have a label (masked cross-entropy),
so humans can label just the categories that need it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flywheel.annotation.crops import N_PART_FEATURES, Views
from flywheel.annotation.settings import AnnotatorSettings
from flywheel.protocol import Protocol


def _block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.SiLU())


class AttributeNet(nn.Module):
    def __init__(self, n_parts: int, heads: Sequence[tuple[int, int]], context: tuple[int, int], width: int = 64,
                 n_features: int = N_PART_FEATURES):
        super().__init__()
        self.encoder = nn.Sequential(_block(4, width // 4, 2), _block(width // 4, width // 2, 2), _block(width // 2, width, 2),
                                     _block(width, width, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.stats = nn.Sequential(nn.Linear(n_features, width), nn.SiLU(), nn.Linear(width, width))
        self.part_embedding = nn.Embedding(n_parts, width)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(3 * width, 2 * width), nn.SiLU(), nn.Linear(2 * width, n))
                                   for _, n in heads)
        self.head_parts = [p for p, _ in heads]
        self.context = context  # (body part index, scene part index)

    def forward(self, crops: torch.Tensor, stats: torch.Tensor) -> list[torch.Tensor]:
        b, p = crops.shape[:2]
        feats = self.encoder(crops.flatten(0, 1)).view(b, p, -1) + self.stats(stats) + self.part_embedding.weight[None]
        body, scene = feats[:, self.context[0]], feats[:, self.context[1]]
        return [head(torch.cat([feats[:, part], body, scene], dim=1)) for head, part in zip(self.heads, self.head_parts)]


def hierarchical_answers(protocol: Protocol, categories: list[str], probs: list[np.ndarray], n: int
                         ) -> tuple[list[dict[str, str | None]], list[dict[str, float]]]:
    """Most probable answers, parents first; a child is None where its parent's answer rules it out."""
    answers, confidences = [], []
    for i in range(n):
        a: dict[str, str | None] = {}
        c: dict[str, float] = {}
        for k, name in enumerate(categories):  # topological order: parents first
            if protocol.applies(name, a):
                j = int(probs[k][i].argmax())
                a[name] = protocol.categories[name].answers[j]
                c[name] = float(probs[k][i, j])
            else:
                a[name] = None
        answers.append(a)
        confidences.append(c)
    return answers, confidences


class SavedAnnotator:
    """Save/load shared by the backends: the backend's state file (written to a temporary name,
    then renamed), then annotator.json; a backend supplies ``state_file``, ``_write_state`` and
    ``_read_state``."""

    state_file: str

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f"{self.state_file}.tmp"
        self._write_state(tmp)
        tmp.replace(path / self.state_file)
        write_meta(path, self)

    @classmethod
    def load(cls, path: str | Path, protocol: Protocol):
        path = Path(path)
        meta = read_meta(path, protocol)
        obj = cls(protocol, AnnotatorSettings(**meta["settings"]))
        obj._read_state(path / cls.state_file)
        obj.version = meta["version"]
        return obj


class AttributeAnnotator(SavedAnnotator):
    """The default annotator backend (see module docstring)."""

    name = "attribute_cnn"

    def __init__(self, protocol: Protocol, settings: AnnotatorSettings | None = None):
        self.protocol = protocol
        self.settings = settings or AnnotatorSettings()
        self.categories = list(protocol.categories)
        body = protocol.body_part_index
        scene = next((i for i, p in enumerate(protocol.parts.values()) if not p.class_ids), 0)
        torch.manual_seed(self.settings.seed)
        self.net = AttributeNet(len(protocol.parts), [(protocol.part_index[name], len(c.answers)) for name, c in protocol.categories.items()],
                                (body, scene), self.settings.width)
        self.version = 0  # bumped by every fit

    # ---- inference -------------------------------------------------------------------------
    @staticmethod
    def _tensors(views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(np.ascontiguousarray(views.crops)).float().div_(255.0),
                torch.from_numpy(np.ascontiguousarray(views.stats)).float())

    @torch.inference_mode()
    def probabilities(self, views: Views, batch_size: int = 256) -> list[np.ndarray]:
        """Per category, (N, n_answers) probabilities, ignoring the hierarchy."""
        self.net.eval()
        outs: list[list[np.ndarray]] = [[] for _ in self.categories]
        for i in range(0, len(views), batch_size):
            for k, logits in enumerate(self.net(*self._tensors(views[i:i + batch_size]))):
                outs[k].append(logits.softmax(-1).numpy())
        return [np.concatenate(o) if o else np.zeros((0, len(self.protocol.categories[c].answers)))
                for o, c in zip(outs, self.categories)]

    def predict(self, views: Views) -> tuple[list[dict[str, str | None]], list[dict[str, float]]]:
        """Answers (None where the hierarchy says the question is not asked) and their confidences."""
        return hierarchical_answers(self.protocol, self.categories, self.probabilities(views), len(views))

    # ---- learning ----------------------------------------------------------------------------
    def fit(self, views: Views, labels: Sequence[Mapping[str, str]], epochs: int | None = None,
            unlabelled: Views | None = None) -> dict[str, float]:
        """Fine-tune on labelled answers: ``labels[i]`` maps category -> answer for the
        categories a human labelled on image i (others are not trained on). ``unlabelled`` (the
        flywheel passes the rest of the pool to every backend) is not used here."""
        s = self.settings
        targets = np.full((len(views), len(self.categories)), -1, dtype=np.int64)
        for i, lab in enumerate(labels):
            for k, name in enumerate(self.categories):
                if lab.get(name) is not None:
                    targets[i, k] = self.protocol.categories[name].answer_index(lab[name])
        keep = (targets >= 0).any(1)
        x_all, y_all = views[keep], torch.from_numpy(targets[keep])
        if not len(x_all):
            return {"loss": float("nan"), "labels": 0}
        gen = torch.Generator().manual_seed(s.seed + self.version)
        opt = torch.optim.AdamW(self.net.parameters(), lr=s.lr, weight_decay=1e-4)
        per_epoch = max(1, int(np.ceil(len(x_all) / s.batch_size)))
        steps = max(s.min_steps, (epochs or s.epochs) * per_epoch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss(ignore_index=-1, reduction="sum")
        self.net.train()
        last = 0.0
        order = torch.randperm(len(x_all), generator=gen)
        cursor = 0
        for _ in range(steps):
            if cursor + min(s.batch_size, len(order)) > len(order):  # next pass over the labelled images
                order, cursor = torch.randperm(len(x_all), generator=gen), 0
            idx = order[cursor:cursor + s.batch_size]
            cursor += len(idx)
            x, st = self._tensors(x_all[idx.numpy()])
            if torch.rand(1, generator=gen).item() < 0.5:  # left/right carry no label here
                x = x.flip(-1)
            y = y_all[idx]
            logits = self.net(x, st)
            n = (y >= 0).sum().clamp(min=1)
            loss = sum(loss_fn(lg, y[:, k]) for k, lg in enumerate(logits)) / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            last = float(loss.detach())
        self.version += 1
        return {"loss": last, "labels": int((targets >= 0).sum()), "images": int(keep.sum())}

    # ---- persistence (see SavedAnnotator) -------------------------------------------------------
    state_file = "weights.pt"

    def _write_state(self, path: Path) -> None:
        torch.save(self.net.state_dict(), path)

    def _read_state(self, path: Path) -> None:
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def write_meta(path: Path, annotator) -> None:
    """annotator.json, written after the weights: backend, version, settings, categories."""
    (path / "annotator.json").write_text(json.dumps({"backend": annotator.name, "version": annotator.version,
                                                     "settings": annotator.settings.model_dump(),
                                                     "categories": annotator.categories}))


def read_meta(path: Path, protocol: Protocol) -> dict:
    meta = json.loads((path / "annotator.json").read_text())
    if meta["categories"] != list(protocol.categories):
        raise ValueError(f"{path}: annotator was trained for a different protocol (categories differ)")
    return meta


def new_annotator(protocol: Protocol, settings: AnnotatorSettings):
    """A fresh annotator of the configured backend."""
    if settings.backend == "part_stats":
        from flywheel.annotation.stats_annotator import PartStatsAnnotator

        return PartStatsAnnotator(protocol, settings)
    if settings.backend == "learned":
        from flywheel.annotation.learned_annotator import LearnedAnnotator

        return LearnedAnnotator(protocol, settings)
    if settings.backend == "vlm":
        from flywheel.annotation.vlm_annotator import VlmAnnotator

        return VlmAnnotator(protocol, settings)
    return AttributeAnnotator(protocol, settings)


def load_annotator(path: str | Path, protocol: Protocol):
    """A saved annotator, whichever backend wrote it."""
    backend = json.loads((Path(path) / "annotator.json").read_text()).get("backend", "attribute_cnn")
    if backend == "part_stats":
        from flywheel.annotation.stats_annotator import PartStatsAnnotator

        return PartStatsAnnotator.load(path, protocol)
    if backend == "learned":
        from flywheel.annotation.learned_annotator import LearnedAnnotator

        return LearnedAnnotator.load(path, protocol)
    if backend == "vlm":
        from flywheel.annotation.vlm_annotator import VlmAnnotator

        return VlmAnnotator.load(path, protocol)
    return AttributeAnnotator.load(path, protocol)
