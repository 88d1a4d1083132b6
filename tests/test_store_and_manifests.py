
import boto3
import pyarrow as pa
import pytest

from flywheel.manifests import ANNOTATIONS, FILTERED_POOL, RAW_RECORDS, SNAPSHOT, ManifestError, read_manifest, write_manifest
from flywheel.sources.records import record_id
from flywheel.store import ContentStore, sha256_hex


def test_local_store_is_content_addressed_and_idempotent(tmp_path):
    store = ContentStore(tmp_path / "store")
    key = store.put(b"hello")
    assert key == sha256_hex(b"hello")
    assert store.put(b"hello") == key
    assert store.get(key) == b"hello"
    assert store.exists(key) and not store.exists(sha256_hex(b"other"))
    assert list(store.keys()) == [key]
    assert not [p for p in (tmp_path / "store").rglob("*.tmp")]
    with pytest.raises(KeyError, match="no object"):
        store.get(sha256_hex(b"other"))
    with pytest.raises(ValueError, match="not a sha256 content key"):
        store.get("../../etc/passwd")


@pytest.mark.server
def test_s3_store_against_a_real_s3_server(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="cosmicman")
    store = ContentStore("s3://cosmicman/store", storage_options={"endpoint_url": s3_server})
    key = store.put(b"\x89PNG fake bytes")
    assert store.get(key) == b"\x89PNG fake bytes"
    listed = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="cosmicman")["Contents"]
    assert [o["Key"] for o in listed] == [f"store/objects/{key[:2]}/{key[2:4]}/{key}"]


def _raw_row(i: int) -> dict:
    return {"record_id": record_id("synthetic", f"item-{i}"), "source": "synthetic", "source_type": "synthetic",
            "batch": "b0", "item": f"item-{i}", "status": "ok", "sha256": sha256_hex(bytes([i]))}


def test_manifest_round_trip_keeps_schema_and_version(tmp_path):
    path = tmp_path / "m" / "raw.parquet"
    write_manifest(RAW_RECORDS.table([_raw_row(i) for i in range(3)]), path, RAW_RECORDS)
    table = read_manifest(path, RAW_RECORDS)
    assert table.num_rows == 3
    assert table.schema.metadata[b"cosmicman.schema_version"] == b"1"
    assert table.column("status").to_pylist() == ["ok"] * 3


def test_wrong_schema_and_version_are_refused_by_name(tmp_path):
    path = tmp_path / "raw.parquet"
    write_manifest(RAW_RECORDS.table([_raw_row(0)]), path, RAW_RECORDS)
    with pytest.raises(ManifestError, match="expected a filtered_pool manifest, found raw_records"):
        read_manifest(path, FILTERED_POOL)
    table = read_manifest(path, RAW_RECORDS)
    old = table.replace_schema_metadata({b"cosmicman.schema": b"raw_records", b"cosmicman.schema_version": b"0"})
    import pyarrow.parquet as pq

    pq.write_table(old, path)
    with pytest.raises(ManifestError, match="schema version 0 is not the supported version 1"):
        read_manifest(path, RAW_RECORDS)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "missing.parquet", RAW_RECORDS)


def test_rows_with_unknown_columns_or_missing_required_values_fail(tmp_path):
    with pytest.raises(ManifestError, match="unknown column"):
        RAW_RECORDS.table([{**_raw_row(0), "colour": "red"}])
    bad = pa.table({"record_id": ["x"]})
    with pytest.raises(ManifestError, match="does not match schema raw_records"):
        write_manifest(bad, tmp_path / "x.parquet", RAW_RECORDS)


def test_a_crash_during_write_leaves_the_previous_manifest(tmp_path, monkeypatch):
    path = tmp_path / "raw.parquet"
    write_manifest(RAW_RECORDS.table([_raw_row(0)]), path, RAW_RECORDS)
    import flywheel.manifests as manifests

    def crash(src, dst):
        raise OSError("killed before rename")

    monkeypatch.setattr(manifests.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_manifest(RAW_RECORDS.table([_raw_row(i) for i in range(5)]), path, RAW_RECORDS)
    monkeypatch.undo()
    assert read_manifest(path, RAW_RECORDS).num_rows == 1


def test_every_stage_schema_builds_empty_tables():
    for schema in (RAW_RECORDS, FILTERED_POOL, ANNOTATIONS, SNAPSHOT):
        assert schema.table([]).num_rows == 0
    ann = ANNOTATIONS.table([{"record_id": "r", "sha256": "s", "answers": {"hat": "no"},
                              "caption_groups": [{"part": "hat", "text": "red hat", "class_ids": [1]}]}])
    assert ann.column("caption_groups").to_pylist()[0][0]["class_ids"] == [1]
