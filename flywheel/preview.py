"""Preview grids for humans: a labelled contact sheet as PNG, and as a Markdown image."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np


def decode_rgb(data: bytes, max_side: int = 256) -> np.ndarray | None:
    """A small RGB copy for previews (the filter's defensive decoder; None when unreadable)."""
    from flywheel.filters.decode import decode_image

    return decode_image(data, max_side=max_side).image


def contact_sheet(images: Sequence[np.ndarray | None], labels: Sequence[str] = (), cell: tuple[int, int] = (96, 144),
                  columns: int = 8) -> np.ndarray:
    """Tile images (None = unreadable) into a grid of ``cell`` (w, h) tiles with a caption strip."""
    cw, ch = cell
    n = max(1, len(images))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    sheet = np.full((rows * (ch + 14), cols * cw, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y, x = r * (ch + 14), c * cw
        if img is None:
            tile = np.full((ch, cw, 3), 60, np.uint8)
            cv2.putText(tile, "unreadable", (4, ch // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
        else:
            s = min(cw / img.shape[1], ch / img.shape[0])
            resized = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
            tile = np.full((ch, cw, 3), 255, np.uint8)
            oy, ox = (ch - resized.shape[0]) // 2, (cw - resized.shape[1]) // 2
            tile[oy:oy + resized.shape[0], ox:ox + resized.shape[1]] = resized
        sheet[y:y + ch, x:x + cw] = tile
        if i < len(labels):
            cv2.putText(sheet, str(labels[i])[:18], (x + 2, y + ch + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (20, 20, 20), 1)
    return sheet


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode preview PNG")
    return buf.tobytes()


def markdown_image(image: np.ndarray, alt: str = "preview") -> str:
    """A Markdown image with the PNG inlined, which Dagster's UI renders in asset metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png_bytes(image)).decode()})"


def markdown_table(rows: Sequence[tuple], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
