"""The judge: the flywheel's trained annotator answering a caption's questions about an image.

A generated image has no parsing map, so the judge parses it: with a parser learned from the
snapshot's own maps (:mod:`evaluation.parser`, the default in the evaluation stage), or without
weights the way the pool parses an image without a map: the largest HOG person detection (else
the whole frame) and a Haar face inside it give the boxes for :func:`geometric_parsing`. Real images can be judged
with their own maps (the judge's ceiling) or through the same parser (what applies to
generated images); the calibration reports both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flywheel.annotation.crops import Views
from flywheel.annotation.parsing import geometric_parsing
from flywheel.protocol import FAMILIES, Protocol

PARSER_NOTE = "generated images are parsed without weights (HOG person box, Haar face, GrabCut + geometric parts)"


class GeneratedImageParser:
    def __init__(self):
        from flywheel.detect.haar import HaarDetector
        from flywheel.detect.hog import HogPersonDetector

        self._people, self._faces = HogPersonDetector(), HaarDetector()

    def parse(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        found = self._people.detect(image)
        box = found[0].box if found else (0.02 * w, 0.02 * h, 0.98 * w, 0.98 * h)
        head = (box[0], box[1], box[2], box[1] + (box[3] - box[1]) / 4)
        faces = [f for f in self._faces.detect(image, [head]) if box[0] <= (f[0] + f[2]) / 2 <= box[2]]
        return geometric_parsing(image, box, faces[0] if faces else None)


class Judge:
    """``parser``: anything with ``parse(image) -> map`` for images without one (default the
    no-weights :class:`GeneratedImageParser`; see :mod:`evaluation.parser` for a learned one)."""

    def __init__(self, annotator, protocol: Protocol, crop_size: int = 48, parser=None, parser_note: str = PARSER_NOTE):
        self.annotator, self.protocol, self.crop_size = annotator, protocol, crop_size
        self._parser, self.parser_note = parser, parser_note
        self.identity = f"{getattr(annotator, 'name', 'annotator')} version {getattr(annotator, 'version', '?')}"

    def parse(self, image: np.ndarray) -> np.ndarray:
        if self._parser is None:
            self._parser = GeneratedImageParser()
        return self._parser.parse(image)

    def views(self, images: Sequence[np.ndarray], maps: Sequence[np.ndarray] | None = None) -> Views:
        """What the annotator sees; images without ``maps`` are parsed (see module docstring)."""
        maps = list(maps) if maps is not None else [self.parse(im) for im in images]
        return Views.of(list(zip(images, maps)), self.protocol, self.crop_size)

    def answer(self, views: Views) -> list[dict[str, str | None]]:
        if not len(views):
            return []
        return self.annotator.predict(views)[0]

    @staticmethod
    def features(views: Views) -> np.ndarray:
        """(N, D) the judge's image features (every part's statistics): the FD/KID space
        when no Inception weights are at hand."""
        return views.stats.reshape(len(views), -1).astype(np.float64)


@dataclass
class SemanticAccuracy:
    """Acc_obj / Acc_tex / Acc_shape / Acc_all with bootstrap 95% intervals over prompts."""

    accuracy: dict[str, float] = field(default_factory=dict)  # acc_object, acc_texture, acc_shape, acc_all
    interval: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_category: dict[str, float] = field(default_factory=dict)
    questions: int = 0
    prompts: int = 0

    def metrics(self) -> dict[str, float]:
        out = dict(self.accuracy)
        for k, (lo, hi) in self.interval.items():
            out[f"{k}_ci_low"], out[f"{k}_ci_high"] = lo, hi
        return out


def semantic_accuracy(protocol: Protocol, predictions: Sequence[dict], questions: Sequence[dict[str, str]],
                      bootstrap: int = 1000, seed: int = 0) -> SemanticAccuracy:
    """Per prompt i, the judge's ``predictions[i]`` against ``questions[i]`` (category -> expected).
    Questions of one image are correlated, so the intervals resample prompts, not questions."""
    keys = ["acc_all"] + [f"acc_{f}" for f in FAMILIES]
    # (prompt, key) -> [correct, asked]
    counts = np.zeros((len(questions), len(keys), 2))
    per_cat: dict[str, list[bool]] = {}
    for i, (pred, asked) in enumerate(zip(predictions, questions)):
        for cat, expected in asked.items():
            ok = pred.get(cat) == expected
            per_cat.setdefault(cat, []).append(ok)
            for k in (0, 1 + FAMILIES.index(protocol.family_of(cat))):
                counts[i, k] += (ok, 1)
    out = SemanticAccuracy(per_category={c: float(np.mean(v)) for c, v in per_cat.items()},
                           questions=int(counts[:, 0, 1].sum()), prompts=len(questions))
    if out.questions == 0:
        return out
    rng = np.random.default_rng(seed)
    resampled = counts[rng.integers(0, len(questions), (bootstrap, len(questions)))].sum(1)  # (B, K, 2)
    for k, name in enumerate(keys):
        correct, asked = counts[:, k].sum(0)
        if asked == 0:
            continue
        out.accuracy[name] = float(correct / asked)
        valid = resampled[:, k, 1] > 0
        ratios = resampled[valid, k, 0] / resampled[valid, k, 1]
        out.interval[name] = (float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975)))
    return out
