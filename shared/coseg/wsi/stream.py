"""MONAI's sliding-window blending, streamed over a strip of a large image with bounded memory.

:class:`WindowStream` runs the network over the windows of :meth:`~coseg.wsi.tiling.TilePlan.windows` in MONAI's
order, in batches of ``sw_batch_size``, and blends them exactly as ``monai.inferers.sliding_window_inference``
does: each window output is multiplied in place by the importance map (MONAI's ``compute_importance_map``) and
added into an output buffer, the importance map into a count buffer, in window order; a pixel's value is the
output sum divided by the count sum. Because a pixel gets the same windows, in the same order, with the same
arithmetic, its value equals the whole-image value (up to the floating-point effects of a different batch
composition inside the network).

What is streamed: windows are taken row by row, so once all windows starting above row ``y`` have run, every row
above ``y`` is final. Final rows leave the blending buffers immediately, reduced by a caller-given function (e.g.
object probability, HV maps and arg-maxes, :func:`coseg.wsi.merge.reduce_outputs`) into CPU arrays; as soon as
the context of a tile is final, the tile's maps are yielded and rows nobody needs any more are dropped. The
blending buffers hold about ``roi + interval`` rows of one strip, the reduced rows about a tile's context height.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from monai.data.utils import compute_importance_map

from coseg.wsi.tiling import Box, TilePlan

__all__ = ["WindowStream"]

logger = logging.getLogger(__name__)

#: reads the normalised input ``(3, y1 - y0, x1 - x0)`` float tensor of a box (region coordinates; parts outside
#: the region hold the padding value)
ReadFn = Callable[[Box], torch.Tensor]
#: turns blended outputs ``{key: (C, rows, cols) tensor}`` into CPU arrays ``{name: (..., rows, cols)}``
ReduceFn = Callable[[Mapping[str, torch.Tensor]], dict[str, np.ndarray]]


class _Rows:
    """Reduced final rows of one strip: chunks of arrays ``(..., rows, cols)`` stacked along the rows."""

    def __init__(self, x0: int) -> None:
        self.x0 = x0
        self.chunks: list[tuple[int, dict[str, np.ndarray]]] = []  # (first row, arrays)

    @property
    def end(self) -> int:
        if not self.chunks:
            return -(2**62)
        y, arrays = self.chunks[-1]
        return y + next(iter(arrays.values())).shape[-2]

    def append(self, y0: int, arrays: dict[str, np.ndarray]) -> None:
        self.chunks.append((y0, arrays))

    def crop(self, box: Box) -> dict[str, np.ndarray]:
        parts = [(y, a) for y, a in self.chunks if y < box.y1 and y + next(iter(a.values())).shape[-2] > box.y0]
        out = {}
        for key in parts[0][1]:
            rows = [a[key][..., max(0, box.y0 - y) : box.y1 - y, :] for y, a in parts]
            stacked = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=-2)
            out[key] = np.ascontiguousarray(stacked[..., box.x0 - self.x0 : box.x1 - self.x0])
        return out

    def drop_above(self, y: int) -> None:
        self.chunks = [(y0, a) for y0, a in self.chunks if y0 + next(iter(a.values())).shape[-2] > y]


class WindowStream:
    """Blend network windows like MONAI's ``sliding_window_inference``, streaming final tiles.

    Args:
        network: callable taking a ``(B, 3, h, w)`` batch and returning a dict of ``(B, C, h, w)`` tensors (the
            Co-Seg++ network).
        roi_size: window ``(h, w)``.
        keep: the output keys to blend (outputs at window resolution).
        reduce: turns the blended ``{key: (C, rows, cols)}`` of final rows into CPU arrays.
        sw_batch_size: windows per network call.
        mode: ``"gaussian"`` or ``"constant"`` blending (MONAI's ``BlendMode``).
        sigma_scale: of the Gaussian (MONAI's).
        device: where the network runs and the blending buffers live.
        amp: run the network under ``torch.autocast`` with ``amp_kwargs`` (as MONAI's evaluators do).
        amp_kwargs: e.g. ``{"dtype": torch.bfloat16}``.
        prefetch: read the next window row in a background thread while the network runs.

    Raises:
        ValueError: for a bad window size or batch size.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
        *,
        roi_size: Sequence[int],
        keep: Sequence[str],
        reduce: ReduceFn,
        sw_batch_size: int = 1,
        mode: str = "gaussian",
        sigma_scale: float | Sequence[float] = 0.125,
        device: torch.device | str = "cpu",
        amp: bool = False,
        amp_kwargs: Mapping[str, Any] | None = None,
        prefetch: bool = True,
    ) -> None:
        if len(roi_size) != 2 or any(int(r) < 1 for r in roi_size):
            raise ValueError(f"roi_size must be two positive integers, got {roi_size!r}")
        if isinstance(sw_batch_size, bool) or int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size!r}")
        if not keep:
            raise ValueError("keep must name at least one output key")
        self.network = network
        self.roi_size = (int(roi_size[0]), int(roi_size[1]))
        self.keep = tuple(keep)
        self.reduce = reduce
        self.sw_batch_size = int(sw_batch_size)
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.amp_kwargs = dict(amp_kwargs or {})
        self.prefetch = prefetch
        # MONAI computes the map once per call with the input's dtype (float32 here) on the window device
        self.importance = compute_importance_map(
            self.roi_size, mode=mode, sigma_scale=sigma_scale, device=self.device, dtype=torch.float32
        )[None, None]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, **self.amp_kwargs)

    def run(
        self, plan: TilePlan, tiles: Sequence[tuple[int, int]], read: ReadFn
    ) -> Iterator[tuple[tuple[int, int], Box, dict[str, np.ndarray]]]:
        """Stream the tiles of one run (one strip, consecutive rows; see :func:`~coseg.wsi.tiling.contiguous_runs`).

        Args:
            plan: the tile plan.
            tiles: the tiles to produce, in processing order.
            read: returns the normalised input of a box.

        Yields:
            ``(tile, context, maps)`` for each tile as soon as its context is final: ``maps`` are the reduced
            arrays of the context box, ``(..., context.height, context.width)``.

        Raises:
            ValueError: if the tiles span several strips or the network returns outputs of another size.
        """
        if not tiles:
            return
        if len({plan.strip_of(c) for _, c in tiles}) != 1:
            raise ValueError("a run must stay in one strip")
        ph, pw = self.roi_size
        windows = plan.windows(tiles)
        pending = [(t, plan.context(*t)) for t in tiles]
        x0 = min(wx for _, wx in windows)
        x1 = max(wx for _, wx in windows) + pw
        width = x1 - x0
        rows = _Rows(x0)
        acc: dict[str, torch.Tensor] = {}
        count = torch.zeros((0, width), dtype=torch.float32, device=self.device)
        acc_y0 = windows[0][0]

        def grow(to_y: int) -> None:
            nonlocal count
            extra = to_y - (acc_y0 + count.shape[0])
            if extra <= 0:
                return
            count = torch.cat([count, count.new_zeros((extra, width))])
            for key, value in acc.items():
                acc[key] = torch.cat([value, value.new_zeros((value.shape[0], extra, width))], dim=1)

        def finalise(to_y: int) -> None:
            """Move rows ``[acc_y0, to_y)`` out of the blending buffers into the reduced rows."""
            nonlocal count, acc_y0
            n = min(to_y, acc_y0 + count.shape[0]) - acc_y0
            if n <= 0:
                return
            c = count[:n]
            blended = {key: torch.where(c > 0, value[:, :n] / c, value.new_zeros(())) for key, value in acc.items()}
            rows.append(acc_y0, self.reduce(blended))
            count = count[n:]
            for key in acc:
                acc[key] = acc[key][:, n:]
            acc_y0 += n

        def emit(front: int) -> Iterator[tuple[tuple[int, int], Box, dict[str, np.ndarray]]]:
            nonlocal pending
            while pending and pending[0][1].y1 <= min(front, rows.end):
                tile, box = pending.pop(0)
                yield tile, box, rows.crop(box)
            if pending:
                rows.drop_above(min(b.y0 for _, b in pending))

        # window rows are read once (one box spanning the run's windows of that row)
        row_starts = sorted({wy for wy, _ in windows})
        row_extent = {
            wy: (min(wx for y, wx in windows if y == wy), max(wx for y, wx in windows if y == wy)) for wy in row_starts
        }

        def read_row(wy: int) -> torch.Tensor:
            lo, hi = row_extent[wy]
            return read(Box(wy, lo, wy + ph, hi + pw))

        executor = ThreadPoolExecutor(max_workers=1) if self.prefetch else None
        futures: dict[int, Future | torch.Tensor] = {}

        def fetch(wy: int) -> torch.Tensor:
            if wy not in futures:
                futures[wy] = executor.submit(read_row, wy) if executor else read_row(wy)
            value = futures[wy]
            return value.result() if isinstance(value, Future) else value

        try:
            for start in range(0, len(windows), self.sw_batch_size):
                batch = windows[start : start + self.sw_batch_size]
                if executor is not None:
                    # start reading the next rows while this batch runs
                    for wy in row_starts:
                        if wy > batch[-1][0]:
                            if wy not in futures:
                                futures[wy] = executor.submit(read_row, wy)
                            break
                inputs = []
                for wy, wx in batch:
                    band = fetch(wy)
                    lo = row_extent[wy][0]
                    inputs.append(band[:, :, wx - lo : wx - lo + pw])
                x = torch.stack(inputs).to(self.device)
                with torch.no_grad(), self._autocast():
                    out = self.network(x)
                grow(batch[-1][0] + ph)
                for key in self.keep:
                    pred = out[key]
                    if pred.shape[-2:] != (ph, pw):
                        raise ValueError(
                            f"output {key!r} has spatial size {tuple(pred.shape[-2:])}, expected the window size "
                            f"{self.roi_size}; only full-resolution outputs can be blended"
                        )
                    pred *= self.importance  # in place, as MONAI does (keeps the output's dtype under AMP)
                    if key not in acc:
                        acc[key] = torch.zeros(
                            (pred.shape[1], count.shape[0], width), dtype=torch.float32, device=self.device
                        )
                    for p, (wy, wx) in zip(pred, batch):
                        acc[key][:, wy - acc_y0 : wy - acc_y0 + ph, wx - x0 : wx - x0 + pw] += p
                for wy, wx in batch:
                    count[wy - acc_y0 : wy - acc_y0 + ph, wx - x0 : wx - x0 + pw] += self.importance[0, 0]
                # rows above the next window's start get no further windows
                front = windows[start + len(batch)][0] if start + len(batch) < len(windows) else 2**62
                finalise(front)
                yield from emit(front)
                for wy in [wy for wy in futures if wy < front]:
                    del futures[wy]
            finalise(2**62)
            yield from emit(2**62)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        if pending:
            raise RuntimeError(f"tiles {[t for t, _ in pending]} were not covered by the windows")
