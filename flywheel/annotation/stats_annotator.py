"""A label-efficient annotator backend: one small linear classifier per category over
features the parsing map makes cheap to read exactly.

Per category, the features are: its part's statistics (presence, area, box relative to
the body, colour mean/spread, dark/bright/red shares, texture energy — see
:func:`crops.part_features`), a 4x4x4 colour histogram of the part's own pixels (so a
colour question looks at that garment's colour, not the picture's), the body's statistics,
the outline's gradient-orientation histogram (shape: cap or sun hat), and every part's
presence and box (layout: pose, arm pose, length and fit). A standardised
multinomial logistic regression per category learns from a handful of labels, which is
what the flywheel's label budget affords; the CNN backend (:mod:`annotator`) needs far
more. Each fit retrains every category from all labels so far (seconds on CPU).

Categories that ask the same question of different parts share one model: texture
categories with the same name suffix (every ``*_color``, every ``*_pattern``) and
categories with identical answers (``sleeve_length``, ``dress_sleeve``). A shared model
sees only the part's own features and learns from every member's labels, so a rare
garment's colour is read with what the frequent garments taught; its probabilities are
renormalised over each member's own answers.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flywheel.annotation.annotator import (
    AnnotatorSettings,
    SavedAnnotator,
    hierarchical_answers,
)
from flywheel.annotation.crops import N_BASE_FEATURES, Views
from flywheel.protocol import Protocol


def colour_histogram(crops: np.ndarray) -> np.ndarray:
    """(N, 64) share of the masked pixels of each crop in each of 4x4x4 RGB bins."""
    rgb = crops[:, :3].reshape(len(crops), 3, -1) // 64  # (N, 3, S*S) bin index per channel
    mask = crops[:, 3].reshape(len(crops), -1) > 127
    idx = rgb[:, 0] * 16 + rgb[:, 1] * 4 + rgb[:, 2]
    out = np.zeros((len(crops), 64), np.float32)
    for i in range(len(crops)):
        if mask[i].any():
            out[i] = np.bincount(idx[i][mask[i]], minlength=64)[:64] / mask[i].sum()
    return out


def shape_histogram(crops: np.ndarray, cells: int = 4) -> np.ndarray:
    """(N, cells*cells*8) gradient-orientation histograms (HOG-like) of the part mask's outline:
    the silhouette that tells a cap from a sun hat or a backpack from a handbag."""
    import cv2

    out = np.zeros((len(crops), cells * cells * 8), np.float32)
    for i, c in enumerate(crops):
        m = c[3].astype(np.float32) / 255.0
        gx, gy = cv2.Sobel(m, cv2.CV_32F, 1, 0), cv2.Sobel(m, cv2.CV_32F, 0, 1)
        mag, ang = np.hypot(gx, gy), (np.arctan2(gy, gx) % np.pi) / np.pi * 8
        bins = np.minimum(ang.astype(int), 7)
        s = m.shape[0] // cells
        for a in range(cells):
            for b in range(cells):
                sl = (slice(a * s, (a + 1) * s), slice(b * s, (b + 1) * s))
                out[i, (a * cells + b) * 8:(a * cells + b + 1) * 8] = np.bincount(bins[sl].ravel(), mag[sl].ravel(), 8)
        total = out[i].sum()
        if total > 0:
            out[i] /= total
    return out


LAYOUT = [0, 1, 2, 3, 4, 5, N_BASE_FEATURES, N_BASE_FEATURES + 1]  # of crops.part_features' columns


class PartStatsAnnotator(SavedAnnotator):
    """The ``part_stats`` backend (see module docstring); same interface as the CNN backend."""

    name = "part_stats"

    def __init__(self, protocol: Protocol, settings: AnnotatorSettings | None = None):
        self.protocol = protocol
        self.settings = settings or AnnotatorSettings(backend="part_stats")
        self.categories = list(protocol.categories)
        self.part_index = protocol.part_index
        self.body = protocol.body_part_index
        self.models: dict[str, object] = {}  # model key -> fitted pipeline, or the only answer seen (str)
        self.version = 0
        self.model_of = shared_models(protocol)  # category -> model key

    def _part_only(self, key: str) -> bool:
        return key.startswith("shared:")

    def features(self, views: Views, category: str) -> np.ndarray:
        p = self.part_index[category]
        own = [views.stats[:, p], colour_histogram(views.crops[:, p])]
        if self._part_only(self.model_of[category]):
            return np.concatenate(own, 1)
        own.append(shape_histogram(views.crops[:, p]))
        layout = views.stats[:, :, LAYOUT].reshape(len(views), -1)  # presence, area, box, size in faces of every part
        return np.concatenate([*own, views.stats[:, self.body], layout], 1)

    def probabilities(self, views: Views, batch_size: int = 0) -> list[np.ndarray]:
        out = []
        for c in self.categories:
            answers = self.protocol.categories[c].answers
            probs = np.full((len(views), len(answers)), 1.0 / len(answers), np.float32)
            model = self.models.get(self.model_of[c])
            if isinstance(model, str) and model in answers:
                probs[:] = 0.0
                probs[:, answers.index(model)] = 1.0
            elif model is not None and not isinstance(model, str) and len(views):
                p = model.predict_proba(self.features(views, c))
                own = [j for j, label in enumerate(model.classes_) if label in answers]
                if own:
                    probs[:] = 1e-6
                    for j in own:
                        probs[:, answers.index(model.classes_[j])] += p[:, j]
                    probs /= probs.sum(1, keepdims=True)
            out.append(probs)
        return out

    def predict(self, views: Views) -> tuple[list[dict[str, str | None]], list[dict[str, float]]]:
        return hierarchical_answers(self.protocol, self.categories, self.probabilities(views), len(views))

    def fit(self, views: Views, labels: Sequence[Mapping[str, str]], epochs: int | None = None,
            unlabelled: Views | None = None) -> dict[str, float]:
        """Fit every category's model on ``labels`` (category -> answer per image of ``views``).
        With ``unlabelled`` images (the rest of the pool) and ``settings.pseudo_label_confidence``
        set, one round of self-training follows: the answers the fitted models give with at least
        that confidence join the labels (as answers, never as paid labels) and every model is fitted
        again."""
        summary = self._fit(views, labels)
        threshold = self.settings.pseudo_label_confidence
        if unlabelled is not None and len(unlabelled) and threshold is not None:
            answers, confidences = self.predict(unlabelled)
            pseudo = [{c: a for c, a in ans.items() if a is not None and conf.get(c, 0.0) >= threshold}
                      for ans, conf in zip(answers, confidences)]
            keep = [i for i, p in enumerate(pseudo) if p]
            if keep:
                summary = self._fit(self._join(views, unlabelled[np.array(keep)]), [*labels, *(pseudo[i] for i in keep)])
                summary["pseudo_labels"] = sum(len(pseudo[i]) for i in keep)
        self.version += 1
        return summary

    def _join(self, a: Views, b: Views) -> Views:
        return Views.concat([a, b])

    def _fit(self, views: Views, labels: Sequence[Mapping[str, str]]) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        n = 0
        for key in sorted(set(self.model_of.values())):
            xs, ys = [], []
            for c in (c for c in self.categories if self.model_of[c] == key):
                rows = [i for i, lab in enumerate(labels) if lab.get(c) is not None]
                if rows:
                    xs.append(self.features(views[np.array(rows)], c))
                    ys += [labels[i][c] for i in rows]
            if not ys:
                continue
            n += len(ys)
            if len(set(ys)) == 1:
                self.models[key] = ys[0]
                continue
            model = make_pipeline(StandardScaler(), LogisticRegression(C=self.settings.regularisation, max_iter=2000))
            self.models[key] = model.fit(np.concatenate(xs), ys)
        return {"labels": n, "images": len(labels), "categories": len(self.models)}

    state_file = "models.pkl"

    def _write_state(self, path: Path) -> None:
        path.write_bytes(pickle.dumps(self.models))

    def _read_state(self, path: Path) -> None:
        self.models = pickle.loads(path.read_bytes())  # written by _write_state above, never by a user


def shared_models(protocol: Protocol) -> dict[str, str]:
    """category -> model key: ``shared:<suffix>`` for texture categories sharing a name suffix,
    ``shared:<answers>`` for categories with identical answers, else the category itself."""
    key: dict[str, str] = {}
    by_answers: dict[tuple, list[str]] = {}
    for c, cat in protocol.categories.items():
        by_answers.setdefault(tuple(sorted(cat.answers)), []).append(c)
    suffixes: dict[str, list[str]] = {}
    for c, cat in protocol.categories.items():
        if cat.family == "texture" and "_" in c:
            suffixes.setdefault(c.rsplit("_", 1)[1], []).append(c)
    for c in protocol.categories:
        key[c] = c
    for answers, members in by_answers.items():
        if len(members) > 1 and set(answers) != {"yes", "no"}:  # presence questions differ in meaning per part
            for c in members:
                key[c] = "shared:" + "|".join(answers)
    for suffix, members in suffixes.items():
        if len(members) > 1:
            for c in members:
                key[c] = f"shared:{suffix}"
    return key
