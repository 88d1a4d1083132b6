"""How far to trust the judges: their accuracy on real synthetic images whose truth is known.

Fresh images from the synthetic renderer (a seed of their own, so none is in the training
pool) come with exact answers and parsing maps. Each image is captioned as the snapshot
would caption it, and the judge answers that caption's questions twice: with the image's
own parsing map (the judge's ceiling) and through the generated-image parser (the number
that qualifies the generated images' accuracy).
"""

from __future__ import annotations

import numpy as np

from evaluation.judge import Judge, SemanticAccuracy, semantic_accuracy
from evaluation.prompts import caption_questions
from flywheel.annotation.captions import caption_groups
from flywheel.synthetic.scene import render_people


def calibration_set(protocol, n: int, seed: int, width: int = 256, height: int = 384):
    """(images, parsing maps, caption questions, true answers) of ``n`` single-person renders."""
    rng = np.random.default_rng(seed)
    images, maps, questions, truths = [], [], [], []
    for _ in range(n):
        image, labels, people, _ = render_people(rng, protocol, width, height, 1)
        answers = {c: a for c, a in people[0].answers.items() if c in protocol.categories}
        groups = caption_groups(protocol, answers, present_classes=np.unique(labels).tolist())
        images.append(image)
        maps.append(labels)
        questions.append(caption_questions(protocol, answers, [g.part for g in groups]))
        truths.append(answers)
    return images, maps, questions, truths


def calibrate_truth_judge(judge, n: int, seed: int, bootstrap: int = 1000) -> dict[str, SemanticAccuracy]:
    """{'clean': ..., 'degraded': ...}: the truth judge on ``n`` renders at its working size, as
    rendered and degraded the way generated images are (the latter qualifies generated images)."""
    import cv2

    from evaluation.truth_judge import degraded_copies

    images, _, questions, _ = calibration_set(judge.protocol, n, seed)
    h, w = judge.settings.height, judge.settings.width
    small = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
    return {"clean": semantic_accuracy(judge.protocol, judge.answer_images(list(small)), questions, bootstrap),
            "degraded": semantic_accuracy(judge.protocol, judge.answer_images(list(degraded_copies(small, seed))),
                                          questions, bootstrap)}


def calibrate(judge: Judge, n: int, seed: int, bootstrap: int = 1000) -> dict[str, SemanticAccuracy]:
    """{'source_parsing': ..., 'generated_parser': ...} accuracies of the judge on ``n`` renders."""
    images, maps, questions, _ = calibration_set(judge.protocol, n, seed)
    return {"source_parsing": semantic_accuracy(judge.protocol, judge.answer(judge.views(images, maps)), questions, bootstrap),
            "generated_parser": semantic_accuracy(judge.protocol, judge.answer(judge.views(images)), questions, bootstrap)}
