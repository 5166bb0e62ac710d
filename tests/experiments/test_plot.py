"""Line plots: round ticks, PNG size, bands and NaN points, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from coseg.experiments import Panel, Series, draw_line_plot
from coseg.experiments.plot import nice_ticks


@pytest.mark.parametrize(
    "lo, hi, kw, expected",
    [
        (0.0, 1.0, {}, [0.0, 0.5, 1.0]),
        (0.12, 0.87, {}, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (1.0, 4.0, {"integer": True}, [1.0, 2.0, 3.0, 4.0]),
        (1.0, 2.0, {"integer": True}, [1.0, 2.0]),
        (0.0, 0.0, {}, [0.0, 0.5, 1.0]),
        (45.3, 48.4, {}, [45.0, 46.0, 47.0, 48.0, 49.0]),
    ],
)
def test_nice_ticks(lo, hi, kw, expected):
    assert nice_ticks(lo, hi, **kw) == pytest.approx(expected)


def test_nice_ticks_refuses_bad_ranges():
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, math.inf)
    with pytest.raises(ValueError, match="count"):
        nice_ticks(0.0, 1.0, count=1)


def test_draws_panels_side_by_side(tmp_path):
    path = tmp_path / "plot.png"
    a = Series("with", [1, 2, 3], [50.0, 55.0, math.nan], [1.0, 2.0, math.nan])
    b = Series("without", [1, 2, 3], [48.0, 50.0, 52.0])
    draw_line_plot([Panel("Dice", "epoch", "%", [a, b]), Panel("PQ", "epoch", "%", [b])], path, title="T")
    img = np.asarray(Image.open(path))
    assert img.shape == (380 + 34, 2 * 520, 3)
    blue = np.array([0, 114, 178])
    assert (np.abs(img.astype(int) - blue).sum(-1) == 0).sum() > 50  # the first line is drawn in its colour


def test_bad_plots_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one panel"):
        draw_line_plot([], tmp_path / "p.png")
    with pytest.raises(ValueError, match="no lines"):
        draw_line_plot([Panel("t", "x", "y", [])], tmp_path / "p.png")
    with pytest.raises(ValueError, match="same length"):
        draw_line_plot([Panel("t", "x", "y", [Series("s", [1, 2], [1.0])])], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
