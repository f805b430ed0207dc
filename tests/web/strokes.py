"""Pen strokes of a few digits on the page's 280x280 canvas, as polylines (x, y)."""

from __future__ import annotations

import math


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> list[tuple[float, float]]:
    return [(cx + rx * math.sin(2 * math.pi * t / n), cy - ry * math.cos(2 * math.pi * t / n)) for t in range(n + 1)]


STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "1": [[(140, 50), (140, 230)]],
    "0": [_ellipse(140, 140, 60, 90)],
    "7": [[(80, 60), (200, 60), (120, 230)]],
    "3": [[(90, 70), (130, 50), (180, 60), (185, 100), (140, 135), (190, 165), (185, 215), (130, 230),
           (85, 210)]],
}
