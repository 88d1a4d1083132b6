"""The ``learned`` annotator backend: a part encoder pretrained on the pool without labels, read by
one linear classifier per category that the flywheel's labels fine-tune.

:meth:`LearnedAnnotator.pretrain` trains the :mod:`part_encoder` by SimCLR on every part crop of
the pool (no labels; once, before iteration 0). Each category's classifier then sees, beside the
``part_stats`` features (exact statistics the parsing map gives: colour histograms, boxes,
layout), the encoder's embedding of its own part's crop and of the whole body's (and, for
questions about the person, the face's and the hair's). The classifiers are the same
standardised multinomial logistic regressions as ``part_stats`` (shared models for questions
asked of several parts), so a few labels per category go a long way; the encoder, frozen after
pretraining, supplies the shapes hand-made features miss.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from flywheel.annotation.crops import Views
from flywheel.annotation.part_encoder import PartEncoder, embed, pretrain_encoder
from flywheel.annotation.settings import AnnotatorSettings
from flywheel.annotation.stats_annotator import PartStatsAnnotator
from flywheel.protocol import Protocol

PERSON_PARTS = ("face", "hair")  # read, beside the body, by questions asked of the whole person


class LearnedAnnotator(PartStatsAnnotator):
    """See the module docstring; the interface of every backend, plus :meth:`pretrain`."""

    name = "learned"

    def __init__(self, protocol: Protocol, settings: AnnotatorSettings | None = None):
        super().__init__(protocol, settings or AnnotatorSettings(backend="learned"))
        self.encoder: PartEncoder | None = None
        self.pretrain_summary: dict = {}
        parts = list(protocol.parts)
        self.person_parts = [parts.index(p) for p in PERSON_PARTS if p in parts]

    def pretrain(self, views: Views, log=None) -> dict:
        """Contrastive pretraining of the encoder on ``views`` (the pool; labels never read)."""
        self.encoder, self.pretrain_summary = pretrain_encoder(views.crops, self.settings.pretrain, log)
        return self.pretrain_summary

    def _embedded(self, views: Views) -> "EmbeddedViews":
        if isinstance(views, EmbeddedViews):
            return views
        if self.encoder is None:
            raise RuntimeError("learned annotator: pretrain() it on the pool before fitting or predicting")
        return EmbeddedViews(views.crops, views.stats, embed(self.encoder, views.crops))

    def features(self, views: Views, category: str) -> np.ndarray:
        e = self._embedded(views).embeddings
        p = self.part_index[category]
        parts = [p] if self._part_only(self.model_of[category]) else \
            list(dict.fromkeys([p, self.body, *(self.person_parts if p == self.body else [])]))
        return np.concatenate([super().features(views, category), *(e[:, q] for q in parts)], 1)

    def probabilities(self, views: Views, batch_size: int = 0) -> list[np.ndarray]:
        return super().probabilities(self._embedded(views), batch_size)  # every part embedded once, not per category

    def fit(self, views: Views, labels, epochs: int | None = None, unlabelled: Views | None = None) -> dict[str, float]:
        return super().fit(self._embedded(views), labels, epochs,
                           None if unlabelled is None else self._embedded(unlabelled))

    def _join(self, a: Views, b: Views) -> "EmbeddedViews":
        a, b = self._embedded(a), self._embedded(b)
        return EmbeddedViews(np.concatenate([a.crops, b.crops]), np.concatenate([a.stats, b.stats]),
                             np.concatenate([a.embeddings, b.embeddings]))

    # ---- persistence: the classifiers and the encoder in one pickle (state bytes only) -----------
    state_file = "learned.pkl"

    def _write_state(self, path: Path) -> None:
        buf = io.BytesIO()
        if self.encoder is not None:
            torch.save(self.encoder.state_dict(), buf)
        path.write_bytes(pickle.dumps({"models": self.models, "encoder": buf.getvalue() or None,
                                       "pretrain": self.pretrain_summary}))

    def _read_state(self, path: Path) -> None:
        state = pickle.loads(path.read_bytes())  # written by _write_state above, never by a user
        self.models, self.pretrain_summary = state["models"], state["pretrain"]
        self.encoder = None
        if state["encoder"] is not None:
            self.encoder = PartEncoder(self.settings.pretrain.width, self.settings.pretrain.grid)
            self.encoder.load_state_dict(torch.load(io.BytesIO(state["encoder"]), map_location="cpu", weights_only=True))
            self.encoder.eval()


class EmbeddedViews(Views):
    """Views with every part's embedding beside them (N, P, D), sliced together."""

    def __init__(self, crops: np.ndarray, stats: np.ndarray, embeddings: np.ndarray):
        super().__init__(crops, stats)
        self.embeddings = embeddings

    def __getitem__(self, idx) -> "EmbeddedViews":
        return EmbeddedViews(self.crops[idx], self.stats[idx], self.embeddings[idx])

