"""The Label Studio labelling backend against a real Label Studio server started on loopback."""

import pytest

from flywheel.annotation.annotator import AnnotatorSettings
from flywheel.annotation.iterations import AnnotationFlywheel, AnnotationSettings
from flywheel.annotation.label_studio import NA_CHOICE, LabelStudioLabeller, labelling_config
from flywheel.annotation.labelling import NOT_APPLICABLE, LabelRequest

pytestmark = [pytest.mark.server, pytest.mark.slow]


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


def test_tasks_with_pre_annotations_and_answers_read_back(label_studio, protocol, tmp_path, small_pool):
    url, token = label_studio
    ids = small_pool.record_ids[:3]
    make = lambda: LabelStudioLabeller(url, token, protocol, small_pool.image_data.__getitem__, tmp_path / "ls.json")
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
    assert labeller.collect("iter-0007") is None  # nobody has answered yet

    restarted = make()  # a restart finds the project instead of creating another
    restarted.submit(requests, "iter-0007", hints)
    assert restarted.project_id("iter-0007") == labeller.project_id("iter-0007")
    assert len(list(restarted.client.projects.list())) == 1

    answer_like_a_person(restarted, "iter-0007", small_pool.truth)
    labels = restarted.collect("iter-0007")
    assert len(labels) == len(requests)
    for l in labels:
        expected = small_pool.truth[l.record_id].get(l.category)
        assert l.answer == (expected if expected is not None else NOT_APPLICABLE)


def test_an_iteration_waits_for_people_then_continues(label_studio, protocol, tmp_path, small_pool):
    url, token = label_studio
    labeller = LabelStudioLabeller(url, token, protocol, small_pool.image_data.__getitem__, tmp_path / "ls.json",
                                   project_prefix="flywheel test")
    settings = AnnotationSettings(eval_size=20, seed_size=3, batch_size=3, max_iterations=1, label_budget=1.0,
                                  annotator=AnnotatorSettings(crop_size=32, epochs=1, width=16, min_steps=5))
    fw = AnnotationFlywheel(tmp_path / "annotation", protocol, settings, small_pool, labeller)
    waiting = fw.run_iteration(0)
    assert waiting.status == "waiting" and fw.ledger.count() == 0
    assert fw.run_iteration(0).status == "waiting"  # still nobody
    answer_like_a_person(labeller, "iter-0000", small_pool.truth)
    done = fw.run_iteration(0)
    assert done.status == "done" and done.labels == 3 * len(protocol.categories) == fw.ledger.count()
    labelled = fw.ledger.by_record()
    for rid, answers in labelled.items():
        for c, a in answers.items():
            assert small_pool.truth[rid][c] == a
