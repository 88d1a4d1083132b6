"""Decode an image file once, defensively, into a reduced RGB working copy.

Handles what real sources deliver: EXIF orientation, palette and alpha images, CMYK,
16-bit and grayscale images, animated files (first frame), truncated or corrupt files,
non-images with an image extension, and decompression bombs (refused from the header,
before any pixel is decoded). JPEGs are decoded at reduced size through libjpeg's DCT
scaling (``draft``), which is most of the speed of the filter chain.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"), (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"),
)


def sniff_image_type(head: bytes) -> str | None:
    for magic, media in MAGIC:
        if head.startswith(magic):
            return media
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "image/avif" if head[8:11] == b"avi" else "image/heic"
    return None


_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


@dataclass
class Decoded:
    ok: bool
    reason: str | None = None  # not_an_image / truncated / corrupt / decompression_bomb / empty
    detail: str | None = None
    width: int | None = None  # full-resolution size, after EXIF orientation
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    frames: int = 1
    image: np.ndarray | None = None  # RGB uint8, longest side <= max_side

    @property
    def scale(self) -> float:
        """Working-copy pixels per original pixel."""
        if self.image is None or not self.width:
            return 1.0
        return self.image.shape[1] / self.width


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0.0
        if mode != "F" and hi <= 255:
            scaled = arr
        else:
            lo = arr.min()
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


_BYTES_PER_BAND = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def decode_megabytes(fmt: str | None, mode: str, width: int, height: int, max_side: int) -> float:
    """What decoding takes, from the header alone: the decoded frame (JPEGs at the DCT scale
    ``draft`` will pick, every other format at full size) plus the copies :func:`_to_rgb` makes."""
    pixels = width * height
    if fmt == "JPEG":  # draft decodes at 1/2, 1/4 or 1/8 while the result stays >= max_side
        ratio = min(width // max_side, height // max_side)
        scale = next((s for s in (8, 4, 2) if s <= ratio), 1)
        pixels = -(-width // scale) * -(-height // scale)
    bands = Image.getmodebands(mode) if mode in Image.MODES else 4
    per_pixel = bands * _BYTES_PER_BAND.get(mode, 1) + 3  # the frame, then the RGB working copy
    if mode in ("P", "PA", "RGBA", "LA", "RGBa", "La"):
        per_pixel += 12  # _to_rgb composites over white: three RGBA images
    elif mode in _BYTES_PER_BAND:
        per_pixel += 17  # _to_rgb rescales through two float64 arrays and one uint8
    return pixels * per_pixel / 1e6


def decode_image(data: bytes, max_pixels: int = 64_000_000, max_side: int = 512, max_decode_mb: float | None = None) -> Decoded:
    if not data:
        return Decoded(False, "empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about bad metadata; a bad file gets its reason below
            img = Image.open(io.BytesIO(data))
            fmt, width, height = img.format, img.width, img.height
            if width * height > max_pixels:
                return Decoded(False, "decompression_bomb", f"{width}x{height} exceeds {max_pixels} pixels",
                               width=width, height=height, format=fmt)
            if max_decode_mb is not None and (need := decode_megabytes(fmt, img.mode, width, height, max_side)) > max_decode_mb:
                return Decoded(False, "decompression_bomb", f"{width}x{height} {fmt} {img.mode} needs {need:.0f} MB to decode "
                               f"(max_decode_mb {max_decode_mb:g})", width=width, height=height, format=fmt)
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1) if fmt in ("JPEG", "TIFF", "PNG", "WEBP", "MPO") else 1
            frames = getattr(img, "n_frames", 1)
            if fmt == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
            mode = img.mode
            img = ImageOps.exif_transpose(img) if orientation != 1 else img
            img = _to_rgb(img)
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
            array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        kind = sniff_image_type(data[:16])
        if kind:
            return Decoded(False, "corrupt", f"{kind} signature but the file cannot be parsed")
        return Decoded(False, "not_an_image", "no known image format signature")
    except Image.DecompressionBombError as exc:
        return Decoded(False, "decompression_bomb", str(exc))
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text or "broken data stream" in text else "corrupt"
        return Decoded(False, reason, text)
    except (ValueError, SyntaxError, struct.error, EOFError, IndexError, KeyError) as exc:
        return Decoded(False, "corrupt", f"{type(exc).__name__}: {exc}")
    if orientation in _ROTATED:
        width, height = height, width
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        return Decoded(False, "corrupt", f"unexpected decoded shape {array.shape}")
    return Decoded(True, width=width, height=height, format=fmt, mode=mode, frames=frames, image=array)

