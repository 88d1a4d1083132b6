"""Decoding and the filter chain on awkward files and on synthetic samples with ground truth."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from flywheel.filters.chain import FilterSettings, run_filter
from flywheel.filters.decode import decode_image
from flywheel.manifests import RAW_RECORDS
from flywheel.sources.folder import FolderSourceSettings, ingest_folder
from flywheel.sources.synthetic import ingest_synthetic
from flywheel.store import ContentStore
from flywheel.synthetic.scene import render_people
from flywheel.synthetic.source import SyntheticConfig

SMALL = FilterSettings(min_short_side=80, min_long_side=120, min_face=10, workers=1)
DECODE_REASONS = {"not_an_image", "truncated", "corrupt", "decompression_bomb", "empty"}


def person(protocol, seed=3) -> Image.Image:
    image, *_ = render_people(np.random.default_rng([seed, 0]), protocol, 256, 384, person_type="full body")
    return Image.fromarray(image)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def awkward_folder(tmp_path, protocol):
    folder = tmp_path / "awkward"
    folder.mkdir()
    p = person(protocol)
    good = encode(p, "JPEG", quality=92)
    (folder / "corrupt.jpg").write_bytes(good[:600] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    png = encode(p, "PNG")
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "one_pixel.png").write_bytes(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))
    (folder / "notes.jpg").write_text("this is a text file with an image extension\n")
    (folder / "bomb.png").write_bytes(encode(Image.new("1", (12000, 12000)), "PNG"))
    (folder / "cmyk.jpg").write_bytes(encode(p.convert("CMYK"), "JPEG", quality=92))
    frames = [p, p.transpose(Image.Transpose.FLIP_LEFT_RIGHT), p]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "animated.gif").write_bytes(buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display by turning 90 degrees clockwise
    (folder / "rotated.jpg").write_bytes(encode(p.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif.tobytes()))
    return folder


def test_awkward_files_run_through_with_reasons(awkward_folder, tmp_path):
    store = ContentStore(tmp_path / "store")
    rows = ingest_folder(FolderSourceSettings(name="awkward", path=str(awkward_folder)), store, "b1")
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    run = run_filter(RAW_RECORDS.table(rows), store, SMALL, workers=1)
    by_item = {rid: r for rid, r in zip([r["item"] for r in rows], run.table.to_pylist())}
    assert by_item["corrupt.jpg"]["reasons"][0] in {"corrupt", "truncated"}
    assert by_item["truncated.png"]["reasons"] == ["truncated"]
    assert by_item["notes.jpg"]["reasons"] == ["not_an_image"]
    assert by_item["bomb.png"]["reasons"] == ["decompression_bomb"]
    assert "too_small" in by_item["one_pixel.png"]["reasons"]
    for name in ("cmyk.jpg", "animated.gif", "rotated.jpg"):  # valid: judged on their merits
        r = by_item[name]
        assert not DECODE_REASONS & set(r["reasons"]), (name, r["reasons"])
        assert (r["width"], r["height"]) == (256, 384), name
    assert json.loads(by_item["animated.gif"]["scores_json"])["frames"] == 3
    assert by_item["rotated.jpg"]["n_persons"] == by_item["cmyk.jpg"]["n_persons"]
    assert all(r["verdict"] in ("keep", "reject") for r in run.table.to_pylist())


def test_decoder_normalises_modes():
    arr16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    d = decode_image(encode(Image.fromarray(arr16), "PNG"))
    assert d.ok and d.image.shape == (48, 64, 3) and d.image.max() == 255
    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    assert decode_image(encode(pal, "PNG")).image[0, 0].tolist() == [255, 0, 0]
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(encode(rgba, "PNG")).image[0, 0].tolist() == [255, 255, 255]  # transparent on white
    big = decode_image(encode(Image.new("RGB", (2000, 1000)), "JPEG"), max_side=512)
    assert (big.width, big.height) == (2000, 1000) and max(big.image.shape[:2]) <= 512
    assert decode_image(b"").reason == "empty"


@pytest.mark.slow
def test_defects_get_their_reasons_and_refresh_reuses_analyses(protocol, tmp_path):
    cfg = SyntheticConfig(seed=21, bad_fraction=0.6, width=256, height=384)
    store = ContentStore(tmp_path / "store")
    raw = ingest_synthetic(cfg, protocol, store, count=60).table
    settings = FilterSettings(min_short_side=160, min_long_side=240, min_face=20, workers=2)
    first = run_filter(raw, store, settings, workers=2)
    assert first.analysed == len(set(raw.column("sha256").to_pylist())) and first.reused == 0
    truth = {r["record_id"]: json.loads(r["sidecar_json"]) for r in raw.to_pylist()}
    item_of = {r["record_id"]: r["item"] for r in raw.to_pylist()}
    expected = {"truncated": "truncated", "too_small": "too_small", "blurred": "low_quality", "noisy": "low_quality",
                "compressed": "low_quality", "exact_duplicate": "exact_duplicate", "no_person": "no_person"}
    checked = 0
    for r in first.table.to_pylist():
        defect = truth[r["record_id"]]["defect"]
        if defect in expected:
            assert expected[defect] in r["reasons"], (defect, r["reasons"])
            checked += 1
        if "exact_duplicate" in r["reasons"]:
            original = truth[r["record_id"]]["duplicate_of"]
            by_item = {item: rid for rid, item in item_of.items()}
            while truth[by_item[f"synthetic-{original:08d}"]]["defect"] == "exact_duplicate":  # a copy of a copy
                original = truth[by_item[f"synthetic-{original:08d}"]]["duplicate_of"]
            assert item_of[r["duplicate_of"]] == f"synthetic-{original:08d}"
        if r["verdict"] == "keep":
            assert truth[r["record_id"]]["defect"] in (None, "near_duplicate") or truth[r["record_id"]]["defect"] == "multiple_people"
    assert checked >= 12
    for r in first.table.to_pylist():  # where each analysis spent its time, for the benchmark's profile
        scores = json.loads(r["scores_json"])
        if scores.get("phash"):
            steps = scores["seconds_by_step"]
            assert set(steps) == {"decode", "hash", "bodies", "faces", "quality"}, steps
            assert all(v > 0 for v in steps.values()) and sum(steps.values()) <= scores["seconds"]
    profile = first.ms_per_image_by_step  # the run's profile: every step, slowest first
    assert set(profile) == {"decode", "hash", "bodies", "faces", "quality"} and list(profile.values()) == sorted(profile.values(), reverse=True)

    more = ingest_synthetic(cfg, protocol, store, start=60, count=2).table
    import pyarrow as pa

    second = run_filter(pa.concat_tables([raw, more]), store, settings, previous=first.table, workers=1)
    assert second.analysed <= 2 and second.reused == first.analysed
    old = {r["record_id"]: (r["verdict"], r["reasons"]) for r in first.table.to_pylist()}
    for r in second.table.to_pylist()[:60]:
        assert old[r["record_id"]] == (r["verdict"], r["reasons"])


def test_extreme_aspect_is_rejected_before_any_detector(tmp_path):
    """A 322-byte 40000x2 PNG once cost 2.9 GB: the detectors rescaled its 1x512 working copy to 256x131072."""
    store = ContentStore(tmp_path / "store")
    strips = {"wide.png": encode(Image.new("RGB", (40000, 2), (200, 10, 10)), "PNG"),
              "tall.png": encode(Image.new("L", (3, 30000), 90), "PNG"),
              "wide_big.jpg": encode(Image.new("RGB", (8000, 1000), (20, 30, 40)), "JPEG")}
    from flywheel.sources.records import raw_row

    rows = [raw_row("s", "folder", "b1", name, "ok", sha256=store.put(data), n_bytes=len(data))
            for name, data in strips.items()]
    run = run_filter(RAW_RECORDS.table(rows), store, SMALL, workers=1)
    for r in run.table.to_pylist():
        scores = json.loads(r["scores_json"])
        assert r["verdict"] == "reject" and "extreme_aspect" in r["reasons"], r
        assert "n_persons" not in scores and "quality" not in scores and "phash" not in scores
        assert scores["seconds"] < 1.0


def test_piqe_matches_pyiqa(protocol):
    """flywheel.filters.piqe is pyiqa's PIQE without torch, in double precision: within 0.1 of pyiqa run in double
    (the gap: pyiqa's Gaussian taps are float32) and within 1 of pyiqa's float32 scores (their rounding noise in flat
    regions), on clean, blurred, noisy, JPEG-compressed and cropped renders."""
    import cv2
    import torch
    from pyiqa.archs.piqe_arch import piqe as pyiqa_piqe

    from flywheel.filters.piqe import piqe

    rng = np.random.default_rng(7)
    images = []
    for seed in range(3):
        clean = np.asarray(person(protocol, seed))
        jpeg = np.asarray(Image.open(io.BytesIO(encode(Image.fromarray(clean), "JPEG", quality=8))).convert("RGB"))
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        images += [clean, cv2.GaussianBlur(clean, (0, 0), 3), noisy, jpeg, clean[37:150, 11:90]]
    for image in images:
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
        ours = piqe(image)
        assert abs(ours - float(pyiqa_piqe(x.double())[0])) < 0.1
        assert abs(ours - float(pyiqa_piqe(x)[0])) < 1.0
    scores = [piqe(i) for i in images[:4]]
    assert scores[0] < min(scores[1:])  # the clean render scores best
