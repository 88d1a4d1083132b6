"""Benchmark the annotation flywheel on the synthetic source with the oracle labeller.

For each pool size (the demo's ~1,500 clean images, and 5,000), renders a pool of clean synthetic
samples (their parsing maps come from the source), runs the iterations until a stop condition and
prints, per iteration, the labels bought so far (I_e's included: it is labelled through the oracle
like any image, unless ``--eval-labels truth``) against the categories at the target on I_e and on
the renderer's ground truth of held-out renders (never in any pool). Then, per category: the final
I_e accuracy, the ground-truth accuracy, and the fully supervised ceiling of the same annotator
(a fresh one of the same backend fitted on every applicable label of every pool image outside I_e,
the ``learned`` backend reusing the flywheel's label-free pretraining), with the categories no
labels lift to the target named.

    .venv/bin/python benchmarks/annotation_flywheel.py [--pools 1500,5000] [--backend learned]
        [--self-training on|off] [--eval-labels labelling|truth] [--held-out 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from flywheel.annotation.annotator import load_annotator, new_annotator
from flywheel.annotation.crops import Views
from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings, Pool
from flywheel.annotation.labelling import OracleLabeller
from flywheel.protocol import load_protocol
from flywheel.synthetic.source import SyntheticConfig, render_sample

HELD_OUT_START = 1_000_000  # render indices of the ground-truth yardstick, far from every pool's


def render_views(protocol, cfg, indices) -> tuple[list[str], Views, dict, list]:
    ids, pairs, truth = [], [], {}
    for i in indices:
        s = render_sample(cfg, protocol, i)
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        ids.append(s.item)
        pairs.append((img, s.parsing))
        truth[s.item] = s.truth["attributes"]
    return ids, Views.of(pairs, protocol), truth, pairs


def fallback_parsing_miou(protocol, pairs) -> None:
    """The no-weights parsing fallback against the renderer's exact maps."""
    from collections import defaultdict

    from flywheel.annotation.parsing import geometric_parsing, mean_iou
    from flywheel.filters.people import PeopleDetector

    detector, ious, t0 = PeopleDetector(), defaultdict(list), time.perf_counter()
    for image, truth in pairs:
        found = detector.detect(image)
        for c, v in mean_iou(geometric_parsing(image, found.person_box, found.face_box), truth).items():
            ious[c].append(v)
    per_class = {protocol.parsing_classes[c]: round(float(np.mean(v)), 2) for c, v in sorted(ious.items())}
    print(f"fallback parsing on {len(pairs)} samples ({(time.perf_counter() - t0) / len(pairs):.2f}s each): "
          f"mIoU {np.mean([np.mean(v) for v in ious.values()]):.3f} over {len(ious)} classes; {per_class}")


def truth_accuracy(protocol, annotator, views: Views, truths: list[dict]) -> dict[str, tuple[float, int]]:
    """Per category (accuracy, images it applies to) against the renderer's answers."""
    predicted, _ = annotator.predict(views)
    out = {}
    for c in protocol.categories:
        hits = [p.get(c) == t[c] for p, t in zip(predicted, truths) if t.get(c) is not None]
        out[c] = (float(np.mean(hits)) if hits else float("nan"), len(hits))
    return out


def at_target(acc: dict, target: float) -> int:
    return sum(1 for v in acc.values() if (v[0] if isinstance(v, tuple) else v) >= target)


def run_pool(protocol, settings, pool: Pool, held: tuple[Views, list[dict]], tmp: str) -> bool:
    n_cat, target = len(protocol.categories), settings.target_accuracy
    fw = AnnotationFlywheel(tmp, protocol, settings, pool, OracleLabeller(pool.truth))
    t0 = time.perf_counter()
    results = fw.run()
    print(f"iterations: {len(results)} in {time.perf_counter() - t0:.0f}s; stop: {results[-1].stop_reason}")
    print(f"  {'iter':>4} {'labels':>7} {'share':>7} {'train':>7} {'on I_e':>7} {'on truth':>8}  mean I_e / truth")
    for r in results:
        gt = truth_accuracy(protocol, fw.annotator(r.iteration), *held)
        gt_mean = np.nanmean([v[0] for v in gt.values()])
        print(f"  {r.iteration:>4} {r.total_labels:>7} {r.total_labels / fw.full_cost:>7.2%} "
              f"{(r.total_labels - r.eval_labels) / fw.full_cost:>7.2%} {at_target(r.accuracy_after, target):>4}/{n_cat} "
              f"{at_target(gt, target):>5}/{n_cat}  {r.mean_accuracy:.3f} / {gt_mean:.3f}  "
              f"(labelled {len(r.categories)} categories on {r.images} images)")
    best = fw.best_iteration()
    final = results[best]
    annotator = fw.annotator(best)
    gt = truth_accuracy(protocol, annotator, *held)
    train_share = (results[-1].total_labels - results[-1].eval_labels) / fw.full_cost
    print(f"best iteration {best}; labels: {results[-1].total_labels} of {fw.full_cost} for full labelling "
          f"({results[-1].total_labels / fw.full_cost:.2%}), {train_share:.2%} for training (goal <= 5%) and "
          f"{results[-1].eval_labels} on I_e ({len(fw.eval_ids)} images)")

    # the fully supervised ceiling: the same backend, every label of every pool image outside I_e
    t0 = time.perf_counter()
    ceiling = new_annotator(protocol, settings.annotator)
    if hasattr(ceiling, "pretrain"):  # reuse the flywheel's label-free pretraining on this pool
        ceiling = load_annotator(fw.folder / "pretrained", protocol)
    train_ids = [r for r in pool.record_ids if r not in set(fw.eval_ids)]
    ceiling.fit(pool.views[pool.index(train_ids)],
                [{c: a for c, a in pool.truth[r].items() if a is not None} for r in train_ids])
    top = truth_accuracy(protocol, ceiling, *held)
    print(f"fully supervised ceiling ({len(train_ids)} images, every label, {time.perf_counter() - t0:.0f}s): "
          f"{at_target(top, target)}/{n_cat} categories >= {target:.0%} on truth, mean {np.nanmean([v[0] for v in top.values()]):.3f}")
    print(f"  {'category':<16} {'I_e':>6} {'(n)':>5} {'truth':>6} {'(n)':>5} {'ceiling':>7}")
    for c in protocol.categories:
        ie = f"{final.accuracy_after[c]:.3f}" if c in final.accuracy_after else "  n/m"
        flag = "" if gt[c][0] >= target else ("  below; ceiling below too" if top[c][0] < target else "  below")
        count = final.not_measured.get(c, "")
        print(f"  {c:<16} {ie:>6} {count:>5} {gt[c][0]:>6.3f} {gt[c][1]:>5} {top[c][0]:>7.3f}{flag}")
    unreachable = {c: round(top[c][0], 3) for c in protocol.categories if top[c][0] < target}
    print(f"categories >= {target:.0%} on truth: {at_target(gt, target)}/{n_cat} at {train_share:.2%} of the labels "
          f"for training; on I_e {at_target(final.accuracy_after, target)}/{n_cat}; not measured on I_e: "
          f"{final.not_measured}; below the target even fully supervised: {unreachable}")
    return at_target(gt, target) == n_cat and train_share <= 0.05


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", default="1500,5000", help="pool sizes, comma-separated (the demo's ~1,500 clean images; 5,000)")
    ap.add_argument("--held-out", type=int, default=1000, help="renders of the ground-truth yardstick")
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--seed-size", type=int, default=None, help="iteration 0 images (default: the settings')")
    ap.add_argument("--batch-size", type=int, default=None, help="images per later iteration")
    ap.add_argument("--max-iterations", type=int, default=None)
    ap.add_argument("--backend", default=None, help="annotator backend (default: the settings')")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="learned backend: contrastive steps")
    ap.add_argument("--self-training", choices=["on", "off"], default="off",
                    help="part_stats / learned: answers 0.9 confident on the unlabelled pool join the labels for a second fit")
    ap.add_argument("--eval-labels", choices=["labelling", "truth"], default="labelling",
                    help="I_e labelled through the oracle and counted (default), or read from ground truth for free")
    ap.add_argument("--eval-size", type=int, default=None, help="images in I_e (default: the settings')")
    args = ap.parse_args()
    torch.set_num_threads(2)
    protocol = load_protocol()
    cfg = SyntheticConfig(seed=11, bad_fraction=0.0)
    sizes = [int(s) for s in args.pools.split(",")]
    settings = AnnotationSettings(label_budget=args.budget)
    updates = {k: v for k, v in {"seed_size": args.seed_size, "batch_size": args.batch_size, "eval_labels": args.eval_labels,
                                 "eval_size": args.eval_size, "max_iterations": args.max_iterations}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    if args.backend:
        settings.annotator = settings.annotator.model_copy(update={"backend": args.backend})
    settings.annotator = settings.annotator.model_copy(
        update={"pseudo_label_confidence": 0.9 if args.self_training == "on" else None})
    if args.pretrain_steps is not None:
        settings.annotator.pretrain = settings.annotator.pretrain.model_copy(update={"steps": args.pretrain_steps})

    t0 = time.perf_counter()
    ids, views, truth, pairs = render_views(protocol, cfg, range(max(sizes)))
    _, held_views, held_truth, _ = render_views(protocol, cfg, range(HELD_OUT_START, HELD_OUT_START + args.held_out))
    held = (held_views, [held_truth[r] for r in held_truth])
    print(f"rendered {max(sizes)} pool images and {args.held_out} held-out ones, views built in {time.perf_counter() - t0:.0f}s")
    fallback_parsing_miou(protocol, pairs[:100])
    del pairs
    print(f"annotator backend {settings.annotator.backend} (self-training {args.self_training}); seed {settings.seed_size} images, {settings.batch_size} per "
          f"iteration, I_e {settings.eval_size} images ({settings.eval_labels})")
    ok = True
    for n in sizes:
        print(f"\n== pool of {n} images ==")
        pool = Pool(ids[:n], views[:n], {r: truth[r] for r in ids[:n]})
        with tempfile.TemporaryDirectory() as tmp:
            ok &= run_pool(protocol, settings, pool, held, tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
