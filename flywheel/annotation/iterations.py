"""The annotation iterations (CosmicMan Sec. 3.2.2), resumable.

Each iteration measures the annotator's per-category accuracy on a fixed evaluation set
I_e, picks the categories below the target, samples images I_i (the annotator's least
confident first), asks people for labels on those categories only, fine-tunes the
annotator on every label so far, and measures again. Iteration 0 labels every category
on a small seed set, as the paper's first round does. The run stops when every category
meets the target, when the label budget is spent, or after two iterations without gain.

I_e is labelled like any other images, through the labelling backend (people in Label Studio,
the oracle in the demo), level by level of the hierarchy, into its own ledger (never training
data), and its labels count in the cost (``total_labels``; ``label_budget`` bounds the labels
bought for training, I_e being a fixed cost beside them); so a real pool without ground truth
runs the flywheel.
Where the pool has renderer ground truth it is a second, exact yardstick (``accuracy_truth``).
``eval_labels: truth`` keeps the old free I_e from ground truth, for benchmarks only.

Honest accounting: a category that applies to fewer than ``min_eval_count`` images of I_e is
"not measured" (never scored 1.0) and is labelled for, like a category below the target; each
measured accuracy carries its 95% Wilson interval. Questions follow the hierarchy: a child is
asked only where its parent's answer allows it (a person's answer from an earlier phase of the
same iteration or before, else the annotator's), so the cost counts the questions actually
asked, as the paper counts them. The pool is labelled by the iteration with the best mean I_e
accuracy, not the latest.

State lives in one folder: the evaluation set, the label ledger, and per iteration the
annotator's weights and a metrics file written last (its presence marks the iteration
done). A run killed anywhere restarts the unfinished iteration; labels already recorded
are reused, never requested or counted again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flywheel.annotation.annotator import (
    AttributeAnnotator,
    load_annotator,
    new_annotator,
)
from flywheel.annotation.crops import Views
from flywheel.annotation.labelling import LabelLedger, Labeller, LabelRequest
from flywheel.annotation.settings import AnnotationSettings, AnnotatorSettings  # noqa: F401 (re-exported)
from flywheel.faults import kill_point
from flywheel.protocol import Protocol
from flywheel.ray_data import EngineSettings


@dataclass
class Pool:
    """The images to annotate: ids, what the annotator sees, and ground truth where known."""

    record_ids: list[str]
    views: Views
    truth: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def index(self, ids: list[str]) -> np.ndarray:
        pos = {r: i for i, r in enumerate(self.record_ids)}
        return np.array([pos[r] for r in ids], dtype=np.int64)


@dataclass
class IterationResult:
    iteration: int
    categories: list[str]  # the categories people labelled
    images: int
    labels: int  # labels collected this iteration
    total_labels: int
    accuracy_before: dict[str, float]
    accuracy_after: dict[str, float]
    stop_reason: str | None = None
    status: str = "done"  # done / waiting (labels requested, not all answered yet)
    eval_labels: int = 0  # labels spent on I_e so far (in total_labels)
    accuracy_truth: dict[str, float] = field(default_factory=dict)  # after, on renderer ground truth where the pool has it
    not_measured: dict[str, int] = field(default_factory=dict)  # after: category -> its count in I_e (< min_eval_count)
    intervals: dict[str, list[float]] = field(default_factory=dict)  # after: category -> 95% Wilson [low, high]

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean(list(self.accuracy_after.values()))) if self.accuracy_after else float("nan")

    def to_json(self) -> dict:
        return self.__dict__.copy()


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` observed on ``n`` items."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, round(centre - half, 12))), float(min(1.0, round(centre + half, 12)))  # exact at p = 0 or 1


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


class AnnotationFlywheel:
    def __init__(self, folder: str | Path, protocol: Protocol, settings: AnnotationSettings, pool: Pool, labeller: Labeller):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.protocol = protocol
        self.settings = settings
        self.pool = pool
        self.labeller = labeller
        self.ledger = LabelLedger(self.folder / "labels")
        self.eval_ledger = LabelLedger(self.folder / "eval_labels")  # I_e's labels: measured against, never trained on
        self.eval_ids = self._eval_set()
        self.full_cost = sum(len(protocol.applicable_categories(pool.truth[r])) if r in pool.truth else len(protocol.categories)
                             for r in pool.record_ids if r not in set(self.eval_ids))

    # ---- fixed evaluation set -----------------------------------------------------------------
    def _eval_set(self) -> list[str]:
        path = self.folder / "eval_set.json"
        if path.exists():
            return json.loads(path.read_text())
        from_truth = self.settings.eval_labels == "truth"
        candidates = [r for r in self.pool.record_ids if r in self.pool.truth] if from_truth else list(self.pool.record_ids)
        if len(candidates) < self.settings.eval_size:
            what = "images with ground truth (eval_labels: truth)" if from_truth else "images"
            raise ValueError(f"annotation: the evaluation set needs {self.settings.eval_size} {what}, the pool has {len(candidates)}")
        rng = np.random.default_rng(self.settings.seed)
        ids = sorted(rng.choice(candidates, self.settings.eval_size, replace=False).tolist())
        _write_json(path, ids)
        return ids

    def labels_spent(self) -> int:
        """Every human label paid for: the training labels and I_e's."""
        return self.ledger.count() + self.eval_ledger.count()

    def eval_answers(self) -> dict[str, dict[str, str | None]] | None:
        """I_e's reference answers: collected through the labelling backend (requested on first use,
        parents before children; None while people have not answered), or ground truth."""
        if self.settings.eval_labels == "truth":
            return {r: self.pool.truth[r] for r in self.eval_ids}
        _, answered = self._ask_by_level(self.eval_ledger, "eval", self.eval_ids, list(self.protocol.categories),
                                         kill="annotation.eval_labelled")
        if not answered:
            return None
        human = self.eval_ledger.answers_by_record()
        return {r: human.get(r, {}) for r in self.eval_ids}

    def evaluate(self, annotator: AttributeAnnotator, reference: dict | None = None) -> dict[str, float]:
        """Per-category accuracy on I_e, over the images where the category applies; only categories
        with at least ``min_eval_count`` such images (see :meth:`evaluate_detail`)."""
        return {c: d["accuracy"] for c, d in self.evaluate_detail(annotator, reference).items() if d["measured"]}

    def evaluate_detail(self, annotator: AttributeAnnotator, reference: dict | None = None) -> dict[str, dict]:
        """Per category: ``count`` (I_e images it applies to), ``measured``, and where measured the
        ``accuracy`` with its 95% Wilson interval ``low``/``high``. Categories absent from I_e: count 0.
        ``reference``: record -> answers (default :meth:`eval_answers`; the renderer's truth for the
        second yardstick); I_e images it lacks are left out."""
        reference = self.eval_answers() if reference is None else reference
        if reference is None:
            raise RuntimeError("annotation: I_e's labels are not all answered yet")
        ids = [r for r in self.eval_ids if r in reference]
        predicted, _ = annotator.predict(self.pool.views[self.pool.index(ids)]) if ids else ([], [])
        hits: dict[str, list[bool]] = {c: [] for c in self.protocol.categories}
        for rid, pred in zip(ids, predicted):
            for c, truth in reference[rid].items():
                if truth is not None and c in hits:
                    hits[c].append(pred.get(c) == truth)
        out = {}
        for c, h in hits.items():
            if len(h) < self.settings.min_eval_count:
                out[c] = {"count": len(h), "measured": False}
                continue
            acc = float(np.mean(h))
            out[c] = {"count": len(h), "measured": True, "accuracy": acc, **dict(zip(("low", "high"), wilson(acc, len(h))))}
        return out

    def best_iteration(self) -> int | None:
        """The completed iteration with the best mean I_e accuracy (the later one on a tie); None before any."""
        done = self.completed()
        if not done:
            return None
        return max(range(len(done)), key=lambda k: (done[k].mean_accuracy if done[k].accuracy_after else -1.0, k))

    # ---- iterations ---------------------------------------------------------------------------
    def _dir(self, k: int) -> Path:
        return self.folder / "iterations" / f"iter-{k:04d}"

    def completed(self) -> list[IterationResult]:
        out = []
        k = 0
        while (self._dir(k) / "metrics.json").exists():
            out.append(IterationResult(**json.loads((self._dir(k) / "metrics.json").read_text())))
            k += 1
        return out

    def annotator(self, k: int | None = None) -> AttributeAnnotator:
        """The annotator after iteration k (default: the latest); a fresh one before iteration 0."""
        done = self.completed()
        k = (len(done) - 1) if k is None else k
        if k < 0:
            return self._fresh_annotator()
        return load_annotator(self._dir(k) / "annotator", self.protocol)

    def _fresh_annotator(self):
        """Iteration 0's starting point; a backend that pretrains on the pool without labels (``learned``)
        does so once, saved in ``pretrained/`` so a resumed run does not pretrain again."""
        annotator = new_annotator(self.protocol, self.settings.annotator)
        if not hasattr(annotator, "pretrain"):
            return annotator
        folder = self.folder / "pretrained"
        if (folder / "annotator.json").exists():
            return load_annotator(folder, self.protocol)
        annotator.pretrain(self.pool.views)
        annotator.save(folder)
        return annotator

    def _sample(self, k: int, annotator: AttributeAnnotator, categories: list[str], budget_left: int) -> list[str]:
        s = self.settings
        taken = {r for r, _ in self.ledger.labelled_pairs()}
        candidates = [r for r in self.pool.record_ids if r not in set(self.eval_ids) and r not in taken]
        if not candidates:
            return []
        want = s.seed_size if k == 0 else s.batch_size
        want = min(want, len(candidates), max(0, budget_left // max(1, len(categories))))
        if want == 0:
            return []
        rng = np.random.default_rng(s.seed + 1000 + k)
        if k == 0 or s.sampling == "random":
            return sorted(rng.choice(candidates, want, replace=False).tolist())
        probs = annotator.probabilities(self.pool.views[self.pool.index(candidates)])
        cols = [list(self.protocol.categories).index(c) for c in categories]
        uncertainty = np.mean([1.0 - probs[c].max(1) for c in cols], axis=0)
        order = np.argsort(-uncertainty, kind="stable")
        return [candidates[i] for i in order[:want]]

    def run_iteration(self, k: int) -> IterationResult:
        s = self.settings
        metrics = self._dir(k) / "metrics.json"
        if metrics.exists():
            return IterationResult(**json.loads(metrics.read_text()))
        if k > len(self.completed()):
            raise ValueError(f"iteration {k} needs iteration {k - 1} first")
        reference = self.eval_answers()
        if reference is None:  # I_e's labels are with people
            return IterationResult(k, [], 0, 0, self.labels_spent(), {}, {}, status="waiting",
                                   eval_labels=self.eval_ledger.count())
        annotator = self.annotator(k - 1)
        before = self.evaluate(annotator, reference)
        batch = f"iter-{k:04d}"
        plan_path = self._dir(k) / "plan.json"
        self._dir(k).mkdir(parents=True, exist_ok=True)
        if plan_path.exists():  # resuming: the same requests as before the interruption
            plan = json.loads(plan_path.read_text())
        else:
            # below the target, or not measured (too few I_e images): both need labels
            categories = list(self.protocol.categories) if k == 0 else \
                [c for c in self.protocol.categories if before.get(c, 0.0) < s.target_accuracy]
            # the budget is what the flywheel buys for training; I_e is a fixed cost beside it (in total_labels)
            budget_left = int(s.label_budget * self.full_cost) - self.ledger.count()
            images = self._sample(k, annotator, categories, budget_left) if categories else []
            plan = {"categories": categories, "images": images}
            _write_json(plan_path, plan)
            kill_point("annotation.planned")
        added = 0
        if plan["images"]:
            predicted, confidence = annotator.predict(self.pool.views[self.pool.index(plan["images"])])
            ai = dict(zip(plan["images"], predicted))
            hints = {r: {c: (a[c], conf[c]) for c in plan["categories"] if a.get(c) is not None}
                     for r, a, conf in zip(plan["images"], predicted, confidence)}
            added, answered = self._ask_by_level(self.ledger, batch, plan["images"], plan["categories"], ai, hints)
            if not answered:
                return IterationResult(k, plan["categories"], len(plan["images"]), added, self.labels_spent(), before, {},
                                       status="waiting", eval_labels=self.eval_ledger.count())
        labelled = self.ledger.by_record()
        if plan["images"]:
            ids = sorted(labelled)
            annotator.fit(self.pool.views[self.pool.index(ids)], [labelled[r] for r in ids],
                          unlabelled=self._unlabelled(set(ids)))
        detail = self.evaluate_detail(annotator, reference)
        after = {c: d["accuracy"] for c, d in detail.items() if d["measured"]}
        truth = {r: self.pool.truth[r] for r in self.eval_ids if r in self.pool.truth}
        on_truth = self.evaluate(annotator, truth) if truth and s.eval_labels != "truth" else {}
        annotator.save(self._dir(k) / "annotator")
        kill_point("annotation.saved")
        result = IterationResult(k, plan["categories"], len(plan["images"]), added, self.labels_spent(), before, after,
                                 eval_labels=self.eval_ledger.count(), accuracy_truth=on_truth,
                                 not_measured={c: d["count"] for c, d in detail.items() if not d["measured"]},
                                 intervals={c: [d["low"], d["high"]] for c, d in detail.items() if d["measured"]})
        result.stop_reason = self._stop_reason(k, result)
        _write_json(metrics, result.to_json())
        return result

    def _unlabelled(self, labelled: set[str]) -> Views | None:
        """The pool's views a fit may self-train on (neither labelled nor in I_e), only when self-training
        is on: a copy of nearly the whole pool's crops is not made for nothing."""
        if self.settings.annotator.pseudo_label_confidence is None:
            return None
        excluded = labelled | set(self.eval_ids)
        rest = [r for r in self.pool.record_ids if r not in excluded]
        return self.pool.views[self.pool.index(rest)] if rest else None

    def _ask_by_level(self, ledger: LabelLedger, batch: str, ids: list[str], categories: list[str],
                      ai: dict | None = None, hints: dict | None = None,
                      kill: str = "annotation.labelled") -> tuple[int, bool]:
        """Ask people for ``categories`` of ``ids`` one hierarchy level at a time (phases ``batch``,
        ``batch.d1``, ...): a child only where the answers above it (a person's, else the annotator's
        ``ai``) let it apply, so nobody labels the sleeves of a dress ruled out a level up. A phase
        collected before an interruption is reused, not asked or counted again. Returns the labels
        the batch holds and whether every phase is answered (False: waiting on people)."""
        added = 0
        for depth, level in self._phases(categories):
            phase = batch if depth == 0 else f"{batch}.d{depth}"
            if ledger.has(phase):
                added += ledger.batch_count(phase)
                continue
            human = ledger.answers_by_record()  # a person's "not applicable" overrides the annotator
            requests = [LabelRequest(r, c) for r in ids for c in level
                        if self.protocol.applies(c, self._known((ai or {}).get(r, {}), human.get(r, {})))]
            if not requests:
                continue
            asked = {q.record_id for q in requests}
            self.labeller.submit(requests, phase, None if hints is None else
                                 {r: {c: h for c, h in hints[r].items() if c in level} for r in hints if r in asked})
            labels = self.labeller.collect(phase)
            if labels is None:
                return added, False
            added += ledger.record(phase, labels)
            kill_point(kill)
        return added, True

    def _known(self, ai: dict, human: dict) -> dict[str, str | None]:
        """The best known answers, top-down: a person's where given, else the annotator's, None
        wherever the answers above rule the category out."""
        out: dict[str, str | None] = {}
        for name in self.protocol.categories:  # parents first
            out[name] = (human[name] if name in human else ai.get(name)) if self.protocol.applies(name, out) else None
        return out

    def _phases(self, categories: list[str]) -> list[tuple[int, list[str]]]:
        """The categories grouped by depth in the hierarchy (parents' phases first)."""
        depth: dict[str, int] = {}
        for name, cat in self.protocol.categories.items():  # topological order: parents first
            depth[name] = 1 + max((depth[p] for p in cat.requires), default=-1)
        levels = sorted({depth[c] for c in categories})
        return [(d, [c for c in categories if depth[c] == d]) for d in levels]

    def _stop_reason(self, k: int, result: IterationResult) -> str | None:
        s = self.settings
        if result.accuracy_after and not result.not_measured and min(result.accuracy_after.values()) >= s.target_accuracy:
            return "every category meets the target"
        if self.ledger.count() >= int(s.label_budget * self.full_cost) or not result.images:
            return "label budget spent" if result.categories else "nothing left to label"
        history = self.completed() + [result]
        means = [r.mean_accuracy for r in history]  # nan (no warning) when nothing was measured
        if len(means) > s.patience and max(means[-s.patience:]) < max(means[:-s.patience]) + s.min_gain:
            return f"{s.patience} iterations without gain"
        if k + 1 >= s.max_iterations:
            return "maximum iterations reached"
        return None

    def run(self) -> list[IterationResult]:
        """Iterate until a stop condition; returns every iteration (resumed ones included)."""
        k = 0
        results = []
        while True:
            r = self.run_iteration(k)
            results.append(r)
            if r.status != "done" or r.stop_reason:
                return results
            k += 1

    # ---- labelling the whole pool -------------------------------------------------------------
    def label_pool(self, annotator: AttributeAnnotator | None = None, engine: EngineSettings | None = None,
                   workers: int = 2) -> list[dict]:
        """Answers for every pool image: human labels where they exist, the annotator elsewhere
        (default the best iteration's, :meth:`best_iteration`; run here, or on Ray actors with
        engine ``ray``), made consistent with the hierarchy in one pass (parents first)."""
        from flywheel.annotation.pool_labels import pool_probabilities

        if annotator is None:
            best = self.best_iteration()
            annotator = self.annotator(best) if best is not None else self.annotator()
        probs = pool_probabilities(annotator, self.pool.views, engine, workers)
        human = self.ledger.by_record()
        names = list(self.protocol.categories)
        rows = []
        for i, rid in enumerate(self.pool.record_ids):
            answers: dict[str, str | None] = {}
            conf: dict[str, float] = {}
            origin: dict[str, str] = {}
            for k, name in enumerate(names):
                if not self.protocol.applies(name, answers):
                    answers[name] = None
                    continue
                if name in human.get(rid, {}):
                    answers[name], conf[name], origin[name] = human[rid][name], 1.0, "human"
                else:
                    j = int(probs[k][i].argmax())
                    answers[name] = self.protocol.categories[name].answers[j]
                    conf[name], origin[name] = float(probs[k][i, j]), "ai"
            rows.append({"record_id": rid, "answers": answers, "confidences": conf, "answer_origin": origin})
        return rows
