"""How far to trust the truth judge: its per-category accuracy on held-out renders (a seed it never
trained on), clean (rendered at 2x, area-downscaled to 96x64) and degraded (downscaled, blurred,
noised, JPEG-compressed: one seeded random mix per image), the mean over categories, the
categories the base-model acceptance uses, and Acc_all on what each render's caption asks.
Needs no workspace; exits 1 below the issue's targets (mean 0.95 clean, 0.85 degraded).

    .venv/bin/python benchmarks/truth_judge.py [--judge models/truth-judge] [--renders 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ACCEPTANCE = ("gender", "person_type", "top_color")
TARGETS = {"clean": 0.95, "degraded": 0.85}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", type=Path, default=ROOT / "models" / "truth-judge", help="a saved truth judge folder")
    ap.add_argument("--renders", type=int, default=2000, help="held-out renders scored")
    ap.add_argument("--seed", type=int, default=None, help="their renderer seed (default the held-out seed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cv2
    import numpy as np

    from evaluation import truth_judge as tj
    from evaluation.calibration import calibration_set
    from evaluation.judge import semantic_accuracy
    from flywheel.protocol import load_protocol

    protocol = load_protocol()
    judge = tj.TruthJudge.load(args.judge, protocol)
    s = judge.settings
    seed = tj.HELD_OUT_SEED if args.seed is None else args.seed
    if seed == s.seed:
        raise SystemExit(f"--seed {seed} is the judge's training seed: held-out renders need another")
    print(f"{judge.identity}\n{judge.note}")
    t0 = time.perf_counter()
    # calibration_set renders exactly what render_set does (same rng stream) and adds each caption's questions
    big, _, questions, truths = calibration_set(protocol, args.renders, seed, s.width * s.render_scale,
                                                s.height * s.render_scale)
    clean = np.stack([cv2.resize(im, (s.width, s.height), interpolation=cv2.INTER_AREA) for im in big])
    sets = {"clean": clean, "degraded": tj.degraded_copies(clean, seed)}
    print(f"{args.renders} held-out renders of seed {seed} at {s.width}x{s.height} ({time.perf_counter() - t0:.0f} s)\n")
    per_cat, asked, by_shot = {}, {}, {}
    shots = protocol.categories["person_type"].answers
    for name, images in sets.items():
        t0 = time.perf_counter()
        predictions = judge.answer_images(list(images))
        per_cat[name] = tj.category_accuracy(protocol, predictions, truths)
        asked[name] = semantic_accuracy(protocol, predictions, questions)
        print(f"{name}: judged in {time.perf_counter() - t0:.1f} s")
        if name == "clean":  # the same accuracy within each true shot: what the person's size in the frame allows
            for shot in shots:
                keep = [i for i, t in enumerate(truths) if t["person_type"] == shot]
                by_shot[shot] = tj.category_accuracy(protocol, [predictions[i] for i in keep], [truths[i] for i in keep])

    print(f"\n{'category':<16} {'renders':>7} {'clean':>7} {'degraded':>8}   clean by true shot: "
          + "  ".join(f"{shot:>10}" for shot in shots))
    for cat, (acc, n) in per_cat["clean"].items():
        cells = "  ".join(f"{by_shot[shot][cat][0]:>5.3f} ({by_shot[shot][cat][1]:>4})" if by_shot[shot][cat][1]
                          else f"{'-':>10}" for shot in shots)
        print(f"{cat:<16} {n:>7} {acc:>7.3f} {per_cat['degraded'][cat][0]:>8.3f}   {'':>19}{cells}")
    means = {k: tj.mean_accuracy(v) for k, v in per_cat.items()}
    print(f"{'MEAN':<16} {'':>7} {means['clean']:>7.3f} {means['degraded']:>8.3f}   (targets {TARGETS['clean']}, "
          f"{TARGETS['degraded']})")
    print("\nbase-model acceptance categories: " + "; ".join(
        f"{c} {per_cat['clean'][c][0]:.3f} clean, {per_cat['degraded'][c][0]:.3f} degraded" for c in ACCEPTANCE))
    print("\nwhat the captions ask (calibration-set questions)")
    print(f"{'images':<10} {'questions':>9} {'Acc_all [95% CI]':>24} {'obj':>6} {'tex':>6} {'shape':>6}")
    for name, acc in asked.items():
        a, (lo, hi) = acc.accuracy, acc.interval["acc_all"]
        print(f"{name:<10} {acc.questions:>9} {a['acc_all']:>8.3f} [{lo:.3f}, {hi:.3f}]   {a['acc_object']:>6.3f} "
              f"{a['acc_texture']:>6.3f} {a['acc_shape']:>6.3f}")
    short = {k: v for k, v in means.items() if not v >= TARGETS[k]}
    if short:
        print("\nbelow target: " + ", ".join(f"{k} mean {v:.3f} < {TARGETS[k]}" for k, v in short.items()))
        worst = sorted(per_cat["clean"].items(), key=lambda kv: kv[1][0])[:8]
        print("weakest categories (clean): " + ", ".join(f"{c} {a:.3f}" for c, (a, _) in worst))
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
