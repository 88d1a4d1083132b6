"""Does the embedded base follow prompts before any fine-tuning? Judged independently.

Generates from weak-caption prompts (``{shot} of a {man|woman} wearing a {colour} {top}``,
every shot x gender x top colour, the top type rotating, several seeds each) and measures,
with the truth judge (trained on the renderer's ground truth only, never on flywheel
labels): the share of samples where OpenCV's HOG finds a person, and the gender, shot and
top-colour accuracy against the prompt. The same measurements on real renders of the same
descriptions are the ceiling (the judge's and HOG's own limits at 96x64). The issue's
goals: HOG >= 0.70, gender >= 0.80, top colour >= 0.50 (chance 0.125), shot >= 0.70; the
script exits 1 when one is missed.

    .venv/bin/python benchmarks/base_model.py                       # models/embedded-base
    .venv/bin/python benchmarks/base_model.py --base path/to/sd-dir --write-card
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHOTS = {"full body": "full-body shot", "upper body": "upper-body shot", "headshot": "headshot"}
GENDERS = ("man", "woman")
COLOURS = ("white", "black", "red", "blue", "green", "yellow", "gray", "pink")
TOPS = ("t-shirt", "shirt", "sweater", "jacket", "tank top")
GOALS = {"hog_person": 0.70, "gender": 0.80, "top_color": 0.50, "person_type": 0.70}


def prompt_text(shot: str, gender: str, colour: str, top: str) -> str:
    """A weak caption naming the shot, the gender, and the top with its colour."""
    return f"{SHOTS[shot]} of a {gender} wearing a {colour} {top}"


def prompt_set(seeds: int) -> list[tuple[str, dict, int]]:
    """(prompt, expected answers, seed) for every shot x gender x colour, ``seeds`` seeds each."""
    out = []
    for k, (shot, gender, colour) in enumerate(itertools.product(SHOTS, GENDERS, COLOURS)):
        top = TOPS[k % len(TOPS)]
        expected = {"person_type": shot, "gender": gender, "top_color": colour}
        for seed in range(seeds):
            out.append((prompt_text(shot, gender, colour, top), expected, 1000 * k + seed))
    return out


def real_renders(protocol, expected: list[dict], height: int, width: int, seed: int = 424242) -> np.ndarray:
    """A render matching each description (shot fixed; scenes drawn until gender and top colour match)."""
    import cv2

    from flywheel.synthetic.scene import render_people

    images = []
    for i, want in enumerate(expected):
        for attempt in itertools.count():
            image, _, people, _ = render_people(np.random.default_rng([seed, i, attempt]), protocol, width * 2, height * 2,
                                                person_type=want["person_type"])
            a = people[0].answers
            if a["gender"] == want["gender"] and a.get("top_color") == want["top_color"]:
                break
        images.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    return np.stack(images)


def measure(images: np.ndarray, expected: list[dict], judge) -> dict[str, float]:
    from flywheel.detect.hog import HogPersonDetector

    hog = HogPersonDetector()
    answers = judge.answer_images(list(images))
    out = {"hog_person": float(np.mean([bool(hog.detect(im)) for im in images]))}
    for key in ("gender", "person_type", "top_color"):
        out[key] = float(np.mean([a.get(key) == e[key] for a, e in zip(answers, expected, strict=True)]))
    shots = [e["person_type"] for e in expected]
    for shot in SHOTS:
        idx = [i for i, s in enumerate(shots) if s == shot]
        out[f"hog_person[{shot}]"] = float(np.mean([bool(hog.detect(images[i])) for i in idx]))
        out[f"top_color[{shot}]"] = float(np.mean([answers[i].get("top_color") == expected[i]["top_color"] for i in idx]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / "models" / "embedded-base")
    ap.add_argument("--judge", type=Path, default=ROOT / "models" / "truth-judge")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per description (48 descriptions)")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (SD 1.5's default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", type=Path, default=None, help="also write a sample grid PNG here")
    ap.add_argument("--write-card", action="store_true", help="put the figures into the base's model card")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from evaluation.truth_judge import TruthJudge
    from flywheel.protocol import load_protocol
    from training.base_model import load_base
    from training.sampling import generate, image_grid

    protocol = load_protocol()
    base = load_base(args.base)
    base.unet.eval()
    judge = TruthJudge.load(args.judge, protocol)
    prompts = prompt_set(args.seeds)
    h, w = base.image_size
    start = time.perf_counter()
    images = generate(base, base.unet, [p for p, _, _ in prompts], [s for _, _, s in prompts], h, w,
                      steps=args.steps, guidance_scale=args.guidance, batch_size=16)
    sample_s = time.perf_counter() - start
    expected = [e for _, e, _ in prompts]
    got = measure(images, expected, judge)
    ceiling = measure(real_renders(protocol, expected, h, w), expected, judge)

    header = (f"base {args.base.name} ({h}x{w}), {len(prompts)} weak-caption prompts ({len(prompts) // args.seeds} "
              f"descriptions x {args.seeds} seeds), DDIM {args.steps} steps, guidance {args.guidance}; "
              f"sampling {sample_s:.0f} s on {args.threads} threads")
    lines = [header,
             f"judge: {judge.identity}",
             "",
             "| measure | base samples | real renders (ceiling) | goal |",
             "| --- | --- | --- | --- |"]
    for key in got:
        goal = GOALS.get(key)
        lines.append(f"| {key} | {got[key]:.3f} | {ceiling[key]:.3f} | {f'>= {goal:.2f}' if goal else ''} |")
    missed = [k for k, g in GOALS.items() if got[k] < g]
    lines += ["", "all goals met" if not missed else "goals missed: " + ", ".join(f"{k} {got[k]:.3f} < {GOALS[k]}" for k in missed)]
    text = "\n".join(lines)
    print(text)
    if args.grid or args.write_card:
        order = [i for i, (_, e, s) in enumerate(prompts) if s % 1000 == 0 and e["top_color"] in ("red", "blue", "green", "yellow")]
        grid = image_grid(images[order], cols=4)
        from flywheel.preview import png_bytes

        path = args.grid or args.base / "benchmark_samples.png"
        Path(path).write_bytes(png_bytes(grid))
        print(f"grid: {path}")
    if args.write_card:
        from training.pretrain.card import write_figures

        write_figures(args.base, "Measured by `benchmarks/base_model.py`:\n\n" + text
                      + "\n\n![samples](benchmark_samples.png) (rows: full-body, upper-body, headshot x man, woman; "
                        "columns: red, blue, green, yellow tops)")
    return 1 if missed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
