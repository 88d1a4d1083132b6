from pathlib import Path

import pytest
import yaml

from flywheel.protocol import DEFAULT_PROTOCOL_PATH, ProtocolError, load_protocol


def test_bundled_protocol_is_rich_enough(protocol):
    assert len(protocol.parsing_classes) == 18
    assert protocol.parsing_classes[0] == "background" and protocol.parsing_classes[17] == "scarf"
    assert len(protocol.categories) >= 30
    assert {c.family for c in protocol.categories.values()} == {"object", "texture", "shape"}
    # parents come before their children
    order = list(protocol.categories)
    for name, cat in protocol.categories.items():
        for parent in cat.requires:
            assert order.index(parent) < order.index(name)


def test_hierarchy_decides_which_questions_apply(protocol):
    answers = {"person_type": "full body", "dress": "no", "top": "yes", "hat": "no"}
    assert protocol.applies("top_type", answers)
    assert not protocol.applies("hat_color", answers)
    assert not protocol.applies("dress_length", answers)
    assert protocol.applies("dress_length", {"person_type": "full body", "dress": "yes"})
    assert not protocol.applies("dress_length", {"person_type": "upper body", "dress": "yes"})


def test_check_answers_reports_each_inconsistency(protocol):
    problems = protocol.check_answers({"gender": "robot", "hat": "no", "hat_color": "red"})
    text = "\n".join(problems)
    assert "gender: answer 'robot'" in text
    assert "hat_color: answered 'red' but its parents do not allow it" in text
    assert "age: applicable but unanswered" in text


def test_phrases_use_answers_and_parent_answers(protocol):
    answers = {"bag": "yes", "bag_type": "backpack", "bag_color": "red", "hat": "no"}
    assert protocol.phrase_for("bag_color", answers) == "red backpack"
    assert protocol.phrase_for("hat", answers) == ""
    assert protocol.phrase_for("hair_length", {"hair_length": "long"}) == "long hair"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_PROTOCOL_PATH.read_text())
    mutate(raw)
    path = tmp_path / "bad_protocol.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_part_is_named_with_file_and_key(tmp_path):
    path = _write(tmp_path, lambda r: r["categories"]["hat_color"].update(part="headgear"))
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "categories.hat_color.part" in msg and "unknown part 'headgear'" in msg


def test_empty_answer_list_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["categories"]["scarf_color"].update(answers=[]))
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    assert f"{path}: categories.scarf_color.answers: answer list is empty or missing" in str(err.value)


def test_cycle_in_hierarchy_is_reported_with_its_path(tmp_path):
    def make_cycle(r):
        r["categories"]["hat"]["requires"] = {"hat_color": ["red"]}

    path = _write(tmp_path, make_cycle)
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    msg = str(err.value)
    assert "cycle in the hierarchy" in msg
    assert "hat -> hat_color -> hat" in msg or "hat_color -> hat -> hat_color" in msg
    assert str(path) in msg


def test_every_problem_is_reported_at_once(tmp_path):
    def break_many(r):
        r["parts"]["hat"]["classes"] = ["helmet"]
        r["categories"]["gender"]["family"] = "colour"
        r["categories"]["age"]["requires"] = {"nonexistent": ["x"]}

    with pytest.raises(ProtocolError) as err:
        load_protocol(_write(tmp_path, break_many))
    keys = [k for k, _ in err.value.problems]
    assert "parts.hat.classes" in keys
    assert "categories.gender.family" in keys
    assert "categories.age.requires.nonexistent" in keys


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ProtocolError, match="file not found"):
        load_protocol(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("parts: [unclosed")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(bad)
