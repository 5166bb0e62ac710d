"""Worker processes of the whole-slide pipeline: the same bytes as in-process, a bounded queue, dead workers and
errors surface (no hang)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from coseg.wsi import WholeSlideInferer
from coseg.wsi.workers import WorkerError, WorkerPool, default_workers

from .test_run import _inferer


class _ExitWhenUnpickled(tuple):
    """A tile ``(row, col)`` that pickles fine; unpickling it ends the process at once, as a crash or the
    out-of-memory killer would."""

    def __reduce__(self):
        return os._exit, (3,)


class _Poisoned(WholeSlideInferer):
    """Hands the workers a tile that kills the worker process receiving it."""

    def _tile_maps(self, image, plan, tiles):
        for k, (tile, maps) in enumerate(super()._tile_maps(image, plan, tiles)):
            yield (_ExitWhenUnpickled(tile) if k == 5 else tile), maps


class _Misshapen(WholeSlideInferer):
    """Hands the workers a tile whose maps do not match its context."""

    def _tile_maps(self, image, plan, tiles):
        for k, (tile, maps) in enumerate(super()._tile_maps(image, plan, tiles)):
            yield tile, ({**maps, "prob": maps["prob"][:-1]} if k == 1 else maps)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (records in the parts folder included) by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path, slide):
    path, _ = slide
    one = _inferer(tmp_path / "zero", level=1, workers=0, keep_parts=True)(path)[0]
    two = _inferer(tmp_path / "two", level=1, workers=2, keep_parts=True)(path)[0]
    assert one.complete and two.complete and two.summary["timing"]["workers"] == 2
    a, b = _files(tmp_path / "zero"), _files(tmp_path / "two")
    assert sorted(a) == sorted(b) and any(name.endswith(".npz") for name in a)
    different = [name for name in a if a[name] != b[name] and not name.endswith("_summary.json")]
    assert different == []
    drop = {"timing", "outputs"}
    assert {k: v for k, v in one.summary.items() if k not in drop} == {
        k: v for k, v in two.summary.items() if k not in drop
    }
    # the tiles were post-processed in other processes, never more than 2 per worker at a time
    assert 0 < two.summary["timing"]["tiles_in_flight_max"] <= 4
    assert two.summary["timing"]["postprocess_cpu_s"] > 0


def test_a_resumed_run_with_workers_matches_an_uninterrupted_one(tmp_path, slide):
    path, _ = slide
    first = _inferer(tmp_path / "a", level=1, workers=1, max_tiles=4)(path)[0]
    assert not first.complete and first.tiles_done_now == 4
    resumed = _inferer(tmp_path / "a", level=1, workers=2)(path)[0]
    fresh = _inferer(tmp_path / "b", level=1, workers=0)(path)[0]
    assert resumed.complete and resumed.tiles_done_now == 8
    for kind in ("inst", "type", "sem", "geojson", "instances", "overlay"):
        assert Path(resumed.outputs[kind]).read_bytes() == Path(fresh.outputs[kind]).read_bytes(), kind


def test_a_dead_worker_fails_the_run_with_a_clear_error(tmp_path, slide):
    path, _ = slide
    runner = _inferer(tmp_path, _Poisoned, level=1, workers=2)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker process died while working on .*tile \(\d+, \d+\)"):
        runner(path)
    assert time.monotonic() - start < 120  # no hang (the whole run takes seconds)
    # the tiles finished before are kept (at least the 2 oldest: 4 may be in flight when the 6th is handed over);
    # a run with a healthy network completes the slide
    again = _inferer(tmp_path, level=1, workers=1)(path)[0]
    assert again.complete and again.tiles_done_now <= 10


def test_an_error_in_a_worker_is_raised_in_the_main_process(tmp_path, slide):
    path, _ = slide
    runner = _inferer(tmp_path, _Misshapen, level=1, workers=1)
    with pytest.raises(ValueError, match="do not match the context"):
        runner(path)


def _slow_square(x: int) -> int:
    time.sleep(0.02)
    return x * x


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_the_queue_is_bounded(workers):
    drawn, done = [], []
    in_flight = []

    def items():
        for k in range(12):
            drawn.append(k)
            in_flight.append(len(drawn) - len(done))
            yield (k,)

    with WorkerPool(workers) as pool:
        for value, stats in pool.imap(_slow_square, items()):
            done.append(value)
            assert stats.cpu_s >= 0 and (stats.pid == os.getpid()) == (workers == 0)
    assert done == [k * k for k in range(12)]  # in order
    bound = max(1, 2 * workers)
    assert max(in_flight) == bound == pool.peak_pending  # never more, and the bound is reached


def test_worker_settings():
    assert 0 <= default_workers() <= 4
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(-1)
    with pytest.raises(ValueError, match="max_pending"):
        WorkerPool(1, max_pending=0)
    with WorkerPool(0) as pool:
        assert pool.submit(pow, 2, 10).result()[0] == 1024
        # errors come back through the future, also in-process
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result()


def test_shared_arrays_round_trip_and_free_their_block():
    import pickle
    from multiprocessing import shared_memory

    import numpy as np

    from coseg.wsi.workers import SharedArrays

    arrays = {"prob": np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7), "hv": np.ones((2, 5, 7)), "sem": None}
    handle = SharedArrays(arrays)
    other = pickle.loads(pickle.dumps(handle))  # as a worker receives it: the name and the layout
    assert len(pickle.dumps(handle)) < 1000
    back = other.arrays()
    assert back["sem"] is None
    for key in ("prob", "hv"):
        np.testing.assert_array_equal(back[key], arrays[key])
        assert back[key].dtype == arrays[key].dtype
    del back
    other.close()
    handle.unlink()
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=handle.name)
