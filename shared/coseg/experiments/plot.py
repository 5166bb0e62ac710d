"""Line plots as PNG (training curves of Fig. 9, metric-against-setting plots of Fig. 8).

Drawn with Pillow, which the project already needs, so that the experiments add no plotting library.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from coseg.io import write_rgb

__all__ = ["Series", "Panel", "draw_line_plot", "nice_ticks"]

#: line colours (colour-blind safe, Okabe & Ito)
COLOURS = [
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
    (240, 228, 66),
]


@dataclass(frozen=True)
class Series:
    """One line.

    Attributes:
        name: legend entry.
        x: ``(n,)`` x values.
        y: ``(n,)`` y values (NaN points are skipped).
        spread: ``(n,)`` optional half-width of a shaded band around ``y`` (e.g. the std over seeds).
    """

    name: str
    x: Sequence[float]
    y: Sequence[float]
    spread: Sequence[float] | None = None


@dataclass(frozen=True)
class Panel:
    """One plot area: a title, axis labels and its lines."""

    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k; at least 1 with ``integer``) covering
    ``[lo, hi]``. An empty range is widened (``[0, 1]`` around 0).

    Raises:
        ValueError: non-finite bounds or ``count < 2``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if count < 2:
        raise ValueError(f"count must be >= 2, got {count}")
    if hi <= lo:
        if lo == 0:
            hi = 1.0
        else:
            pad = abs(lo) * 0.05
            lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / (count - 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def draw_line_plot(
    panels: Sequence[Panel],
    path: str | os.PathLike,
    *,
    panel_size: tuple[int, int] = (520, 380),
    title: str | None = None,
) -> None:
    """Draw panels side by side, each with its lines, markers, optional shaded bands and a legend, into a PNG.

    Args:
        panels: the panels.
        path: output PNG (written atomically).
        panel_size: ``(width, height)`` of one panel in pixels.
        title: optional title above the panels.

    Raises:
        ValueError: no panel, a panel without lines, or a line whose x, y (and spread) lengths differ.
    """
    if not panels:
        raise ValueError("draw_line_plot needs at least one panel")
    for p in panels:
        if not p.series:
            raise ValueError(f"panel {p.title!r} has no lines")
        for s in p.series:
            if len(s.x) != len(s.y) or (s.spread is not None and len(s.spread) != len(s.y)):
                raise ValueError(f"line {s.name!r}: x, y and spread must have the same length")
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    pw, ph = panel_size
    top = 34 if title else 0
    canvas = Image.new("RGB", (pw * len(panels), ph + top), (255, 255, 255))
    draw = ImageDraw.Draw(canvas, "RGBA")
    if title:
        draw.text((canvas.width // 2, 8), title, fill=(0, 0, 0), font=font, anchor="mt")
    for i, panel in enumerate(panels):
        _draw_panel(canvas, draw, panel, (i * pw, top, pw, ph), font, small)
    write_rgb(path, np.asarray(canvas))


def _draw_panel(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    panel: Panel,
    box: tuple[int, int, int, int],
    font: ImageFont.FreeTypeFont,
    small: ImageFont.FreeTypeFont,
) -> None:
    x0, y0, w, h = box
    left, right, top, bottom = x0 + 72, x0 + w - 16, y0 + 30, y0 + h - 52
    xs = [float(v) for s in panel.series for v in s.x]
    ys = []
    for s in panel.series:
        spread = s.spread if s.spread is not None else [0.0] * len(s.y)
        for v, e in zip(s.y, spread, strict=True):
            e = 0.0 if e is None or not math.isfinite(float(e)) else float(e)
            if v is not None and math.isfinite(float(v)):
                ys += [float(v) - e, float(v) + e]
    draw.text(((left + right) // 2, y0 + 8), panel.title, fill=(0, 0, 0), font=font, anchor="mt")
    draw.text(((left + right) // 2, bottom + 30), panel.x_label, fill=(0, 0, 0), font=font, anchor="mt")
    if panel.y_label:  # vertical text: drawn on its own image, turned, pasted through itself as mask
        label = Image.new("L", (int(draw.textlength(panel.y_label, font=small)) + 4, 16), 0)
        ImageDraw.Draw(label).text((2, 1), panel.y_label, fill=255, font=small)
        label = label.rotate(90, expand=True)
        canvas.paste((0, 0, 0), (x0 + 4, (top + bottom - label.height) // 2), mask=label)
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    if not xs or not ys:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no data", fill=(120, 120, 120), font=font, anchor="mm")
        return
    xt = nice_ticks(min(xs), max(xs), integer=all(float(x).is_integer() for x in xs))
    yt = nice_ticks(min(ys), max(ys))
    xlo, xhi, ylo, yhi = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - xlo) / (xhi - xlo) * (right - left),
            bottom - (y - ylo) / (yhi - ylo) * (bottom - top),
        )

    for t in xt:
        x, _ = px(t, ylo)
        draw.line((x, bottom, x, bottom + 4), fill=(0, 0, 0))
        draw.text((x, bottom + 7), _label(t), fill=(0, 0, 0), font=small, anchor="mt")
    for t in yt:
        _, y = px(xlo, t)
        draw.line((left - 4, y, left, y), fill=(0, 0, 0))
        draw.line((left + 1, y, right - 1, y), fill=(0, 0, 0, 28))
        draw.text((left - 7, y), _label(t), fill=(0, 0, 0), font=small, anchor="rm")
    for k, s in enumerate(panel.series):
        colour = COLOURS[k % len(COLOURS)]
        pts = [
            (float(x), float(y), 0.0 if s.spread is None else float(s.spread[j]))
            for j, (x, y) in enumerate(zip(s.x, s.y, strict=True))
            if y is not None and math.isfinite(float(y))
        ]
        pts.sort()
        band = [(x, y, e) for x, y, e in pts if math.isfinite(e) and e > 0]
        if len(band) >= 2:
            upper = [px(x, y + e) for x, y, e in band]
            lower = [px(x, y - e) for x, y, e in reversed(band)]
            draw.polygon(upper + lower, fill=colour + (48,))
        line = [px(x, y) for x, y, _ in pts]
        if len(line) >= 2:
            draw.line(line, fill=colour, width=2)
        for x, y in line:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        ly = top + 8 + 16 * k
        draw.line((left + 10, ly, left + 30, ly), fill=colour, width=3)
        draw.text((left + 36, ly), s.name, fill=(0, 0, 0), font=small, anchor="lm")
