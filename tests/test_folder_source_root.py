"""The folder source never reads outside its root and leaves a row for every file it sees."""

import io
import os

import numpy as np
from PIL import Image

from flywheel.sources.folder import FolderSourceSettings, ingest_folder
from flywheel.store import ContentStore


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_links_out_of_the_root_are_refused_and_never_stored(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    secret.write_bytes(b"password: hunter2\n")
    (outside / "more.png").write_bytes(png(1))
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png(0))
    os.symlink(secret, root / "link.jpg")
    os.symlink("/etc/passwd", root / "passwd.png")
    os.symlink(outside, root / "sub" / "linked_dir")
    os.symlink(root / "a.png", root / "sub" / "inside_link.png")  # inside the root: fine
    os.symlink(root / "missing.png", root / "dangling.png")
    store = ContentStore(tmp_path / "store")

    rows = {r["item"]: r for r in ingest_folder(FolderSourceSettings(name="s", path=str(root)), store, "b1")}

    assert rows["a.png"]["status"] == "ok" and rows["sub/inside_link.png"]["status"] == "ok"
    for item in ("link.jpg", "passwd.png", "sub/linked_dir"):
        assert rows[item]["status"] == "refused", item
        assert "outside the source root" in rows[item]["reason"], rows[item]["reason"]
        assert rows[item].get("sha256") is None
    assert rows["dangling.png"]["status"] == "refused" and rows["dangling.png"]["reason"] == "broken symlink"
    stored = [store.get(k) for k in (rows["a.png"]["sha256"],)]
    assert stored == [png(0)]
    blobs = [p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert not any(b"hunter2" in b or b"root:" in b for b in blobs)  # no byte of the secret or /etc/passwd stored
    assert "sub/linked_dir/more.png" not in rows  # a folder outside the root is not walked


def test_every_file_gets_a_row_and_sidecars_stay_inside(tmp_path):
    root = tmp_path / "root"
    (root / "parsing").mkdir(parents=True)
    (root / "a.png").write_bytes(png(0))
    (root / "a.txt").write_text("a woman in a red dress\n")
    (root / "parsing" / "a.png").write_bytes(png(5))  # a side-car, not an image of the dataset
    (root / "drawing.svg").write_text("<svg/>")
    (root / "README").write_text("notes")
    (tmp_path / "a.json").write_text('{"secret": 1}')
    cfg = FolderSourceSettings(name="s", path=str(root), caption="{rel_stem}.txt", parsing="parsing/{rel_stem}.png",
                               metadata="../{stem}.json")
    store = ContentStore(tmp_path / "store")

    first = ingest_folder(cfg, store, "b1")
    rows = {r["item"]: r for r in first}

    assert set(rows) == {"a.png", "a.txt", "parsing/a.png", "drawing.svg", "README"}
    a = rows["a.png"]
    assert a["status"] == "ok" and a["caption"] == "a woman in a red dress" and a["sidecar_parsing_sha256"]
    assert "outside the source root" in a["sidecar_json"] and "secret" not in a["sidecar_json"]
    assert rows["a.txt"]["status"] == rows["parsing/a.png"]["status"] == "skipped"
    assert rows["parsing/a.png"]["reason"] == "side-car of a.png"
    assert rows["drawing.svg"]["status"] == "skipped" and "'.svg'" in rows["drawing.svg"]["reason"]
    # a refresh adds nothing for files already ingested or already explained
    assert ingest_folder(cfg, store, "b2", previous=first) == []
