"""Worker processes for the CPU side of whole-slide inference: per-tile post-processing and output writing.

The watershed, the labelling and the outlines of a tile hold the GIL, so threads cannot run them beside the network;
:class:`WorkerPool` runs them in worker processes instead. The main process streams the network (reading, windows,
blending) and hands each finished tile's maps to the pool; a worker post-processes the tile and writes its record
into the parts folder (:func:`finish_tile`); only a few numbers come back. At most ``max_pending`` tiles are handed
over and not finished (a bounded queue): their maps are the only slide data in flight, so memory stays bounded
whatever the slide's size, and the network never waits for the post-processing while workers are free. After the
tiles, the same pool writes the label TIFFs while the main process writes the GeoJSON, the table and the overview
(:mod:`coseg.wsi.pipeline`).

With ``workers=0`` everything runs in the calling process, in the same order, with the same results: worker
processes change when things are computed, never what. A worker that dies (killed, out of memory, crashed) makes
the run fail with :class:`WorkerError`; an exception raised in a worker is raised again in the main process.

Workers are started through a fork server (spawn where there is none) that has imported :mod:`coseg.wsi` once, not
forked from the main process, which may hold CUDA and thread pools that do not survive a fork.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from coseg.postprocess import WatershedParams
from coseg.wsi.merge import process_tile
from coseg.wsi.parts import record_name, save_record
from coseg.wsi.tiling import Placement, TilePlan

__all__ = [
    "WorkerError",
    "WorkerPool",
    "OrderedResults",
    "SharedArrays",
    "TileJob",
    "TaskStats",
    "finish_tile",
    "default_workers",
    "usable_cpus",
]

#: modules the fork server imports once, so that workers start in milliseconds
_PRELOAD = ["coseg.wsi"]


class WorkerError(RuntimeError):
    """A worker process died (killed, out of memory, crashed) before it finished its task."""


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes when none are configured: one core is left to the main process (reading and the network),
    at most 4 (beyond, the network is rarely the faster side), 0 (in-process) on a single core."""
    return max(0, min(4, usable_cpus() - 1))


@dataclass(frozen=True)
class TaskStats:
    """What a task cost in the process that ran it.

    Attributes:
        cpu_s: CPU seconds of the task.
        peak_rss_mb: the process's peak resident memory so far (Linux; ``None`` elsewhere).
        pid: the process.
    """

    cpu_s: float
    peak_rss_mb: float | None
    pid: int


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, TaskStats]:
    start = time.process_time()
    value = fn(*args)
    return value, TaskStats(time.process_time() - start, _peak_rss_mb(), os.getpid())


def _init_worker() -> None:
    """One thread per worker process: the pool is the parallelism."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _context() -> multiprocessing.context.BaseContext:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without the caller's ``__main__``.

    A fork-server or spawned child re-imports the parent's main script (to unpickle what it defines) unless the
    script guards its work with ``if __name__ == "__main__":``; an unguarded script would run again in every worker
    and fail. The workers only run functions of this package, so while they start, ``__main__`` is a bare module.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class WorkerPool:
    """Worker processes with a bounded number of tasks in flight (module docstring).

    Args:
        workers: worker processes (``>= 0``); 0 runs every task in the calling process, when it is submitted.
        max_pending: tasks submitted and not yet finished, at most; default ``2 * workers`` (one running and one
            waiting per worker), at least 1.

    Raises:
        ValueError: a negative ``workers`` or a ``max_pending`` below 1.
    """

    def __init__(self, workers: int, *, max_pending: int | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        if max_pending is not None and (isinstance(max_pending, bool) or max_pending < 1):
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.workers = int(workers)
        self.max_pending = int(max_pending) if max_pending is not None else max(1, 2 * self.workers)
        self._executor: ProcessPoolExecutor | None = None
        #: the most tasks that were in flight at once (for the tests and the logs)
        self.peak_pending = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, *, cancel: bool = True) -> None:
        """Stop the worker processes (waiting for the running tasks; queued ones are cancelled)."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True, cancel_futures=cancel)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=_context(), initializer=_init_worker
            )
        return self._executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` in a worker, or here and now with ``workers=0``. Not bounded: see :meth:`imap`.

        ``fn`` must be a module-level function of an importable module (not of the caller's ``__main__``, which the
        workers do not import); ``args`` are pickled (hand large arrays over as :class:`SharedArrays`).

        Returns:
            a future of ``(value, TaskStats)``; :func:`result` reads it.
        """
        if self.workers == 0:
            future: Future = Future()
            try:
                future.set_result(_measured(fn, *args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future, as a pool does
                future.set_exception(exc)
            return future
        with _main_module_hidden():  # the pool starts its processes on demand, in submit
            try:
                return self._pool().submit(_measured, fn, *args)
            except BrokenProcessPool as exc:
                raise WorkerError(_died("an earlier task")) from exc

    def imap(
        self,
        fn: Callable[..., Any],
        items: Iterable[tuple[Any, ...]],
        *,
        describe: Callable[[Any], str] = lambda item: "a task",
    ) -> OrderedResults:
        """``fn(*item)`` for every item, in order, with at most :attr:`max_pending` in flight: the next item is
        drawn from ``items`` (e.g. the network's next tile) only when there is room.

        Args:
            fn: a module-level function.
            items: argument tuples, drawn lazily.
            describe: names an item in error messages.

        Returns:
            an iterator of ``(value, TaskStats)`` per item, in the order of ``items``; nothing is submitted before
            it is first advanced or :meth:`OrderedResults.fill` is called.

        Raises:
            WorkerError: (when iterating) a worker process died.
        """
        return OrderedResults(self, fn, items, describe)


class OrderedResults(Iterator[tuple[Any, TaskStats]]):
    """The results of :meth:`WorkerPool.imap`, in order; at most ``max_pending`` tasks in flight."""

    def __init__(
        self, pool: WorkerPool, fn: Callable[..., Any], items: Iterable[tuple[Any, ...]], describe: Callable[[Any], str]
    ) -> None:
        self.pool, self.fn, self.items, self.describe = pool, fn, iter(items), describe
        self.pending: deque[tuple[Future, Any]] = deque()
        self.exhausted = False

    def fill(self) -> OrderedResults:
        """Submit items until :attr:`WorkerPool.max_pending` are in flight (or none are left), without waiting: the
        workers start while the caller does something else."""
        pool = self.pool
        while not self.exhausted and len(self.pending) < pool.max_pending:
            item = next(self.items, None)
            if item is None:
                self.exhausted = True
                break
            try:
                future = pool.submit(self.fn, *item)
            except WorkerError as exc:  # the pool broke while earlier items were running
                what = ", ".join(self.describe(done) for _, done in self.pending) or self.describe(item)
                raise WorkerError(_died(f"one of {what}" if len(self.pending) > 1 else what)) from exc.__cause__
            self.pending.append((future, item))
            pool.peak_pending = max(pool.peak_pending, len(self.pending))
        return self

    def __next__(self) -> tuple[Any, TaskStats]:
        self.fill()
        if not self.pending:
            raise StopIteration
        future, item = self.pending.popleft()
        return result(future, self.describe(item))


def result(future: Future, what: str = "a task") -> Any:
    """The value of a :meth:`WorkerPool.submit` future; a dead worker becomes a :class:`WorkerError`.

    Raises:
        WorkerError: the worker process running ``what`` (or another one of the pool) died.
    """
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerError(_died(what)) from exc


def _died(what: str) -> str:
    return (
        f"a whole-slide worker process died while working on {what} (killed, out of memory, or crashed); the tiles "
        "finished so far are kept: run again to continue, with fewer --workers or a smaller --tile-size if memory "
        "ran out"
    )


class SharedArrays:
    """Arrays handed to a worker through one shared-memory block instead of a pipe.

    A tile's maps are tens of megabytes (``(tile + 2 margin)²`` pixels of object probability, HV maps, types and
    regions: 66 MB at 2048 px tiles); pickled through the pool's pipe they cost a copy on each side and the pipe's
    throughput (measured 0.4 s per 2048 px tile on a busy 2-core machine, a third of its post-processing). Here the
    creating process copies them once into a block; the worker maps the block and reads them in place. The handle
    pickles to the block's name and layout.

    The creator owns the block: :meth:`unlink` it once the worker is done (or failed). ``None`` values stay ``None``.

    Args:
        arrays: ``{name: array or None}``.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray | None]) -> None:
        layout, offset = [], 0
        for key, value in arrays.items():
            if value is None:
                layout.append((key, None, None, 0))
                continue
            value = np.asarray(value)
            layout.append((key, value.dtype.str, value.shape, offset))
            offset += -(-value.nbytes // 64) * 64  # 64-byte aligned
        self.layout = layout
        self._shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(create=True, size=max(1, offset))
        self.name = self._shm.name
        for key, dtype, shape, start in layout:
            if dtype is not None:
                view = np.ndarray(shape, dtype=dtype, buffer=self._shm.buf, offset=start)
                view[...] = arrays[key]
        del view  # no view may outlive the mapping

    def __reduce__(self) -> tuple[Any, ...]:
        return _attach, (self.name, self.layout)

    def arrays(self) -> dict[str, np.ndarray | None]:
        """The arrays, read in place (valid until :meth:`close`)."""
        if self._shm is None:
            self._shm = shared_memory.SharedMemory(name=self.name)
        buf = self._shm.buf
        return {
            key: None if dtype is None else np.ndarray(shape, dtype=dtype, buffer=buf, offset=start)
            for key, dtype, shape, start in self.layout
        }

    def close(self) -> None:
        """Unmap the block here (the arrays of :meth:`arrays` must be gone)."""
        if self._shm is not None:
            shm, self._shm = self._shm, None
            try:
                shm.close()
            except BufferError:  # an array still refers to it (e.g. a traceback's frame): unmapped when collected
                pass

    def unlink(self) -> None:
        """Free the block (by its creator, once no worker needs it)."""
        self.close()
        try:
            shared_memory.SharedMemory(name=self.name).unlink()
        except FileNotFoundError:
            pass


def _attach(name: str, layout: list[tuple[Any, ...]]) -> SharedArrays:
    handle = SharedArrays.__new__(SharedArrays)
    handle.name, handle.layout, handle._shm = name, layout, None
    return handle


@dataclass(frozen=True)
class TileJob:
    """What every tile of a slide is post-processed with (sent with each tile to a worker; small).

    Attributes:
        plan: the tile plan.
        watershed: watershed settings for the working resolution.
        num_types, num_sem_classes, sem_min_size, low_step: see :func:`coseg.wsi.merge.process_tile`.
        placement: where the region lies on the slide (GeoJSON geometry is rendered per tile).
        parts: the parts folder the records go to.
        band_height: rows per stored label band (:func:`coseg.wsi.parts.save_record`).
    """

    plan: TilePlan
    watershed: WatershedParams
    num_types: int
    num_sem_classes: int
    sem_min_size: int
    low_step: int
    placement: Placement | None
    parts: Path
    band_height: int


def finish_tile(
    job: TileJob, tile: tuple[int, int], maps: Mapping[str, np.ndarray | None] | SharedArrays
) -> tuple[int, int]:
    """Post-process one tile (:func:`coseg.wsi.merge.process_tile`) and save its record in the parts folder.

    Args:
        job: the slide's settings.
        tile: ``(row, col)``.
        maps: the reduced maps of the tile's context, or a :class:`SharedArrays` of them.

    Returns:
        ``(row, col)``.
    """
    if isinstance(maps, SharedArrays):
        try:
            return _finish_tile(job, tile, maps.arrays())
        finally:
            maps.close()
    return _finish_tile(job, tile, maps)


def _finish_tile(job: TileJob, tile: tuple[int, int], maps: Mapping[str, np.ndarray | None]) -> tuple[int, int]:
    record = process_tile(
        maps,
        plan=job.plan,
        tile=tile,
        watershed=job.watershed,
        num_types=job.num_types,
        num_sem_classes=job.num_sem_classes,
        sem_min_size=job.sem_min_size,
        low_step=job.low_step,
        placement=job.placement,
    )
    save_record(job.parts / record_name(tile), record, band_height=job.band_height)
    return tile
