"""Evaluation metrics, the judge's own accuracy and the champion alias (real MLflow store)."""

import numpy as np
import pytest

from evaluation.champion import decide_champion
from evaluation.image_metrics import (
    distribution_metrics,
    frechet_distance,
    kernel_inception_distance,
)
from evaluation.judge import semantic_accuracy
from evaluation.prompts import caption_questions


def test_semantic_accuracy_by_family_with_intervals_over_prompts(protocol):
    questions = [{"gender": "woman", "top_color": "red", "sleeve_length": "long sleeve"},
                 {"gender": "man", "hat": "yes", "hat_color": "blue"}]
    predictions = [{"gender": "woman", "top_color": "blue", "sleeve_length": "long sleeve"},
                   {"gender": "man", "hat": "no", "hat_color": None}]
    acc = semantic_accuracy(protocol, predictions, questions, bootstrap=200)
    fam = {c: protocol.family_of(c) for q in questions for c in q}
    assert fam["top_color"] == "texture" and fam["hat"] == "object"
    right = {"gender": 2, "top_color": 0, "sleeve_length": 1, "hat": 0, "hat_color": 0}
    asked = {"gender": 2, "top_color": 1, "sleeve_length": 1, "hat": 1, "hat_color": 1}
    for family in ("object", "texture", "shape"):
        cats = [c for c in asked if fam[c] == family]
        if cats:
            assert acc.accuracy[f"acc_{family}"] == pytest.approx(sum(right[c] for c in cats) / sum(asked[c] for c in cats))
    assert acc.accuracy["acc_all"] == pytest.approx(3 / 6) and acc.questions == 6 and acc.prompts == 2
    lo, hi = acc.interval["acc_all"]
    # resampling prompts: per-prompt rates 2/3 and 1/3, so the interval spans exactly those
    assert lo == pytest.approx(1 / 3) and hi == pytest.approx(2 / 3)
    assert acc.per_category == {"gender": 1.0, "top_color": 0.0, "sleeve_length": 1.0, "hat": 0.0, "hat_color": 0.0}
    empty = semantic_accuracy(protocol, [], [])
    assert empty.accuracy == {} and empty.metrics() == {}


def test_caption_questions_are_the_voiced_categories_of_present_groups(protocol):
    answers = {"gender": "woman", "hat": "no", "top_color": "red", "top_type": "t-shirt"}
    q = caption_questions(protocol, answers, ["body", "top"])
    assert "hat" not in q  # an unvoiced "no" is not asked
    assert q["gender"] == "woman" and q.get("top_color") == "red"
    assert "top_color" not in caption_questions(protocol, answers, ["body"])  # no top group in the caption


def test_frechet_distance_and_kid_on_known_distributions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    shift = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # equal covariances: FD is the squared mean difference
    assert frechet_distance(a + shift, a) == pytest.approx(5.0, rel=1e-3)
    # scaled covariance: Tr(S + 4S - 2·2S) = Tr(S) = 3
    assert frechet_distance(a * 2, a) == pytest.approx(3.0, rel=0.05)
    b = rng.normal(size=(4000, 3))
    same, moved = kernel_inception_distance(a, b, subset_size=500), kernel_inception_distance(a + shift, b, subset_size=500)
    assert abs(same) < 0.01 < moved
    out = distribution_metrics(rng.normal(size=(40, 300)) + 3, rng.normal(size=(50, 300)), "judge", components=8)
    assert set(out) == {"fd_judge", "kid_judge"} and np.isfinite(out["fd_judge"]) and out["fd_judge"] > 0


def _register(client, name: str, tmp_path, n: int) -> list[str]:
    import mlflow

    client.create_registered_model(name)
    versions = []
    for i in range(n):
        with mlflow.start_run() as run:
            mlflow.log_metric("loss", 1.0)
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        versions.append(client.create_model_version(name, str(folder), run.info.run_id).version)
    return [str(v) for v in versions]


def test_champion_moves_only_to_a_better_version(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("champion")
    client = mlflow.MlflowClient()
    v1, v2, v3 = _register(client, "m", tmp_path, 3)

    first = decide_champion(client, "m", {v1: {"acc_all": 0.5}, v2: {"acc_all": float("nan")}}, "acc_all")
    assert first.moved and first.champion == v1 and "no champion before" in first.reason
    # the champion's value comes from its run when it is not among the candidates
    client.log_metric(client.get_model_version("m", v1).run_id, "eval.acc_all", 0.5)
    worse = decide_champion(client, "m", {v2: {"acc_all": 0.4}}, "acc_all")
    assert not worse.moved and worse.champion == v1 and "does not beat champion v1 (0.5000)" in worse.reason
    assert str(client.get_model_version_by_alias("m", "champion").version) == v1
    better = decide_champion(client, "m", {v2: {"acc_all": 0.4}, v3: {"acc_all": 0.7}}, "acc_all")
    assert better.moved and str(client.get_model_version_by_alias("m", "champion").version) == v3
    assert client.get_model_version("m", v3).tags["champion.reason"] == better.reason
    lower = decide_champion(client, "m", {v1: {"fd": 3.0}, v3: {"fd": 5.0}}, "fd", greater_is_better=False)
    assert lower.moved and lower.champion == v1
    nothing = decide_champion(client, "m", {v2: {}}, "acc_all")
    assert not nothing.moved and nothing.champion == v1


@pytest.mark.slow
def test_judge_trained_as_the_flywheel_trains_it_scores_85_percent_on_real_synthetic_images(protocol):
    """The semantic-accuracy metric is meaningful: the annotator, fitted on labelled synthetic
    images (what people answer in the flywheel), answers captions' questions about fresh
    synthetic images with their parsing maps at >= 85% Acc_all."""
    from evaluation.calibration import calibrate, calibration_set
    from evaluation.judge import Judge
    from flywheel.annotation.annotator import AnnotatorSettings, new_annotator

    images, maps, _, truths = calibration_set(protocol, 400, seed=7)
    judge = Judge(new_annotator(protocol, AnnotatorSettings(backend="part_stats")), protocol)
    judge.annotator.fit(judge.views(images, maps), truths)  # every applicable answer, as people label them
    result = calibrate(judge, 100, seed=90210, bootstrap=200)
    source = result["source_parsing"]
    assert source.prompts == 100 and source.questions > 1000
    assert source.accuracy["acc_all"] >= 0.85, source.accuracy
    lo, hi = source.interval["acc_all"]
    assert lo <= source.accuracy["acc_all"] <= hi
    # through the generated-image parser the same judge is weaker; the report shows both
    assert result["generated_parser"].accuracy["acc_all"] < source.accuracy["acc_all"]


@pytest.mark.slow
def test_learned_parser_beats_the_geometric_fallback_and_round_trips(protocol, tmp_path):
    from evaluation.calibration import calibration_set
    from evaluation.judge import GeneratedImageParser
    from evaluation.parser import LearnedParser, pooled_miou
    from training.data import flip_table

    images, maps, _, _ = calibration_set(protocol, 300, seed=3, width=128, height=192)
    train, test = list(zip(images[:256], maps[:256])), list(zip(images[256:], maps[256:]))
    parser = LearnedParser((96, 64), width=24)
    loss = parser.fit(train, flip_table(protocol), steps=500, batch_size=16)
    assert np.isfinite(loss)
    learned, fallback = pooled_miou(parser, test), pooled_miou(GeneratedImageParser(), test)
    assert learned > fallback + 0.08, (learned, fallback)
    assert parser.parse(images[0]).shape == maps[0].shape
    parser.save(tmp_path / "p")
    again = LearnedParser.load(tmp_path / "p")
    assert np.array_equal(again.parse(images[-1]), parser.parse(images[-1]))


def test_a_model_that_fails_to_load_is_reported_and_not_cached(protocol, tmp_path):
    from evaluation.models import ModelUnderTest
    from evaluation.report import render_html, report_json
    from evaluation.run import EvalContext
    from evaluation.settings import EvaluationSettings
    from evaluation.stages import evaluate_cached

    def broken():
        raise FileNotFoundError("models:/m/3: artifacts are gone")

    ctx = EvalContext(EvaluationSettings(), protocol, None, [], [])
    model = ModelUnderTest("daring", broken, "m", "3", "run")
    result = evaluate_cached(model, ctx, tmp_path, ctx.identity(), tmp_path)
    assert result.metrics == {} and "FileNotFoundError: models:/m/3: artifacts are gone" in result.skipped["evaluation"]
    assert not any(tmp_path.iterdir())  # nothing cached: the next evaluation tries again
    data = report_json({"tag": "t"}, [result], {"calibration": {}}, {"calibration": {}}, [], {}, [],
                       EvaluationSettings().model_dump(mode="json"))
    page = render_html(data, [result])
    assert "artifacts are gone" in page and "not computed" in page


def test_each_prompt_draws_its_own_noise_the_same_for_every_model():
    """One noise for all prompts made every prompt's sample the same layout (the embedded base's shot
    judged 0.33 with shared noise, 0.81 with per-prompt noise on the same 100 weak prompts)."""
    from evaluation.prompts import noise_seed

    keys = [f"prompt-{i}" for i in range(200)]
    seeds = [noise_seed(k, s) for k in keys for s in (0, 1)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    assert seeds == [noise_seed(k, s) for k in keys for s in (0, 1)]  # every model, every run
    assert noise_seed("prompt-0", 0) != noise_seed("prompt-0", 1)


def test_the_attention_iou_interval_resamples_samples_with_all_their_groups():
    from training.alignment import sample_bootstrap_interval

    # sample 0 has ten groups at 1.0, samples 1-9 one group at 0.0: the groups' mean is 10/19,
    # but a resample without sample 0 (p about 0.35) has mean 0
    values = [(0, 1.0)] * 10 + [(k, 0.0) for k in range(1, 10)]
    lo, hi = sample_bootstrap_interval(values)
    assert lo == 0.0 and 0.6 < hi <= 1.0
    same = [(k, 0.5) for k in range(20)]
    assert sample_bootstrap_interval(same) == (0.5, 0.5)
    narrow = sample_bootstrap_interval([(k, float(k % 2)) for k in range(400)])
    assert 0.44 < narrow[0] < 0.5 < narrow[1] < 0.56
