"""A loss-curve PNG drawn with Pillow (no matplotlib): one panel per metric, log-scaled y when positive."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from codeformer.atomic import atomic_path

_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))
_PANEL_W, _PANEL_H, _MARGIN = 420, 220, 48


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int], name: str, points: list[tuple[int, float]],
           colour: tuple[int, int, int]) -> None:
    x0, y0 = box
    left, top = x0 + _MARGIN, y0 + 24
    width, height = _PANEL_W - _MARGIN - 12, _PANEL_H - 24 - 28
    draw.rectangle([left, top, left + width, top + height], outline=(160, 160, 160))
    log_y = all(v > 0 for _, v in points)
    ys = [math.log10(v) if log_y else v for _, v in points]
    steps = [s for s, _ in points]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-12:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    s_lo, s_hi = min(steps), max(steps)
    s_span = max(s_hi - s_lo, 1)
    xy = [(left + (s - s_lo) / s_span * width, top + (1 - (y - y_lo) / (y_hi - y_lo)) * height)
          for s, y in zip(steps, ys, strict=True)]
    if len(xy) > 1:
        draw.line(xy, fill=colour, width=2)
    else:
        draw.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=colour)
    scale = " (log10)" if log_y else ""
    draw.text((x0 + 8, y0 + 6), f"{name}{scale}: first {points[0][1]:.4g}, last {points[-1][1]:.4g}",
              fill=(0, 0, 0))
    hi, lo = (10**y_hi, 10**y_lo) if log_y else (y_hi, y_lo)
    draw.text((x0 + 2, top - 4), f"{hi:.3g}", fill=(90, 90, 90))
    draw.text((x0 + 2, top + height - 8), f"{lo:.3g}", fill=(90, 90, 90))
    draw.text((left, top + height + 6), f"step {s_lo}", fill=(90, 90, 90))
    draw.text((left + width - 70, top + height + 6), f"step {s_hi}", fill=(90, 90, 90))


def draw_loss_curve(records: Sequence[dict], path: str | Path, keys: Sequence[str], columns: int = 2) -> None:
    """Write a PNG with one panel per metric in `keys` found in `records` (JSONL log rows with a `step`).

    Metrics absent or null in a row are skipped for that row; metrics never present (or always 0, like a
    perceptual term of weight 0) get no panel. The file
    is written to a temporary name and renamed.
    """
    series = {k: [(int(r["step"]), float(r[k])) for r in records if isinstance(r.get(k), (int, float))]
              for k in keys}
    series = {k: v for k, v in series.items() if any(value != 0.0 for _, value in v)}  # skip absent / all-zero
    if not series:
        return
    rows = math.ceil(len(series) / columns)
    image = Image.new("RGB", (columns * _PANEL_W, rows * _PANEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, (name, points) in enumerate(series.items()):
        box = ((i % columns) * _PANEL_W, (i // columns) * _PANEL_H)
        _panel(draw, box, name, points, _COLOURS[i % len(_COLOURS)])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
