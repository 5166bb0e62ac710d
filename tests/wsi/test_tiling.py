"""Window grids equal to MONAI's sliding windows; tiles, contexts, strips, runs and shares."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from coseg.wsi.tiling import Box, TilePlan, contiguous_runs, split_among_ranks, window_grid


def monai_windows(height: int, width: int, roi: int, overlap: float) -> list[tuple[int, int]]:
    """The window corners MONAI's sliding_window_inference visits (region coordinates, padding removed)."""
    seen = []

    def predictor(x, slices):
        seen.extend((s[2].start, s[3].start) for s in slices)
        return x

    sliding_window_inference(
        torch.zeros(1, 1, height, width), (roi, roi), 3, predictor, overlap=overlap, with_coord=True
    )
    pad_y, pad_x = max(roi - height, 0) // 2, max(roi - width, 0) // 2
    return [(y - pad_y, x - pad_x) for y, x in seen]


@pytest.mark.parametrize(
    "height, width, roi, overlap",
    [(300, 370, 64, 0.25), (64, 200, 64, 0.25), (129, 65, 64, 0.5), (40, 50, 64, 0.25), (1000, 257, 128, 0.0)],
)
def test_windows_are_monais(height, width, roi, overlap):
    plan = TilePlan(height=height, width=width, tile_size=64, margin=8, roi_size=(roi, roi), overlap=(overlap, overlap))
    assert plan.windows(plan.tiles()) == monai_windows(height, width, roi, overlap)


def test_window_grid_by_hand():
    grid = window_grid(100, 40, 0.25)  # interval 30: starts 0, 30, 60 (the last one flush with the end)
    assert grid.interval == 30 and grid.starts == (0, 30, 60) and grid.pad_before == 0
    small = window_grid(30, 40, 0.25)  # padded by 10: 5 before, window from -5
    assert small.starts == (-5,) and small.pad_before == 5 and small.interval == 40
    assert grid.intersecting(35, 61) == [0, 30, 60]
    assert grid.intersecting(70, 100) == [60]


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 0, "roi": 8, "overlap": 0.1}, {"size": 8, "roi": 8, "overlap": 1.0}, {"size": 8, "roi": 0, "overlap": 0}],
)
def test_window_grid_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        window_grid(**kwargs)


def test_tiles_contexts_neighbours_and_strips():
    plan = TilePlan(
        height=250, width=300, tile_size=100, margin=10, roi_size=(64, 64), overlap=(0.25, 0.25), strip_tiles=2
    )
    assert (plan.n_rows, plan.n_cols, plan.n_strips) == (3, 3, 2)
    assert plan.core(2, 2) == Box(200, 200, 250, 300)
    assert plan.context(0, 0) == Box(0, 0, 110, 110)
    assert plan.context(1, 1) == Box(90, 90, 210, 210)
    assert plan.context(2, 2) == Box(190, 190, 250, 300)
    assert plan.neighbours(0, 0) == {"bottom": (1, 0), "right": (0, 1)}
    assert set(plan.neighbours(1, 1)) == {"top", "bottom", "left", "right"}
    # strip 0 holds columns 0-1, strip 1 column 2; tiles go strip by strip, top to bottom
    assert plan.tiles()[:6] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert plan.tiles()[6:] == [(0, 2), (1, 2), (2, 2)]
    # the cores partition the region
    covered = sum(plan.core(r, c).height * plan.core(r, c).width for r, c in plan.tiles())
    assert covered == 250 * 300


def test_windows_of_some_tiles_cover_their_contexts_only():
    plan = TilePlan(height=512, width=512, tile_size=128, margin=16, roi_size=(64, 64), overlap=(0.25, 0.25))
    windows = plan.windows([(1, 1)])
    context = plan.context(1, 1)  # 112..272
    assert all(Box(y, x, y + 64, x + 64).intersects(context) for y, x in windows)
    every = plan.windows(plan.tiles())
    missing = [w for w in every if Box(w[0], w[1], w[0] + 64, w[1] + 64).intersects(context) and w not in windows]
    assert not missing
    assert len(windows) < len(every)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"margin": 0},
        {"margin": 200},
        {"tile_size": 0},
        {"strip_tiles": 0},
        {"roi_size": (64,)},
    ],
)
def test_plan_rejects_bad_arguments(kwargs):
    args = {"height": 100, "width": 100, "tile_size": 100, "margin": 10, "roi_size": (64, 64), "overlap": (0.25, 0.25)}
    args.update(kwargs)
    with pytest.raises(ValueError):
        TilePlan(**args)


def test_runs_and_rank_shares():
    plan = TilePlan(
        height=400, width=400, tile_size=100, margin=10, roi_size=(64, 64), overlap=(0.25, 0.25), strip_tiles=2
    )
    tiles = [(0, 0), (0, 1), (1, 1), (3, 0), (0, 2), (1, 2)]  # a gap at row 2, then a new strip
    assert contiguous_runs(plan, tiles) == [[(0, 0), (0, 1), (1, 1)], [(3, 0)], [(0, 2), (1, 2)]]
    shares = split_among_ranks(list(range(10)), 3)
    assert [len(s) for s in shares] == [3, 4, 3]
    assert sum(shares, []) == list(range(10))
    few = split_among_ranks([1, 2], 4)
    assert len(few) == 4 and sum(few, []) == [1, 2] and max(len(s) for s in few) == 1
    with pytest.raises(ValueError):
        split_among_ranks([1], 0)
