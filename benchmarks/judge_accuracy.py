"""How far to trust the evaluation's judge: Acc_all of the part_stats annotator on fresh synthetic
renders, fitted on N labelled renders, with the renders' own parsing maps (its ceiling) and through
each generated-image parser (the learned U-Net trained on M renders' maps, and the no-weights
geometric fallback). Prints the parsers' mIoU too. Needs no workspace.

    .venv/bin/python benchmarks/judge_accuracy.py [--labelled 800] [--parser-images 1000] [--parser-steps 1500]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labelled", type=int, default=800, help="renders the judge is fitted on (every answer labelled)")
    ap.add_argument("--parser-images", type=int, default=1000)
    ap.add_argument("--parser-steps", type=int, default=1500)
    ap.add_argument("--test", type=int, default=100, help="fresh renders the judge is scored on")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from evaluation.calibration import calibration_set
    from evaluation.judge import GeneratedImageParser, Judge, semantic_accuracy
    from evaluation.parser import LearnedParser, pooled_miou
    from flywheel.annotation.annotator import AnnotatorSettings, new_annotator
    from flywheel.protocol import load_protocol
    from training.data import flip_table

    protocol = load_protocol()
    t0 = time.perf_counter()
    images, maps, _, truths = calibration_set(protocol, args.labelled, seed=1)
    judge = Judge(new_annotator(protocol, AnnotatorSettings(backend="part_stats")), protocol)
    judge.annotator.fit(judge.views(images, maps), truths)
    print(f"judge fitted on {args.labelled} labelled renders ({time.perf_counter() - t0:.0f} s)")
    p_images, p_maps, _, _ = calibration_set(protocol, args.parser_images, seed=5)
    learned = LearnedParser()
    t0 = time.perf_counter()
    learned.fit(list(zip(p_images, p_maps)), flip_table(protocol), args.parser_steps)
    print(f"learned parser: {args.parser_steps} steps on {args.parser_images} renders ({time.perf_counter() - t0:.0f} s)")
    images, maps, questions, _ = calibration_set(protocol, args.test, seed=90210)
    test = list(zip(images, maps))
    print(f"\n{'parsing of the scored images':<34} {'mIoU':>6} {'Acc_all [95% CI]':>24} {'obj':>6} {'tex':>6} {'shape':>6}")
    for name, parser in [("their own maps (ceiling)", None), ("learned U-Net", learned), ("geometric fallback", GeneratedImageParser())]:
        scorer = Judge(judge.annotator, protocol, parser=parser)
        if parser is None:
            views, miou = scorer.views(images, maps), 1.0
        else:
            views, miou = scorer.views(images), pooled_miou(parser, test)
        acc = semantic_accuracy(protocol, scorer.answer(views), questions)
        lo, hi = acc.interval["acc_all"]
        a = acc.accuracy
        print(f"{name:<34} {miou:>6.3f} {a['acc_all']:>8.3f} [{lo:.3f}, {hi:.3f}]   {a['acc_object']:>6.3f} "
              f"{a['acc_texture']:>6.3f} {a['acc_shape']:>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
