"""The Label Studio labelling backend against a real Label Studio server started on loopback."""

import pytest

from flywheel.annotation.annotator import AnnotatorSettings
from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings
from flywheel.annotation.label_studio import NA_CHOICE, LabelStudioLabeller, labelling_config
from flywheel.annotation.labelling import NOT_APPLICABLE, LabelRequest
from tests.tiny_annotator import TINY_PRETRAIN

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def images(small_pool):
    """The pool's images by URL from a real image server on loopback (record id -> URL)."""
    import hashlib

    from flywheel.annotation.image_server import ImageServer

    by_sha = {hashlib.sha256(d).hexdigest(): d for d in small_pool.image_data.values()}
    sha = {rid: hashlib.sha256(d).hexdigest() for rid, d in small_pool.image_data.items()}
    with ImageServer(by_sha.get) as server:
        yield lambda rid: server.url_for(sha[rid])


def answer_like_a_person(labeller, batch, truth):
    """What an annotator does in the UI: one annotation per task, from what they see."""
    for task in labeller.client.tasks.list(project=labeller.project_id(batch), fields="all"):
        rid = task.data["record_id"]
        asked = [c for r, c in labeller._state()[batch]["requests"] if r == rid]
        result = [{"from_name": c, "to_name": "image", "type": "choices",
                   "value": {"choices": [truth[rid].get(c) or NA_CHOICE]}} for c in asked]
        labeller.client.annotations.create(id=task.id, result=result)


def test_config_conditions_children_on_their_parent(protocol):
    xml = labelling_config(protocol, ["hat", "hat_color", "gender"])
    assert '<Choices name="hat_color" toName="image" choice="single" showInline="true" visibleWhen="choice-selected" whenTagName="hat" whenChoiceValue="yes">' in xml
    assert '<Choice value="not applicable"/>' in xml and xml.count("<Choices") == 3


def test_tasks_with_pre_annotations_and_answers_read_back(label_studio, protocol, tmp_path, small_pool, images):
    import urllib.request

    url, token = label_studio
    ids = small_pool.record_ids[:3]
    make = lambda: LabelStudioLabeller(url, token, protocol, images, tmp_path / "ls.json")
    labeller = make()
    requests = [LabelRequest(r, c) for r in ids for c in ("hat", "hat_color", "top_color")]
    hints = {ids[0]: {"hat": ("no", 0.8), "top_color": ("red", 0.4)}}
    labeller.submit(requests, "iter-0007", hints)
    tasks = list(labeller.client.tasks.list(project=labeller.project_id("iter-0007"), fields="all"))
    assert len(tasks) == 3
    by_record = {t.data["record_id"]: t for t in tasks}
    pred = by_record[ids[0]].predictions[0]
    pred_result = pred["result"] if isinstance(pred, dict) else pred.result
    assert {r["from_name"]: r["value"]["choices"] for r in pred_result} == {"hat": ["no"], "top_color": ["red"]}
    image = by_record[ids[0]].data["image"]  # by URL, not inlined: the server hands out the exact bytes
    assert image.startswith("http://127.0.0.1:") and "base64" not in image
    with urllib.request.urlopen(image, timeout=10) as resp:
        assert resp.read() == small_pool.image_data[ids[0]] and resp.headers["Content-Type"] == "image/jpeg"
    assert labeller.collect("iter-0007") is None and labeller.pending("iter-0007") == 3  # nobody has answered yet

    restarted = make()  # a restart finds the project instead of creating another
    restarted.submit(requests, "iter-0007", hints)
    assert restarted.project_id("iter-0007") == labeller.project_id("iter-0007")
    assert len(list(restarted.client.projects.list())) == 1

    answer_like_a_person(restarted, "iter-0007", small_pool.truth)
    assert restarted.pending("iter-0007") == 0
    labels = restarted.collect("iter-0007")
    assert len(labels) == len(requests)
    for l in labels:
        expected = small_pool.truth[l.record_id].get(l.category)
        assert l.answer == (expected if expected is not None else NOT_APPLICABLE)


def test_an_iteration_waits_for_people_then_continues(label_studio, protocol, tmp_path, small_pool, images):
    url, token = label_studio
    labeller = LabelStudioLabeller(url, token, protocol, images, tmp_path / "ls.json",
                                   project_prefix="flywheel test")
    settings = AnnotationSettings(eval_size=20, seed_size=3, batch_size=3, max_iterations=1, label_budget=1.0,
                                  annotator=AnnotatorSettings(crop_size=32, epochs=1, width=16, pretrain=TINY_PRETRAIN, min_steps=5))
    fw = AnnotationFlywheel(tmp_path / "annotation", protocol, settings, small_pool, labeller)
    waiting = fw.run_iteration(0)
    assert waiting.status == "waiting" and fw.labels_spent() == 0
    assert fw.run_iteration(0).status == "waiting"  # still nobody
    # I_e first, then the seed images; one phase per hierarchy level: children are asked once
    # people have answered their parents
    phases = []
    while (result := fw.run_iteration(0)).status == "waiting":
        phase = (labeller.batches("eval") + labeller.batches("iter-0000"))[-1]
        assert phase not in phases and labeller.pending(phase) > 0
        phases.append(phase)
        answer_like_a_person(labeller, phase, small_pool.truth)
    done = result
    assert phases[:2] == ["eval", "eval.d1"] and "iter-0000" in phases and "iter-0000.d1" in phases
    assert fw.eval_ledger.count() == done.eval_labels > 0
    asked = sum(len(protocol.applicable_categories(small_pool.truth[r])) for r in fw.ledger.by_record())
    assert done.status == "done" and done.labels == asked == fw.ledger.count() < 3 * len(protocol.categories)
    assert done.accuracy_truth == done.accuracy_after  # people answered as the renderer's truth: the yardsticks agree
    labelled = fw.ledger.by_record()
    for rid, answers in labelled.items():
        for c, a in answers.items():
            assert small_pool.truth[rid][c] == a


def test_the_flywheel_sensor_runs_a_waiting_iteration_only_once_people_are_done(label_studio, workspace, monkeypatch,
                                                                                 small_pool, images):
    """While Label Studio has unanswered tasks the sensor starts nothing (no run, no materialization)."""
    import dagster as dg

    from assets.annotation import POOL_VERSION
    from flywheel.settings import load_settings
    from flywheel.stages import label_studio_labeller
    from orchestration.resources import FlywheelResource
    from orchestration.sensors import next_annotation_iteration

    url, token = label_studio
    monkeypatch.setenv("COSMICMAN_LABELLING_BACKEND", "label_studio")
    monkeypatch.setenv("COSMICMAN_LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    labeller = label_studio_labeller(load_settings(), images)
    ids = small_pool.record_ids[:2]
    labeller.submit([LabelRequest(r, "hat") for r in ids], "iter-0000")
    with dg.instance_for_test() as inst:
        inst.report_runless_asset_event(dg.AssetMaterialization("filtered_pool", tags={"dagster/data_version": "v1"}))
        inst.report_runless_asset_event(dg.AssetMaterialization(
            "annotation_iteration", partition="iter-0000",
            metadata={"status": "waiting", "stop_reason": "continue", POOL_VERSION: "v1"}))
        tick = lambda: next_annotation_iteration(dg.build_sensor_context(instance=inst, resources={"flywheel": FlywheelResource()}))
        waiting = tick()
        assert isinstance(waiting, dg.SkipReason) and "2 Label Studio tasks not answered yet" in waiting.skip_message
        answer_like_a_person(labeller, "iter-0000", small_pool.truth)
        ready = tick()
        assert isinstance(ready, dg.RunRequest) and ready.partition_key == "iter-0000"
