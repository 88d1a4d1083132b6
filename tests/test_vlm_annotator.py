"""The vision-language annotator backend on a real (tiny, randomly initialised) BLIP-2
checkpoint written offline: answers ranked within the protocol, LoRA fine-tuning on labelled
question-answer pairs, the hierarchy, save/load of the adapter alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flywheel.annotation.annotator import AnnotatorSettings, load_annotator, new_annotator
from flywheel.annotation.crops import Views
from flywheel.backends import BackendUnavailable
from flywheel.synthetic.source import SyntheticConfig, render_sample
from tests.vlm_checkpoint import write_tiny_blip2

# the tiny checkpoint is random, so LoRA also adapts its MLPs and output head; a pretrained
# BLIP-2 needs only the default attention projections
TARGETS = ("q_proj", "v_proj", "out_proj", "fc1", "fc2", "lm_head")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, protocol):
    return write_tiny_blip2(tmp_path_factory.mktemp("vlm") / "blip2", protocol)


@pytest.fixture(scope="module")
def renders(protocol):
    cfg = SyntheticConfig(seed=5, bad_fraction=0.0, width=128, height=192)
    pairs, truth = [], []
    for i in range(16):
        s = render_sample(cfg, protocol, i)
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        pairs.append((image, s.parsing))
        truth.append(s.truth["attributes"])
    return Views.of(pairs, protocol), truth


def _share(annotator, probs, category: str, answer: str) -> float:
    """Share of images whose most probable answer to ``category`` is ``answer`` (hierarchy aside)."""
    chosen = probs[annotator.categories.index(category)].argmax(1)
    return float(np.mean(chosen == annotator.protocol.categories[category].answer_index(answer)))


def test_a_missing_checkpoint_is_reported_as_unavailable_by_path(protocol, tmp_path):
    with pytest.raises(BackendUnavailable, match="no local checkpoint directory at .*nowhere"):
        new_annotator(protocol, AnnotatorSettings(backend="vlm", vlm_dir=str(tmp_path / "nowhere")))


def test_vlm_annotator_learns_labelled_answers_keeps_the_hierarchy_and_saves_only_the_adapter(checkpoint, renders, protocol, tmp_path):
    views, truth = renders
    settings = AnnotatorSettings(backend="vlm", vlm_dir=str(checkpoint), vlm_lr=5e-3, vlm_lora_targets=TARGETS, epochs=5)
    annotator = new_annotator(protocol, settings)
    # people answered "pink" for every top and "woman" for half the genders: the fine-tuned
    # ranking follows the labels (a random checkpoint cannot learn what the image shows in a
    # test's budget; a pretrained one is what the backend is for)
    before = _share(annotator, annotator.probabilities(views), "top_color", "pink")
    labels = [{"top_color": "pink", **({"gender": "woman"} if i % 2 else {})} for i in range(len(truth))]
    result = annotator.fit(views, labels)
    assert result == {"loss": pytest.approx(result["loss"]), "labels": 24, "images": 16} and annotator.version == 1
    probs = annotator.probabilities(views)
    after = _share(annotator, probs, "top_color", "pink")
    assert before < 0.5 and after >= 0.9, (before, after)
    assert _share(annotator, probs, "gender", "woman") >= 0.9

    answers, confidences = annotator.predict(views)
    for a, c in zip(answers, confidences, strict=True):
        for name, value in a.items():
            if value is None:  # not asked: its parent's predicted answer rules it out
                assert not protocol.applies(name, a)
            else:
                assert value in protocol.categories[name].answers and 0 < c[name] <= 1

    annotator.save(tmp_path / "annotator")
    saved = tmp_path / "annotator" / "lora.safetensors"
    weights = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    assert saved.stat().st_size < weights / 2  # the adapter, not a copy of the checkpoint
    loaded = load_annotator(tmp_path / "annotator", protocol)
    assert loaded.version == 1
    for p, q in zip(annotator.probabilities(views[:4]), loaded.probabilities(views[:4]), strict=True):
        np.testing.assert_allclose(p, q, atol=1e-5)


def test_the_flywheel_iterates_with_the_vlm_annotator_and_labels_the_pool(checkpoint, renders, protocol, tmp_path):
    from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings, Pool
    from flywheel.annotation.labelling import OracleLabeller
    from flywheel.annotation.vlm_annotator import VlmAnnotator

    views, truth = renders
    ids = [f"r{i}" for i in range(len(truth))]
    pool = Pool(ids, views, dict(zip(ids, truth, strict=True)))
    settings = AnnotationSettings(eval_size=4, seed_size=3, batch_size=3, max_iterations=2, label_budget=1.0,
                                  annotator=AnnotatorSettings(backend="vlm", vlm_dir=str(checkpoint), epochs=1))
    flywheel = AnnotationFlywheel(tmp_path / "flywheel", protocol, settings, pool, OracleLabeller(pool.truth))
    results = flywheel.run()
    assert len(results) == 2 and results[-1].stop_reason
    assert results[0].images == 3 and results[0].labels > 0
    assert results[-1].total_labels == sum(r.labels for r in results) + results[-1].eval_labels
    assert isinstance(flywheel.annotator(), VlmAnnotator) and flywheel.annotator().version >= 1
    answers = flywheel.label_pool()
    assert len(answers) == len(ids)
    for a in answers:
        assert all(v is None or v in protocol.categories[k].answers for k, v in a.items() if k in protocol.categories)
