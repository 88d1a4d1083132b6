"""Box helpers shared by the detectors: IoU, containment and greedy suppression."""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def intersection(a: Box, b: Box) -> float:
    return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def suppress(boxes: Sequence[Box], iou_threshold: float = 0.3, containment: float = 0.6) -> list[Box]:
    """Keep the largest boxes; drop any box overlapping a kept one by IoU or mostly inside it."""
    kept: list[Box] = []
    for b in sorted(boxes, key=area, reverse=True):
        a = area(b)
        if a <= 0:
            continue
        if any(iou(b, k) > iou_threshold or intersection(b, k) / a > containment for k in kept):
            continue
        kept.append(b)
    return kept


def contains_point(b: Box, x: float, y: float) -> bool:
    return b[0] <= x <= b[2] and b[1] <= y <= b[3]
