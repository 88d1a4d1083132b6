"""CosmicMan-HQ snapshots: deterministic shards, a real DVC registry, incremental pushes,
versions fetched back with `dvc get`, gates and interrupted publications."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from flywheel.settings import load_settings
from flywheel.snapshot.loader import fetch_snapshot, open_snapshot
from flywheel.snapshot.publish import PublishBlocked, SnapshotSettings, publish_snapshot
from flywheel.snapshot.registry import DataRegistry, RegistryError
from flywheel.snapshot.writer import write_snapshot
from flywheel.store import ContentStore
from tests.training_samples import snapshot_rows

DVC = load_settings("test").dvc_command()
SETTINGS = SnapshotSettings(shard_size=40, test_fraction=0.2, split_tolerance=0.12)


def _rows(protocol, store: ContentStore, indices) -> list[dict]:
    return snapshot_rows(protocol, store, indices)


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _remote_objects(remote: Path) -> set[str]:
    return {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}


@pytest.fixture()
def registry(tmp_path) -> DataRegistry:
    return DataRegistry(tmp_path / "registry", str(tmp_path / "remote"), DVC)


def test_identical_inputs_give_identical_bytes_and_stable_splits(tmp_path, protocol):
    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(60))
    a = write_snapshot(rows, store.get, tmp_path / "a", shard_size=25, test_fraction=0.2)
    b = write_snapshot(list(reversed(rows)), store.get, tmp_path / "b", shard_size=25, test_fraction=0.2)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b") and a.content_digest == b.content_digest
    assert a.counts["train"] + a.counts["test"] == 60 and a.counts["test"] > 0
    # more images later: every old sample keeps its split and its shard
    c = write_snapshot(rows + _rows(protocol, store, range(60, 90)), store.get, tmp_path / "c", previous=tmp_path / "a",
                       shard_size=25, test_fraction=0.2)
    old = {r["key"]: (r["split"], r["shard"]) for r in open_rows(tmp_path / "a")}
    new = {r["key"]: (r["split"], r["shard"]) for r in open_rows(tmp_path / "c")}
    assert all(new[k] == v for k, v in old.items())
    assert c.counts["train"] + c.counts["test"] == 90


def open_rows(folder: Path) -> list[dict]:
    from flywheel.snapshot.writer import read_split

    return read_split(folder, "train") + read_split(folder, "test")


def test_second_publication_pushes_only_new_shards_and_both_versions_come_back(tmp_path, protocol, registry):
    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(200))
    first = publish_snapshot(rows, store.get, registry, protocol, SETTINGS, {"run": "test"}, docs_dir=tmp_path / "docs")
    assert first.publication.tag == "cosmicman-hq-v1" and first.publication.new
    assert (tmp_path / "docs" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    v1 = _hashes(registry.current)
    remote = Path(registry.remote_url)
    after_first = _remote_objects(remote)
    assert len(after_first) == len(v1) + 1  # every file plus DVC's .dir listing

    # 1% new images
    second = publish_snapshot(rows + _rows(protocol, store, range(200, 202)), store.get, registry, protocol, SETTINGS,
                              {"run": "test"})
    assert second.publication.version == 2
    v2 = _hashes(registry.current)
    uploaded = _remote_objects(remote) - after_first
    changed = {f for f, h in v2.items() if h not in set(v1.values())}
    assert len(uploaded) == len(changed) + 1 == second.publication.uploaded
    unchanged_shards = [f for f in v1 if f.endswith(".tar") and v1[f] == v2.get(f)]
    assert len(unchanged_shards) >= 3  # the full shards did not travel again
    assert sum(f.endswith(".tar") for f in changed) <= 2  # the last shard of each split, at most

    # standard DVC consumers get each version's exact bytes
    for version, expected in ((1, v1), (2, v2)):
        out = tmp_path / f"get-v{version}"
        registry.get(version, out)
        assert _hashes(out) == expected
    snap = fetch_snapshot(str(registry.path), 1, tmp_path / "cache", DVC)
    assert snap.tag == "cosmicman-hq-v1" and snap.data_hash == registry.data_hash("cosmicman-hq-v1")
    assert snap.stats["images"] == 200 and snap.stats["categories"] >= 30
    sample = next(snap.samples("train"))
    assert sample.image.shape[:2] == sample.parsing.shape == (144, 96)
    assert sample.meta["caption_groups"][0]["class_ids"]

    # same inputs again: nothing new is published
    again = publish_snapshot(rows + _rows(protocol, store, range(200, 202)), store.get, registry, protocol, SETTINGS, {})
    assert not again.publication.new and registry.versions() == [1, 2]


def test_failed_push_publishes_nothing_and_a_rerun_completes(tmp_path, protocol, registry):
    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(80))
    publish_snapshot(rows, store.get, registry, protocol, SETTINGS, {})
    v1 = _hashes(registry.current)
    broken = tmp_path / "dvc-broken"
    broken.write_text(f'#!/bin/sh\nif [ "$1" = push ]; then echo "remote unreachable" >&2; exit 1; fi\nexec {DVC} "$@"\n')
    broken.chmod(0o755)
    more = rows + _rows(protocol, store, range(80, 85))
    failing = DataRegistry(registry.path, registry.remote_url, str(broken))
    with pytest.raises(RegistryError, match=r"(?s)remote unreachable.*Nothing was published as cosmicman-hq-v2.*publishing again finishes"):
        publish_snapshot(more, store.get, failing, protocol, SETTINGS, {})
    assert registry.versions() == [1]  # the half-done version is invisible
    registry.get(1, tmp_path / "still-v1")
    assert _hashes(tmp_path / "still-v1") == v1
    done = publish_snapshot(more, store.get, registry, protocol, SETTINGS, {})
    assert done.publication.version == 2 and registry.versions() == [1, 2]
    assert open_snapshot(registry.current).stats["images"] == 85


def test_snapshot_suite_blocks_a_caption_group_without_its_mask(tmp_path, protocol, registry):
    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(60))
    from flywheel.annotation.parsing import decode_parsing

    hat = next(p for p, part in protocol.parts.items() if list(part.class_ids) == [1])
    bare = next(r for r in rows if 1 not in np.unique(decode_parsing(store.get(r["parsing_sha256"]))))
    bare["caption_groups"] = bare["caption_groups"] + [{"part": hat, "text": "a red hat", "class_ids": [1]}]
    with pytest.raises(PublishBlocked, match="orphan_groups"):
        publish_snapshot(rows, store.get, registry, protocol, SETTINGS, {})
    assert registry.versions() == []


def test_bad_inputs_are_named(tmp_path, protocol):
    from flywheel.snapshot.writer import SnapshotError

    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(2))
    with pytest.raises(SnapshotError, match="rec00000.*media type"):
        write_snapshot([{**rows[0], "media_type": "image/gif"}], store.get, tmp_path / "x")
    with pytest.raises(SnapshotError, match="rec00001: appears twice"):
        write_snapshot([rows[1], rows[1]], store.get, tmp_path / "y")


def test_publishing_to_an_s3_compatible_remote(tmp_path, protocol, s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="registry")
    registry = DataRegistry(tmp_path / "registry", "s3://registry/cosmicman-hq", DVC, remote_endpoint_url=s3_server)
    store = ContentStore(str(tmp_path / "store"))
    result = publish_snapshot(_rows(protocol, store, range(40)), store.get, registry, protocol, SETTINGS, {})
    objects = s3.list_objects_v2(Bucket="registry", Prefix="cosmicman-hq/").get("KeyCount", 0)
    assert objects == len(_hashes(registry.current)) + 1 == result.publication.uploaded
    registry.get(1, tmp_path / "v1")
    assert _hashes(tmp_path / "v1") == _hashes(registry.current)


def test_fallback_parsing_is_reported_per_source_and_blocks_hola_above_the_limit(tmp_path, protocol):
    import pyarrow.parquet as pq

    from flywheel.manifests import META_VERSION, SNAPSHOT
    from flywheel.snapshot.card import snapshot_stats, write_card
    from training.stages import FallbackParsingError, refuse_fallback_parsing

    store = ContentStore(str(tmp_path / "store"))
    rows = _rows(protocol, store, range(20))
    for i, r in enumerate(rows):  # half the images from a folder without parsing maps
        r.update({"source": "folder", "parsing_source": "fallback"} if i % 2 else {"parsing_source": "source"})
    folder = tmp_path / "snap"
    write_snapshot(rows, store.get, folder, shard_size=40, test_fraction=0.2)
    stats = snapshot_stats(folder, protocol)
    assert stats["parsing_by_source"]["folder"]["fallback_share"] == 1.0
    assert stats["parsing_by_source"]["synthetic"] == {"maps": {"source": 10}, "fallback_share": 0.0}
    card = write_card(folder, stats, "cosmicman-hq", 1, {})
    assert "| folder | 10 | 0 | 0 | 10 | 100.0% |" in card.read_text()
    snapshot = open_snapshot(folder, "cosmicman-hq-v1")
    share = snapshot.fallback_parsing_share("train")
    assert 0.3 < share < 0.7
    refuse_fallback_parsing(snapshot, 0.9, "HOLA training")  # under the limit: allowed
    with pytest.raises(FallbackParsingError, match=r"geometry fallbacks .* above training.max_fallback_parsing 25.0%: HOLA"):
        refuse_fallback_parsing(snapshot, 0.25, "HOLA training")
    # a v1 snapshot (before parsing_source was recorded) still reads; its share is unknown, not 0
    path = folder / "manifests" / "train.parquet"
    table = pq.read_table(path).drop_columns(["parsing_source"])
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, META_VERSION: b"1"}), path)
    assert snapshot.rows("train")[0]["parsing_source"] is None and snapshot.fallback_parsing_share("train") is None
    assert SNAPSHOT.version == 2
