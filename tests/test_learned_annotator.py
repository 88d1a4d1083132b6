"""The ``learned`` annotator: a part encoder pretrained on the pool without labels, read by linear
classifiers the flywheel's labels fit; and the full-resolution part features every backend reads."""

import numpy as np
import torch

from flywheel.annotation.annotator import AnnotatorSettings, load_annotator, new_annotator
from flywheel.annotation.crops import DETAIL_GRID, N_BASE_FEATURES, detail_grid
from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings
from flywheel.annotation.labelling import OracleLabeller
from flywheel.annotation.learned_annotator import LearnedAnnotator
from flywheel.annotation.part_encoder import PartEncoder, augment, embed, nt_xent, pretrain_encoder
from flywheel.annotation.settings import PretrainSettings

TINY = {"steps": 60, "batch_size": 64, "width": 16, "lr": 3e-3}


def test_contrastive_pretraining_reads_no_labels_and_learns_to_match_views(small_pool):
    crops = small_pool.views.crops
    torch.manual_seed(5)
    untrained = PartEncoder(16)
    encoder, summary = pretrain_encoder(crops[:60], PretrainSettings(**{**TINY, "steps": 150}))
    assert summary["crops"] == int((crops[:60, :, 3].reshape(60, crops.shape[1], -1).max(2) > 0).sum())
    assert summary["last_loss"] < summary["first_loss"] - 0.5, summary
    # held-out crops: two augmented views of one crop find each other more often after pretraining
    x = torch.from_numpy(crops[60:, 0]).float() / 255
    gen = torch.Generator().manual_seed(1)
    a, b = augment(x, gen), augment(x, gen)

    def matched(enc):
        with torch.no_grad():
            za, zb = torch.nn.functional.normalize(enc(a), dim=1), torch.nn.functional.normalize(enc(b), dim=1)
        return float(((za @ zb.T).argmax(1) == torch.arange(len(x))).float().mean())

    assert matched(encoder) > matched(untrained.eval()) + 0.1  # 0.30 vs 0.13 (seeded)
    assert float(nt_xent(encoder.projected(a), encoder.projected(b), 0.2)) > 0
    emb = embed(encoder, crops[:5])
    absent = crops[:5, :, 3].reshape(5, crops.shape[1], -1).max(2) == 0
    assert emb.shape == (5, crops.shape[1], 16 * 4) and np.all(emb[absent] == 0) and np.abs(emb[~absent]).sum() > 0


def test_learned_annotator_fits_predicts_within_the_hierarchy_and_round_trips(protocol, small_pool, tmp_path):
    settings = AnnotatorSettings(backend="learned", pretrain=TINY)
    ann = new_annotator(protocol, settings)
    assert isinstance(ann, LearnedAnnotator)
    train, test = small_pool.views[:60], small_pool.views[60:]
    labels = [{c: small_pool.truth[r][c] for c in ("hat", "scarf", "person_type")} for r in small_pool.record_ids[:60]]
    try:
        ann.fit(train, labels)
        raise AssertionError("fit before pretraining must fail")
    except RuntimeError as e:
        assert "pretrain" in str(e)
    ann.pretrain(small_pool.views)
    ann.fit(train, labels)
    answers, conf = ann.predict(test)
    for c in ("hat", "scarf"):
        acc = np.mean([a[c] == small_pool.truth[r][c] for a, r in zip(answers, small_pool.record_ids[60:])])
        assert acc >= 0.85, (c, acc)
    for a in answers:
        assert not protocol.check_answers(a)
    ann.save(tmp_path / "ann")
    again = load_annotator(tmp_path / "ann", protocol)
    assert isinstance(again, LearnedAnnotator) and again.pretrain_summary == ann.pretrain_summary
    probs, probs_again = ann.probabilities(test), again.probabilities(test)
    assert all(np.allclose(p, q, atol=1e-6) for p, q in zip(probs, probs_again))


def test_the_flywheel_pretrains_once_on_the_pool_and_resumes_from_it(protocol, small_pool, tmp_path):
    settings = AnnotationSettings(eval_size=20, seed_size=10, batch_size=10, max_iterations=2, label_budget=1.0,
                                  annotator=AnnotatorSettings(backend="learned", pretrain=TINY))
    fw = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, OracleLabeller(small_pool.truth))
    first = fw.run_iteration(0)
    pretrained = tmp_path / "pretrained" / "learned.pkl"
    assert pretrained.exists() and first.accuracy_after
    stamp = pretrained.stat().st_mtime_ns
    (tmp_path / "iterations" / "iter-0000" / "metrics.json").unlink()  # killed before the iteration finished
    fw2 = AnnotationFlywheel(tmp_path, protocol, settings, small_pool, OracleLabeller(small_pool.truth))
    again = fw2.run_iteration(0)
    assert pretrained.stat().st_mtime_ns == stamp  # the encoder was reused, not pretrained again
    assert again.accuracy_after == first.accuracy_after
    assert fw2.annotator(0).pretrain_summary == load_annotator(tmp_path / "pretrained", protocol).pretrain_summary


def test_detail_grid_finds_where_a_garment_is_darker_and_features_size_parts_in_faces(protocol):
    gray = np.full((40, 40), 0.8, np.float32)
    mask = np.zeros((40, 40), bool)
    mask[:, 10:30] = True
    gray[:, 19:21] = 0.3  # a zip line down the middle
    grid = detail_grid(gray, mask, (0, 40, 10, 30)).reshape(DETAIL_GRID, DETAIL_GRID)
    assert np.all(grid[:, 1:3] > 0) and np.all(grid[:, [0, 3]] == 0)

    import cv2

    from flywheel.annotation.crops import part_features
    from flywheel.synthetic.source import SyntheticConfig, render_sample

    s = render_sample(SyntheticConfig(seed=3, bad_fraction=0.0), protocol, 0)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    feats = part_features(image, s.parsing, protocol)
    face = list(protocol.parts).index("face")
    assert abs(feats[face, N_BASE_FEATURES + 1]) < 1e-6  # the face is one face tall
    assert feats[protocol.body_part_index, N_BASE_FEATURES + 1] > np.log(3)  # a person is several faces tall


def test_self_training_adds_confident_answers_on_the_unlabelled_pool_and_can_be_turned_off(protocol, small_pool):
    labels = [{c: small_pool.truth[r][c] for c in ("hat", "scarf", "person_type")} for r in small_pool.record_ids[:30]]
    on = new_annotator(protocol, AnnotatorSettings(backend="part_stats", pseudo_label_confidence=0.9))
    summary = on.fit(small_pool.views[:30], labels, unlabelled=small_pool.views[30:])
    assert summary["labels"] > 3 * 30 and summary["pseudo_labels"] == summary["labels"] - 3 * 30  # confident answers joined
    off = new_annotator(protocol, AnnotatorSettings(backend="part_stats"))  # off by default
    plain = off.fit(small_pool.views[:30], labels, unlabelled=small_pool.views[30:])
    assert plain["labels"] == 3 * 30 and "pseudo_labels" not in plain
    assert on.version == off.version == 1  # one fit, whatever the rounds inside it
