"""Interleaved prompts: text with ``<image>`` placeholders and the images that fill them.

``"a woman wearing <image> on a beach"`` with one image (a path or an RGB array) becomes the
segments ``["a woman wearing ", Image, " on a beach"]``. Every placeholder needs an image and
every image a placeholder; an image path must exist and decode. Errors name the prompt and the
problem, since a prompt that silently lost its image would generate from text alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PLACEHOLDER = "<image>"


class InterleavedPromptError(ValueError):
    pass


@dataclass(frozen=True)
class ImageSegment:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    source: str  # the path, or "array"


Segment = str | ImageSegment


def load_image(image: str | Path | np.ndarray, prompt: str) -> ImageSegment:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InterleavedPromptError(f"prompt {prompt!r}: an image array must be (H, W, 3) uint8 RGB, got "
                                         f"{image.shape} {image.dtype}")
        return ImageSegment(image, "array")
    path = Path(image)
    if not path.is_file():
        raise InterleavedPromptError(f"prompt {prompt!r}: image file {path} does not exist")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return ImageSegment(np.array(im.convert("RGB")), str(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise InterleavedPromptError(f"prompt {prompt!r}: image file {path} is not a readable image ({exc})") from None


def parse(prompt: str, images: Sequence[str | Path | np.ndarray] = ()) -> list[Segment]:
    """The prompt's text and image segments in order (empty text between placeholders dropped)."""
    parts = prompt.split(PLACEHOLDER)
    slots = len(parts) - 1
    if slots != len(images):
        raise InterleavedPromptError(f"prompt {prompt!r}: {slots} {PLACEHOLDER} placeholder(s) but {len(images)} image(s)")
    out: list[Segment] = []
    for i, text in enumerate(parts):
        if text:
            out.append(text)
        if i < slots:
            out.append(load_image(images[i], prompt))
    if not out:
        raise InterleavedPromptError("an empty prompt: give text or an image")
    return out
