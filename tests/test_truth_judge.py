"""The truth judge: trained on renderer truth only, hierarchy-respecting answers, checked save/load."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation import truth_judge as tj
from flywheel.protocol import load_protocol
from flywheel.synthetic.scene import render_people

PROTOCOL = load_protocol()
TINY = tj.TruthJudgeSettings(renders=192, seed=9_100_123, max_steps=24, batch_size=32, lr=1e-2,
                             channels=(8, 16, 16, 16), blocks=(0, 1, 0, 0), hidden=32)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_images():
    images, truths, _ = tj.render_set(PROTOCOL, 24, seed=9_300_001)
    return list(images), truths


@pytest.fixture(scope="module")
def trained():
    losses = []
    judge = tj.train_truth_judge(PROTOCOL, TINY, lambda phase, done, total, loss: losses.append(loss)
                                 if phase == "training" else None)
    return judge, losses


def test_training_data_is_the_renderers_truth():
    images, truths, maps = tj.render_set(PROTOCOL, 5, seed=TINY.seed)
    lut, names = tj.side_free_classes(PROTOCOL)
    assert len(names) == 15 and names[lut[PROTOCOL.class_id("left-shoe")]] == names[lut[PROTOCOL.class_id("right-shoe")]] == "shoe"
    rng = np.random.default_rng(TINY.seed)  # rendered again here, independently of render_set
    for image, truth, parsing in zip(images, truths, maps):
        big, labels, people, _ = render_people(rng, PROTOCOL, 128, 192, 1)
        assert image.shape == (96, 64, 3) and image.dtype == np.uint8 and parsing.shape == (48, 32)
        assert truth == {c: people[0].answers[c] for c in PROTOCOL.categories}
        assert np.array_equal(image, tj.cv2.resize(big, (64, 96), interpolation=tj.cv2.INTER_AREA))
        assert np.array_equal(parsing, lut[labels[::4, ::4]])  # the renderer's own map, nearest-downscaled
    codes = tj.encode_truths(PROTOCOL, truths)
    for k, (name, cat) in enumerate(PROTOCOL.categories.items()):
        for row, truth in zip(codes, truths):
            assert row[k] == (-1 if truth[name] is None else cat.answers.index(truth[name]))


def test_trains_and_answers_only_allowed_answers_in_hierarchy(trained, test_images):
    judge, losses = trained
    assert judge.training["steps"] == TINY.max_steps and len(losses) >= 2
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses  # it learns from the truth
    answers = judge.answer_images(test_images[0])
    assert len(answers) == len(test_images[0])
    for a in answers:
        assert set(a) == set(PROTOCOL.categories)
        assert PROTOCOL.check_answers(a) == []  # allowed answers; a child only where its parents ask it
    # headshots have no pose: a category whose parent rules it out stays None
    assert all(a["pose"] is None for a in answers if a["person_type"] != "full body")
    assert "renderer ground truth" in judge.identity and "outside its training distribution" in judge.note


def test_other_sizes_are_resized_and_bad_inputs_named(trained, test_images):
    judge, _ = trained
    image = test_images[0][0]
    big = tj.cv2.resize(image, (128, 192), interpolation=tj.cv2.INTER_NEAREST)
    assert judge.answer_images([big]) == judge.answer_images([image])  # area-downscale of a 2x nearest upscale
    with pytest.raises(ValueError, match="image 1: expected an RGB uint8"):
        judge.answer_images([image, image.astype(np.float32)])
    assert judge.answer_images([]) == []


def test_save_load_round_trip_and_checksums(trained, test_images, tmp_path):
    judge, _ = trained
    folder = judge.save(tmp_path / "judge")
    assert sorted(p.name for p in folder.iterdir()) == ["checksums.sha256", "config.json", "weights.safetensors"]
    loaded = tj.TruthJudge.load(folder, PROTOCOL)
    images = test_images[0]
    for c, p in judge.probabilities(images).items():
        assert np.array_equal(p, loaded.probabilities(images)[c]), c
    assert loaded.answer_images(images) == judge.answer_images(images)
    assert loaded.version == judge.version and len(loaded.version) == 12
    config = json.loads((folder / "config.json").read_text())
    assert config["categories"]["gender"] == ["man", "woman"] and config["settings"]["seed"] == TINY.seed

    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights\.safetensors: sha256 mismatch"):
        tj.TruthJudge.load(folder, PROTOCOL)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json: missing"):
        tj.TruthJudge.load(folder, PROTOCOL)


def test_load_refuses_another_protocol(trained, tmp_path):
    judge, _ = trained
    folder = judge.save(tmp_path / "judge")
    raw = PROTOCOL.categories["gender"]
    other = type(PROTOCOL)(PROTOCOL.version, PROTOCOL.name, PROTOCOL.parsing_classes, PROTOCOL.parts,
                           {**PROTOCOL.categories, "gender": type(raw)(raw.name, raw.part, raw.question, ("man", "woman", "other"),
                                                                       raw.family, raw.requires)})
    with pytest.raises(ValueError, match=r"config\.json: trained for other categories or answers .*gender"):
        tj.TruthJudge.load(folder, other)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="multiples of 16"):
        tj.TruthJudgeSettings(height=90)
    with pytest.raises(ValueError, match="one count per level"):
        tj.TruthJudgeSettings(channels=(8, 16, 16), blocks=(0, 1, 1, 1))
    with pytest.raises(ValueError, match="at least 3"):
        tj.TruthJudgeSettings(channels=(8, 16), blocks=(0, 1))


# ---- the key property: no flywheel label ever reaches the judge ---------------------------------


def test_training_takes_no_labels():
    assert list(inspect.signature(tj.train_truth_judge).parameters) == ["protocol", "settings", "progress"]
    assert set(tj.TruthJudgeSettings.model_fields) == {
        "renders", "seed", "epochs", "max_steps", "batch_size", "lr", "weight_decay", "height", "width",
        "render_scale", "channels", "blocks", "hidden", "degrade_fraction", "flip", "balance", "bf16", "parsing_weight"}  # no path to a pool or annotator


def test_training_imports_no_flywheel_label_code():
    """In a fresh interpreter, training and answering import none of the modules that hold the
    flywheel's labels: annotators, labelling backends, pools, manifests, snapshots, the old judge."""
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from evaluation import truth_judge as tj\nfrom flywheel.protocol import load_protocol\n"
            "p = load_protocol()\n"
            "j = tj.train_truth_judge(p, tj.TruthJudgeSettings(renders=16, max_steps=2, batch_size=8, "
            "channels=(8, 8, 8, 8), blocks=(0, 0, 0, 0), hidden=8))\n"
            "j.answer_images(list(tj.render_set(p, 2, 5)[0]))\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('flywheel', 'evaluation', 'training')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    modules = set(out.stdout.split())
    assert "evaluation.truth_judge" in modules and "flywheel.synthetic.scene" in modules  # the audit sees imports
    forbidden = {m for m in modules if m.startswith(("flywheel.annotation", "flywheel.snapshot", "flywheel.manifests",
                                                     "flywheel.stages", "flywheel.synthetic.source", "evaluation.judge",
                                                     "evaluation.calibration", "training"))}
    assert not forbidden, forbidden


def test_corrupted_flywheel_labels_leave_the_judge_unchanged(trained, test_images, monkeypatch):
    """Every place a flywheel label can come from is poisoned (annotators' predictions, labelling
    backends, manifests and snapshots on disk, the synthetic source's per-sample truth): training
    again gives bit-identical probabilities. The control shows the comparison has teeth: corrupting
    the renderer's truth, the judge's one supervision, does change them."""
    import pyarrow.parquet as pq

    from flywheel import manifests
    from flywheel.annotation import annotator, labelling, stats_annotator
    from flywheel.snapshot import loader, writer
    from flywheel.synthetic import source

    baseline, _ = trained
    images = test_images[0]
    expected = baseline.probabilities(images)

    def poison(name):
        def read(*args, **kwargs):
            raise AssertionError(f"the truth judge read flywheel labels through {name}")
        return read

    for owner, attr in [(annotator.AttributeAnnotator, "predict"), (stats_annotator.PartStatsAnnotator, "predict"),
                        (annotator, "load_annotator"), (annotator, "new_annotator"),
                        (labelling.OracleLabeller, "collect"), (labelling.LabelLedger, "labels"),
                        (manifests, "read_manifest"), (writer, "read_split"), (loader, "open_snapshot"),
                        (pq, "read_table"), (source, "render_sample")]:
        monkeypatch.setattr(owner, attr, poison(f"{getattr(owner, '__name__', owner)}.{attr}"))
    again = tj.train_truth_judge(PROTOCOL, TINY)
    got = again.probabilities(images)
    assert all(np.array_equal(got[c], expected[c]) for c in expected)

    monkeypatch.undo()
    real = tj.render_people

    def lying_renderer(*args, **kwargs):  # the same pixels, with the genders swapped in the truth
        image, labels, people, background = real(*args, **kwargs)
        for p in people:
            p.answers["gender"] = {"man": "woman", "woman": "man"}[p.answers["gender"]]
        return image, labels, people, background

    monkeypatch.setattr(tj, "render_people", lying_renderer)
    lied = tj.train_truth_judge(PROTOCOL, TINY).probabilities(images)
    assert not np.array_equal(lied["gender"], expected["gender"])


def test_held_out_accuracy_and_degradation(trained):
    judge, _ = trained
    images, truths, _ = tj.render_set(PROTOCOL, 40, seed=tj.HELD_OUT_SEED)
    acc = tj.category_accuracy(PROTOCOL, judge.answer_images(list(images)), truths)
    assert acc["gender"][1] == 40 and 0 <= acc["gender"][0] <= 1
    assert acc["pose"][1] == sum(t["pose"] is not None for t in truths)
    perfect = tj.category_accuracy(PROTOCOL, truths, truths)
    assert tj.mean_accuracy(perfect) == 1.0
    degraded = tj.degraded_copies(images[:4], seed=3)
    assert degraded.shape == images[:4].shape and degraded.dtype == np.uint8
    assert np.array_equal(degraded, tj.degraded_copies(images[:4], seed=3))  # seeded
    assert np.abs(degraded.astype(int) - images[:4]).mean() > 2  # and actually degraded


def test_model_card_lists_every_category(trained):
    judge, _ = trained
    report = tj.held_out_report(judge, n=12, seed=9_300_002)
    card = tj.model_card(judge, report)
    assert f"seed {TINY.seed}" in card and "never on flywheel labels" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(PROTOCOL.categories) + 1  # header, categories, mean
    assert f"**{tj.mean_accuracy(report['clean']):.3f}**" in rows[-1]
    assert "falls short" not in card  # no per-shot figures asked for

    by_shot = tj.held_out_report(judge, n=12, seed=9_300_002, by_shot=True)
    assert repr(by_shot["clean"]) == repr(report["clean"])  # (nan, 0) where no render is asked
    shots = [k for k in by_shot if k.startswith("clean, ")]
    assert shots == [f"clean, {s}" for s in PROTOCOL.categories["person_type"].answers]
    assert sum(by_shot[k]["gender"][1] for k in shots) == 12
    weak = [c for c, (a, _) in report["clean"].items() if a < 0.9]
    short = tj.model_card(judge, by_shot).split("## Where it falls short")
    assert len(short) == 2 and len([line for line in short[1].splitlines() if line.startswith("| ")]) == 2 + len(weak)
