"""Hostile image files beyond the usual awkward ones, and the decoder fuzzed with mutated bytes:
every input is decoded or refused with a reason, never an exception, never unbounded memory."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from flywheel.filters.chain import FilterSettings, run_filter
from flywheel.filters.decode import decode_image, decode_megabytes
from flywheel.manifests import RAW_RECORDS
from flywheel.sources.folder import FolderSourceSettings, ingest_folder
from flywheel.store import ContentStore

REASONS = {"not_an_image", "truncated", "corrupt", "decompression_bomb", "empty"}


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(w: int, h: int, depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG signature and IHDR claiming w x h, and no pixel data."""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)) + chunk(b"IEND", b"")


def picture(w: int = 96, h: int = 144) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = (40, 120, 60)
    arr[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = (200, 30, 30)
    return Image.fromarray(np.clip(arr + rng.integers(0, 20, arr.shape), 0, 255).astype(np.uint8))


def many_frame_gif(frames: int) -> bytes:
    tiles = [Image.new("P", (4, 4), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    tiles[0].save(buf, format="GIF", save_all=True, append_images=tiles[1:], duration=1)
    return buf.getvalue()


def bad_orientation_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 99  # no such orientation
    return encode(picture(), "JPEG", exif=exif.tobytes())


HOSTILE = {
    # claims 378 MB of pixels and holds none: refused from the header, before allocating
    "huge_header.png": (png_header(7000, 9000), "decompression_bomb"),
    "huge_header_16bit.png": (png_header(3000, 3000, depth=16, colour=0), "decompression_bomb"),
    "zero_width.png": (png_header(0, 100), None),  # refused as corrupt or not an image: either is a reason
    "huge_text_chunk.png": (encode(picture(), "PNG")[:33] + chunk(b"tEXt", b"k\x00" + b"x" * 2_000_000)
                            + encode(picture(), "PNG")[33:], "ok"),
    "zip_named_jpg.jpg": (b"PK\x03\x04" + bytes(200), "not_an_image"),
    "pdf_named_png.png": (b"%PDF-1.4\n" + bytes(200), "not_an_image"),
    "jpeg_then_zip.jpg": (encode(picture(), "JPEG") + b"PK\x03\x04" + bytes(5000), "ok"),
    "bad_orientation.jpg": (bad_orientation_jpeg(), "ok"),
    "many_frames.gif": (many_frame_gif(3000), "ok"),
    "signature_only.jpg": (b"\xff\xd8\xff", None),
    "tiff_header_only.tif": (b"II*\x00\x08\x00\x00\x00", None),
    "webp_truncated.webp": (encode(picture(), "WEBP")[:40], None),
    "bmp_huge_header.bmp": (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1,
                                                                                     24, 0, 0, 0, 0, 0, 0), "decompression_bomb"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_file_is_decoded_or_refused_with_its_reason(name):
    data, expected = HOSTILE[name]
    t0 = time.perf_counter()
    d = decode_image(data, max_decode_mb=FilterSettings().max_decode_mb)
    assert time.perf_counter() - t0 < 20, f"{name}: decoding took {time.perf_counter() - t0:.1f}s"
    if expected == "ok":
        assert d.ok and d.image.ndim == 3 and d.image.shape[2] == 3, (name, d.reason, d.detail)
    elif expected is None:
        assert not d.ok and d.reason in REASONS and d.detail, (name, d.reason)
    else:
        assert (d.ok, d.reason) == (False, expected), (name, d.reason, d.detail)
    if d.reason == "decompression_bomb":
        assert "MB to decode" in d.detail or "pixels" in d.detail


def test_the_decode_budget_is_estimated_from_the_header_as_decoding_would_spend_it():
    assert decode_megabytes("PNG", "RGB", 7000, 9000, 512) == pytest.approx(63e6 * 6 / 1e6)
    # a JPEG decodes at reduced scale through draft (here 1/4, keeping both sides >= 512): 9 MB, not 144
    assert decode_megabytes("JPEG", "RGB", 6000, 4000, 512) == pytest.approx(1500 * 1000 * 6 / 1e6)
    assert decode_megabytes("PNG", "RGBA", 1000, 1000, 512) == pytest.approx(1e6 * 19 / 1e6)
    photo = encode(picture(3000, 2000), "JPEG", quality=80)
    assert decode_image(photo, max_decode_mb=10).ok  # 3000x2000 at 1/2: 9 MB
    refused = decode_image(encode(picture(3000, 2000), "PNG"), max_decode_mb=10)
    assert refused.reason == "decompression_bomb" and "needs 36 MB to decode (max_decode_mb 10)" in refused.detail


def _mutations(data: bytes, rng: np.random.Generator, n: int):
    for _ in range(n):
        b = bytearray(data)
        kind = rng.integers(0, 4)
        if kind == 0:  # flip bytes anywhere
            for pos in rng.integers(0, len(b), rng.integers(1, 16)):
                b[pos] = rng.integers(0, 256)
        elif kind == 1:  # overwrite the header region, where sizes and lengths live
            for pos in rng.integers(0, min(64, len(b)), rng.integers(1, 6)):
                b[pos] = rng.integers(0, 256)
        elif kind == 2:  # cut
            b = b[: rng.integers(1, len(b))]
        else:  # splice a repeated slice (duplicated chunks, markers)
            i, j = sorted(rng.integers(0, len(b), 2))
            b = b[:j] + b[i:j] * int(rng.integers(1, 4)) + b[j:]
        yield bytes(b)


def test_fuzzed_files_of_every_format_never_escape_the_decoder():
    rng = np.random.default_rng(21)
    seeds = {fmt: encode(picture(), fmt, **kw) for fmt, kw in
             (("JPEG", {"quality": 90}), ("PNG", {}), ("GIF", {}), ("WEBP", {}), ("TIFF", {}), ("BMP", {}))}
    outcomes: dict[str, int] = {}
    for fmt, data in seeds.items():
        for mutated in _mutations(data, rng, 60):
            d = decode_image(mutated, max_decode_mb=FilterSettings().max_decode_mb)  # must not raise
            if d.ok:
                assert d.image.dtype == np.uint8 and d.image.ndim == 3 and d.image.shape[2] == 3
                assert max(d.image.shape[:2]) <= 512
            else:
                assert d.reason in REASONS and d.detail, (fmt, d.reason)
            key = "ok" if d.ok else d.reason
            outcomes[key] = outcomes.get(key, 0) + 1
    assert sum(outcomes.values()) == 360
    assert outcomes.get("ok", 0) > 0 and sum(v for k, v in outcomes.items() if k != "ok") > 0  # both paths exercised


def test_hostile_folder_runs_through_source_and_filter_with_a_row_each(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, (data, _) in HOSTILE.items():
        (folder / name).write_bytes(data)
    store = ContentStore(str(tmp_path / "store"))
    rows = ingest_folder(FolderSourceSettings(name="hostile", path=str(folder), extensions=[".jpg", ".png", ".gif", ".tif",
                                                                                            ".webp", ".bmp"]), store, "b1")
    assert sorted(r["item"] for r in rows) == sorted(HOSTILE)
    ok = [r for r in rows if r["status"] == "ok"]
    run = run_filter(RAW_RECORDS.table(ok), store, FilterSettings(min_short_side=32, min_long_side=32, min_face=0,
                                                                  workers=1), workers=1)
    by_item = {r["item"]: f for r, f in zip(ok, run.table.to_pylist())}
    for name, (_, expected) in HOSTILE.items():
        if expected not in (None, "ok"):
            assert expected in by_item[name]["reasons"], (name, by_item[name]["reasons"])
        elif expected is None:
            assert REASONS & set(by_item[name]["reasons"]), (name, by_item[name]["reasons"])
    assert all(f["verdict"] in ("keep", "reject") for f in run.table.to_pylist())
