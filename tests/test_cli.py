import json

from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.manifests import RAW_RECORDS, read_manifest

runner = CliRunner()


def flat(text: str) -> str:
    """Rich wraps long lines; compare on single-spaced text."""
    return " ".join(text.split())


def test_protocol_check_summarises_and_fails_on_bad_files(tmp_path):
    ok = runner.invoke(app, ["protocol", "check"])
    assert ok.exit_code == 0, ok.output
    assert "38 categories" in flat(ok.output)
    bad = tmp_path / "p.yaml"
    bad.write_text("parsing_classes: [background]\nparts: {}\ncategories: {}\n")
    res = runner.invoke(app, ["protocol", "check", str(bad)])
    assert res.exit_code == 1
    assert "expected 18 classes" in flat(res.output)


def test_source_synthetic_writes_store_and_manifest(workspace):
    res = runner.invoke(app, ["source", "synthetic", "--count", "12", "--workers", "1"])
    assert res.exit_code == 0, res.output
    table = read_manifest(workspace / "manifests" / "raw" / "synthetic" / "batch-000000.parquet", RAW_RECORDS)
    assert table.num_rows == 12
    keys = set(table.column("sha256").to_pylist())
    stored = {p.name for p in (workspace / "store" / "objects").rglob("*") if p.is_file()}
    assert keys <= stored
    truth = json.loads(table.column("sidecar_json")[0].as_py())
    assert {"defect", "attributes", "person_boxes", "face_boxes", "n_persons"} <= set(truth)


def test_unknown_profile_is_a_clear_error():
    res = runner.invoke(app, ["settings", "--profile", "nope"])
    assert res.exit_code == 2
    assert "no such profile 'nope'" in flat(res.output)


def test_batch_then_filter(workspace):
    res = runner.invoke(app, ["source", "batch", "synthetic", "20260101T000000Z"])
    assert res.exit_code == 0, res.output
    assert "40 records" in flat(res.output)
    res = runner.invoke(app, ["filter", "--workers", "1"])
    assert res.exit_code == 0, res.output
    first = flat(res.output)
    assert "40 records (" in first and ", 0 reused)" in first and "verdicts: keep" in first
    again = flat(runner.invoke(app, ["filter", "--workers", "1"]).output)
    assert "40 records (0 analysed," in again
