"""The parts folder of a whole-slide run: what makes it resumable.

Each input's work in progress lives in ``<output>/.<name>.parts/`` (:class:`SlideFiles`): ``plan.json`` (the run's
settings and the tiles that hold tissue) and one record per finished tile (``tile_<row>_<col>.npz``,
:class:`TileRecord`, :func:`save_record`). A rerun with the same settings skips the tiles already saved; one with
other settings is refused unless ``overwrite`` (:func:`prepare_parts`).

Every file of a run is written under a temporary name and renamed when complete (:func:`coseg.io.atomic_write_path`),
so a killed run leaves only whole records and whole outputs, plus the temporaries it had not renamed or removed yet.
:func:`prepare_parts` removes those of this input (:func:`remove_stale_temporaries`: only names that
:mod:`coseg.io` gives temporaries of this input's outputs and records) before the run continues; the finished
outputs are then byte-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coseg.io import atomic_write_path, temporaries_in
from coseg.wsi.tiling import Box, TilePlan

__all__ = [
    "OUTPUT_KINDS",
    "SlideFiles",
    "TileRecord",
    "save_record",
    "load_record",
    "write_npz",
    "records_in",
    "record_name",
    "stored_bands",
    "prepare_parts",
    "remove_stale_temporaries",
]

logger = logging.getLogger(__name__)

Polygon = list[np.ndarray]

#: the outputs written for each input, and their file names (``{name}`` is the input's name)
OUTPUT_KINDS = {
    "inst": "{name}_inst.tif",
    "type": "{name}_type.tif",
    "sem": "{name}_sem.tif",
    "geojson": "{name}.geojson",
    "instances": "{name}_instances.csv",
    "overlay": "{name}_overlay.png",
    "summary": "{name}_summary.json",
}


@dataclass(frozen=True)
class SlideFiles:
    """The files of one input in an output folder.

    Attributes:
        name: the input's name (its file name without the suffix, and without ``.ome``).
        outputs: ``{kind: path}`` of the outputs (:data:`OUTPUT_KINDS`).
        parts: the parts folder, ``<output>/.<name>.parts``.
    """

    name: str
    outputs: dict[str, Path]
    parts: Path

    @classmethod
    def of(cls, output_dir: str | os.PathLike, image: str | os.PathLike) -> SlideFiles:
        """The files for input ``image`` in ``output_dir``."""
        stem = Path(image).stem
        name = stem[:-4] if stem.lower().endswith(".ome") else stem
        folder = Path(output_dir)
        outputs = {kind: folder / pattern.format(name=name) for kind, pattern in OUTPUT_KINDS.items()}
        return cls(name=name, outputs=outputs, parts=folder / f".{name}.parts")

    @property
    def plan(self) -> Path:
        """``plan.json`` in the parts folder."""
        return self.parts / "plan.json"


@dataclass
class TileRecord:
    """What one tile contributes to the slide (see :mod:`coseg.wsi.merge`). Arrays are indexed by piece (local id
    minus 1) unless said otherwise.

    Attributes:
        row, col: tile position in the grid.
        core: the core box (region pixels).
        inst: ``(h, w)`` local piece ids of the core (0 = background, ``1..n``).
        sem: ``(h, w)`` semantic classes of the core.
        area: ``(n,)`` pixel counts.
        sum_xy: ``(n, 2)`` sums of the pixels' ``x`` and ``y`` (region pixels), for exact centroids after merging.
        bbox: ``(n, 4)`` ``(x_min, y_min, x_max, y_max)``, maxima exclusive, region pixels.
        votes: ``(n, K)`` pixels of each piece per arg-max type.
        sem_votes: ``(n, S)`` pixels of each piece per semantic class.
        border: ``(n,)`` whether the piece touches a core side that faces another tile.
        polygons: per piece, its outline (list of polygons, each one exterior ring, ``(m, 2)`` ``(x, y)``; holes
            are filled).
        geometry: per piece, the GeoJSON geometry of its outline in level-0 pixels, as JSON text
            (:func:`coseg.wsi.merge.geometry_text`); empty when not rendered.
        masks: for border pieces, ``{local id: (mask (h, w) bool, x0, y0)}`` of the piece's pixels.
        lines: per side facing another tile, ``(3, L)`` int32: the pieces on the core's edge line, and the context
            labels on that line and on the line beyond it.
        sem_pixels: ``(S,)`` pixels of the core per semantic class.
        sem_low: the core's semantic classes at the pixels whose region coordinates are multiples of ``low_step``.
    """

    row: int
    col: int
    core: Box
    inst: np.ndarray
    sem: np.ndarray
    area: np.ndarray
    sum_xy: np.ndarray
    bbox: np.ndarray
    votes: np.ndarray
    sem_votes: np.ndarray
    border: np.ndarray
    polygons: list[list[Polygon]] = field(default_factory=list)
    geometry: list[str] = field(default_factory=list)
    masks: dict[int, tuple[np.ndarray, int, int]] = field(default_factory=dict)
    lines: dict[str, np.ndarray] = field(default_factory=dict)
    sem_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sem_low: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))

    @property
    def n(self) -> int:
        return int(self.area.shape[0])


# ---- records --------------------------------------------------------------------------------------------------


#: the sides of a core, in the order their lines are stored
_SIDES = ("top", "bottom", "left", "right")


def _pack_polygons(polygons: Sequence[list[Polygon]]) -> dict[str, np.ndarray]:
    coords, index = [], []
    total = 0
    for k, polys in enumerate(polygons):
        for j, rings in enumerate(polys):
            for ring in rings:
                coords.append(np.asarray(ring, np.float64))
                total += len(ring)
                index.append((total, k, j))
    return {
        "ring_xy": np.concatenate(coords) if coords else np.zeros((0, 2)),
        "ring_index": np.asarray(index, np.int64).reshape(-1, 3),  # end, piece, polygon of each ring
    }


def _unpack_polygons(data: Mapping[str, np.ndarray], n: int) -> list[list[Polygon]]:
    out: list[list[Polygon]] = [[] for _ in range(n)]
    coords = np.asarray(data["ring_xy"])  # read each member once (an npz member is decompressed on every access)
    start = 0
    for end, k, j in np.asarray(data["ring_index"]).tolist():
        ring = coords[start:end]
        start = end
        if j == len(out[k]):
            out[k].append([ring])
        else:
            out[k][j].append(ring)
    return out


def _unpack_texts(data: Mapping[str, np.ndarray]) -> list[str]:
    text = np.asarray(data["geom_text"]).tobytes()
    ends = np.asarray(data["geom_end"]).tolist()
    return [text[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1]], ends)]


def save_record(path: str | os.PathLike, record: TileRecord, *, band_height: int) -> None:
    """Write a tile record atomically (``.npz``; the label maps in bands of ``band_height`` rows, so that a writer
    can read them band by band; the per-piece numbers in few arrays, which are quick to read).

    Args:
        path: the ``.npz`` file.
        record: the record.
        band_height: rows per stored band of ``inst`` / ``sem``.
    """
    n = record.n
    k, c = record.votes.shape[1], record.sem_votes.shape[1]
    lengths = [record.lines[side].shape[1] if side in record.lines else -1 for side in _SIDES]
    arrays: dict[str, np.ndarray] = {
        "meta": np.asarray([record.row, record.col, *record.core, k, c, n, *lengths], np.int64),
        # per piece: area, bbox (4), border, votes (K), sem_votes (S)
        "pieces": np.concatenate(
            [
                record.area.reshape(n, 1),
                record.bbox.reshape(n, 4),
                record.border.reshape(n, 1),
                record.votes.reshape(n, k),
                record.sem_votes.reshape(n, c),
            ],
            axis=1,
            dtype=np.int64,
        ),
        "sum_xy": record.sum_xy,
        "sem_pixels": record.sem_pixels,
        "sem_low": record.sem_low,
        "lines": np.concatenate([record.lines[side] for side in _SIDES if side in record.lines], axis=1, dtype=np.int32)
        if record.lines
        else np.zeros((3, 0), np.int32),
        **_pack_polygons(record.polygons),
    }
    dtype = np.uint16 if n < 2**16 else np.uint32
    for b, y in enumerate(range(0, record.inst.shape[0], band_height)):
        arrays[f"inst_{b}"] = record.inst[y : y + band_height].astype(dtype)
        arrays[f"sem_{b}"] = record.sem[y : y + band_height]
    keys = sorted(record.masks)
    arrays["mask_index"] = np.asarray(
        [(key, x0, y0, x0 + m.shape[1], y0 + m.shape[0]) for key, (m, x0, y0) in ((j, record.masks[j]) for j in keys)],
        np.int64,
    ).reshape(-1, 5)
    arrays["mask_bits"] = np.packbits(
        np.concatenate([record.masks[j][0].ravel() for j in keys]) if keys else np.zeros(0, bool)
    )
    texts = [t.encode("utf-8") for t in record.geometry]
    arrays["geom_text"] = np.frombuffer(b"".join(texts), dtype=np.uint8)
    arrays["geom_end"] = np.cumsum([len(t) for t in texts], dtype=np.int64)
    with atomic_write_path(path) as tmp:
        write_npz(tmp, arrays)


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], *, level: int = 1) -> None:
    """Write arrays as an ``.npz`` file that :func:`numpy.load` reads, deflated at ``level`` (numpy's
    ``savez_compressed`` uses zlib's default, 6: 3-4x slower on label maps for files about 10 % larger), with fixed
    member dates so that equal arrays give equal bytes.

    Args:
        path: the file to write (not atomically: give a temporary).
        arrays: ``{name: array}``; no object arrays.
        level: zlib level, 0-9.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level, allowZip64=True) as zf:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            zf.writestr(info, buffer.getbuffer(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)


def load_record(path: str | os.PathLike, *, maps: bool = True, geometry: bool = True) -> TileRecord:
    """Read a tile record written by :func:`save_record`.

    Args:
        path: the ``.npz`` file.
        maps: also read the label maps (``inst``, ``sem``); without them the record holds empty maps.
        geometry: also read the pieces' polygons, geometry texts and border masks (the merge needs none of them).

    Returns:
        the :class:`TileRecord`.
    """
    with np.load(path) as data:
        meta = data["meta"].tolist()
        row, col, core, k, c, n, lengths = meta[0], meta[1], Box(*meta[2:6]), meta[6], meta[7], meta[8], meta[9:13]
        pieces = data["pieces"]
        lines_all = data["lines"]
        lines, start = {}, 0
        for side, length in zip(_SIDES, lengths):
            if length >= 0:
                lines[side] = lines_all[:, start : start + length]
                start += length
        if maps:
            bands = sorted(int(key[5:]) for key in data.files if key.startswith("inst_"))
            inst = np.concatenate([data[f"inst_{b}"] for b in bands]).astype(np.int32)
            sem = np.concatenate([data[f"sem_{b}"] for b in bands])
        else:
            inst = np.zeros((0, 0), np.int32)
            sem = np.zeros((0, 0), np.uint8)
        masks = {}
        if geometry:
            index = data["mask_index"].tolist()
            total = sum((y1 - y0) * (x1 - x0) for _, x0, y0, x1, y1 in index)
            bits, start = np.unpackbits(data["mask_bits"], count=total).astype(bool), 0
            for key, x0, y0, x1, y1 in index:
                size = (y1 - y0) * (x1 - x0)
                masks[key] = (bits[start : start + size].reshape(y1 - y0, x1 - x0), x0, y0)
                start += size
        return TileRecord(
            row=row,
            col=col,
            core=core,
            inst=inst,
            sem=sem,
            area=pieces[:, 0].copy(),
            sum_xy=data["sum_xy"],
            bbox=pieces[:, 1:5].astype(np.int32),
            votes=pieces[:, 6 : 6 + k].copy(),
            sem_votes=pieces[:, 6 + k : 6 + k + c].copy(),
            border=pieces[:, 5].astype(bool),
            polygons=_unpack_polygons(data, n) if geometry else [],
            geometry=_unpack_texts(data) if geometry else [],
            masks=masks,
            lines=lines,
            sem_pixels=data["sem_pixels"],
            sem_low=data["sem_low"],
        )


def records_in(folder: str | os.PathLike) -> dict[tuple[int, int], Path]:
    """The tile records in a parts folder, keyed by ``(row, col)`` (file names ``tile_<row>_<col>.npz``)."""
    out = {}
    for p in Path(folder).glob("tile_*_*.npz"):
        _, r, c = p.stem.split("_")
        out[(int(r), int(c))] = p
    return out


def record_name(tile: tuple[int, int]) -> str:
    """File name of a tile's record in the parts folder."""
    return f"tile_{tile[0]}_{tile[1]}.npz"


def stored_bands(
    plan: TilePlan,
    files: Mapping[tuple[int, int], Path],
    key: str,
    band_height: int,
    mapping: Callable[[tuple[int, int], np.ndarray], np.ndarray],
    dtype: Any,
) -> Iterator[np.ndarray]:
    """Rows of a label map, ``band_height`` at a time, assembled from the records' stored bands (``inst`` or
    ``sem``, as :func:`save_record` stored them with that ``band_height``); tiles without a record are 0.

    Args:
        plan: the tile plan.
        files: the records, keyed by tile.
        key: ``"inst"`` or ``"sem"``.
        band_height: rows per stored band.
        mapping: ``mapping(tile, band)`` turns a tile's stored band into the map's values (e.g. slide ids).
        dtype: of the bands.

    Yields:
        ``(rows, plan.width)`` arrays, top to bottom.
    """
    for row in range(plan.n_rows):
        y0, y1 = plan.core(row, 0).y0, plan.core(row, 0).y1
        handles = {}
        try:
            for col in range(plan.n_cols):
                if (row, col) in files:
                    handles[col] = np.load(files[(row, col)])
            for b, y in enumerate(range(y0, y1, band_height)):
                band = np.zeros((min(band_height, y1 - y), plan.width), dtype)
                for col, data in handles.items():
                    core = plan.core(row, col)
                    band[:, core.x0 : core.x1] = mapping((row, col), data[f"{key}_{b}"])
                yield band
        finally:
            for data in handles.values():
                data.close()


def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings), to compare with a stored copy."""
    return json.loads(json.dumps(value))


def remove_stale_temporaries(files: SlideFiles) -> list[Path]:
    """Remove the temporaries a killed run of this input left: those of its outputs in the output folder, and of
    its plan and tile records in its parts folder (:func:`coseg.io.temporaries_in`). Nothing else is touched: other
    inputs' files, other programs' files and the finished outputs and records stay.

    Call it only when no other process writes this input's files (:func:`prepare_parts` runs on rank 0 before the
    other ranks start).

    Returns:
        the paths removed.
    """
    stale: list[Path] = []
    for path in files.outputs.values():
        stale += temporaries_in(path.parent, glob.escape(path.name))
    stale += temporaries_in(files.parts, glob.escape(files.plan.name))
    stale += temporaries_in(files.parts, "tile_*_*.npz")
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        logger.warning(
            "%s: removed %d temporary file(s) left by an interrupted run: %s",
            files.name,
            len(stale),
            ", ".join(p.name for p in stale),
        )
    return stale


def prepare_parts(
    files: SlideFiles,
    settings: Mapping[str, Any],
    *,
    overwrite: bool,
    find_active: Callable[[], Sequence[tuple[int, int]]],
) -> tuple[list[tuple[int, int]], dict[str, Any] | None]:
    """Reuse, refuse or reset the work of an earlier run of this input (on rank 0 only, before the tiles).

    Stale temporaries are removed first (:func:`remove_stale_temporaries`). Then: finished outputs of a run with
    the same settings are kept (nothing to do); a parts folder with the same settings is continued; one with other
    settings is refused, or discarded with ``overwrite``. A new run finds its active tiles with ``find_active`` and
    records them with the settings in ``plan.json``.

    Args:
        files: the input's files.
        settings: the run's settings (JSON-serialisable), compared with the stored ones.
        overwrite: discard work done with other settings.
        find_active: the tiles to process (tissue detection), called only for a new run.

    Returns:
        ``(active tiles, None)``, or ``([], summary)`` when the outputs exist and match the settings.

    Raises:
        ValueError: outputs or a parts folder from a run with other settings, without ``overwrite``.
    """
    remove_stale_temporaries(files)
    current = _json(settings)
    summary_file = files.outputs["summary"]
    if not overwrite and summary_file.is_file():
        old = json.loads(summary_file.read_text(encoding="utf-8"))
        if old.get("settings") != current:
            raise ValueError(
                f"{summary_file} is from a run with other settings; pass overwrite=True (--overwrite) to replace "
                "its outputs, or choose another output folder"
            )
        if all(p.is_file() for p in files.outputs.values()):
            return [], old
    if files.plan.is_file():
        old = json.loads(files.plan.read_text(encoding="utf-8"))
        if old.get("settings") == current:
            return [tuple(t) for t in old["active"]], None
        if not overwrite:
            changed = sorted(k for k in current if old.get("settings", {}).get(k) != current[k])
            raise ValueError(
                f"{files.parts} holds an unfinished run with other settings ({', '.join(changed)} differ); "
                "pass overwrite=True (--overwrite) to discard it, or choose another output folder"
            )
        shutil.rmtree(files.parts)
    elif files.parts.exists() and overwrite:
        shutil.rmtree(files.parts)
    active = [tuple(t) for t in find_active()]
    files.parts.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(files.plan) as tmp:
        tmp.write_text(
            json.dumps({"settings": settings, "active": [list(t) for t in active]}, indent=1), encoding="utf-8"
        )
    return active, None
