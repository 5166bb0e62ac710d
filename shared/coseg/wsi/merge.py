"""Post-processing of one tile, and the merge of all tiles into whole-slide instances.

**One tile** (:func:`process_tile`): the blended network outputs of the tile's *context* (the core plus a
margin) go through the same post-processing as a whole image (:func:`coseg.postprocess.hv_watershed`, the
type vote of :func:`coseg.postprocess.instance_table`, :func:`coseg.postprocess.remove_small_regions`). The tile
then keeps only its *core*: every pixel of the slide is labelled by exactly one tile, so no object can be
duplicated. An instance that reaches beyond the core leaves a *piece* in each core it crosses.

**The merge** (:func:`merge_tiles`): pieces of neighbouring tiles that belong to one object are joined (union-find
over the whole slide, :func:`scipy.sparse.csgraph.connected_components`). Every tile records, for each side that
faces another tile, three lines of labels: its pieces on the last row (column) of its core, and its own context
labels on that line and on the first line of the neighbour's core. Across a border, two touching pieces ``a``
(tile A) and ``b`` (tile B) form pairs of 4-adjacent pixels ``(p in A, q in B)``; tile A votes "same object" for a
pair when its context labels ``p`` and ``q`` alike, tile B likewise with its own context. The pieces are joined
when at least half of all votes over their pairs say "same". Both tiles see the border with ``margin`` pixels
of context on each side, so they normally agree with each other and with a whole-image run; an object larger
than the margin is still joined, however far it extends, because the decision only needs the labels at the
border (this is what the centroid-in-core rule of HoVer-Net / TIAToolbox cannot do without a margin wider than
the largest object).

What a tile contributes is a :class:`~coseg.wsi.parts.TileRecord`, saved in the run's parts folder
(:mod:`coseg.wsi.parts`); :func:`coseg.wsi.writer.tile_features` reads the outlines back one tile at a time.

Coordinates are region pixels (see :mod:`coseg.wsi.tiling`): ``x`` the column, ``y`` the row. Centroids and
boxes follow :class:`coseg.postprocess.InstanceTable` (pixel centres at integers, box maxima exclusive);
polygons follow :mod:`coseg.histo.geojson` (pixel edges, exact under re-rasterisation).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from coseg.histo.geojson import mask_to_polygons
from coseg.keys import OutputKeys
from coseg.postprocess import WatershedParams, hv_watershed, remove_small_regions
from coseg.postprocess._inputs import object_probability
from coseg.wsi.parts import TileRecord
from coseg.wsi.tiling import Box, Placement, TilePlan

__all__ = [
    "SIDES",
    "MergeResult",
    "reduce_outputs",
    "process_tile",
    "merge_tiles",
    "vote_types",
    "group_polygons",
    "geometry_text",
    "geometry_texts",
    "assemble_low",
]

logger = logging.getLogger(__name__)

#: the sides of a core, and the side of the neighbour that faces each
SIDES = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}

Polygon = list[np.ndarray]


def reduce_outputs(blended: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The part of the blended outputs the post-processing reads, as compact CPU arrays.

    Same numerics as :func:`coseg.postprocess.postprocess_outputs` with its default softmax activation: the object
    probability is :func:`~coseg.postprocess._inputs.object_probability` of the ``inst_binary`` logits (float32),
    types and semantic classes are arg-maxes (first maximum, as numpy's).

    Args:
        blended: ``{key: (C, rows, cols)}`` blended outputs (``OutputKeys``), any device.

    Returns:
        ``{"prob": (rows, cols) float32, "hv": (2, rows, cols) float32, "type": (rows, cols) uint8 | None,
        "sem": (rows, cols) uint8 | None}`` (``None`` when that output is absent).

    Raises:
        KeyError: when ``inst_binary`` or ``inst_hv`` is missing.
    """
    for key in (OutputKeys.INST_BINARY, OutputKeys.INST_HV):
        if key not in blended:
            raise KeyError(f"the network outputs lack {key!r}, needed for nuclei; got {sorted(blended)}")
    binary = blended[OutputKeys.INST_BINARY].detach().float().cpu().numpy()
    out: dict[str, Any] = {
        "prob": object_probability(binary, "softmax"),
        "hv": blended[OutputKeys.INST_HV].detach().float().cpu().numpy(),
        "type": None,
        "sem": None,
    }
    for name, key in (("type", OutputKeys.INST_TYPE), ("sem", OutputKeys.SEM_LOGITS)):
        value = blended.get(key)
        if value is not None:
            if value.shape[0] > 255:
                raise ValueError(f"{key!r} has {value.shape[0]} channels; at most 255 are supported")
            # max(dim).indices: the first maximum, like numpy's argmax; 6x faster than argmax(dim) on CPU tensors
            out[name] = value.detach().max(dim=0).indices.to(torch.uint8).cpu().numpy()
    return out


def vote_types(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Type of each object from its per-type pixel votes, with HoVer-Net's rule (as
    :func:`coseg.postprocess.instance_table`): the most voted type; when background (type 0) wins but some pixels
    voted for an object type, the most voted object type; ties to the lower type.

    Args:
        votes: ``(n, K)`` pixel counts per type.

    Returns:
        ``(types (n,) int32, type_probs (n,) float32)``, the probability being the chosen type's share of the
        object's pixels.
    """
    votes = np.asarray(votes)
    n, k = votes.shape
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    types = votes.argmax(axis=1)
    if k > 1:
        fallback = votes[:, 1:].argmax(axis=1) + 1
        types = np.where((types == 0) & (votes[:, 1:].max(axis=1) > 0), fallback, types)
    area = np.maximum(votes.sum(axis=1), 1)
    return types.astype(np.int32), (votes[np.arange(n), types] / area).astype(np.float32)


def _check_maps(maps: Mapping[str, Any], box: Box) -> None:
    shape = (box.height, box.width)
    if maps["prob"].shape != shape or maps["hv"].shape != (2, *shape):
        raise ValueError(f"tile maps {maps['prob'].shape} / {maps['hv'].shape} do not match the context {shape}")


def process_tile(
    maps: Mapping[str, np.ndarray | None],
    *,
    plan: TilePlan,
    tile: tuple[int, int],
    watershed: WatershedParams,
    num_types: int,
    num_sem_classes: int,
    sem_min_size: int = 1,
    low_step: int = 16,
    placement: Placement | None = None,
) -> TileRecord:
    """Instances and semantic classes of one tile, cut to its core, with what the merge needs.

    Args:
        maps: reduced outputs of the tile's context (:func:`reduce_outputs`), arrays ``(..., h, w)``.
        plan: the tile plan.
        tile: ``(row, col)``.
        watershed: watershed settings.
        num_types: object types incl. background (``K``).
        num_sem_classes: semantic classes incl. background (``S``).
        sem_min_size: semantic regions smaller than this are absorbed by their neighbours (as the whole-image
            post-processing does).
        low_step: sampling step of :attr:`TileRecord.sem_low`.
        placement: where the region lies on the slide: each piece's GeoJSON geometry is rendered here
            (:attr:`TileRecord.geometry`, :func:`geometry_text`), in the worker processes, not when the slide's
            GeoJSON is written. ``None``: not rendered.

    Returns:
        the :class:`TileRecord`.

    Raises:
        ValueError: when the maps do not match the tile's context.
    """
    row, col = tile
    core, ctx = plan.core(row, col), plan.context(row, col)
    _check_maps(maps, ctx)
    inst_ctx = hv_watershed(maps["prob"], maps["hv"], params=watershed)
    if maps.get("sem") is not None:
        sem_ctx = remove_small_regions(maps["sem"], min_size=sem_min_size, connectivity=1, fill="neighbours")
    else:
        sem_ctx = np.zeros(inst_ctx.shape, np.int32)
    cy0, cx0 = core.y0 - ctx.y0, core.x0 - ctx.x0
    cy1, cx1 = cy0 + core.height, cx0 + core.width
    inside = inst_ctx[cy0:cy1, cx0:cx1]
    # pieces: the context instances that have pixels in the core, renumbered 1..n in order of their ids
    present = np.zeros(int(inst_ctx.max(initial=0)) + 1, dtype=bool)
    present[inside.ravel()] = True
    present[0] = False
    lut = (np.cumsum(present) * present).astype(np.int32)
    inst = lut[inside]
    n = int(present.sum())
    sem = sem_ctx[cy0:cy1, cx0:cx1]
    type_core = maps["type"][cy0:cy1, cx0:cx1] if maps.get("type") is not None else None

    ys, xs = np.nonzero(inst)
    ids = inst[ys, xs].astype(np.int64)
    area = np.bincount(ids, minlength=n + 1)[1:].astype(np.int64)
    sum_xy = (
        np.stack(
            [
                np.bincount(ids, weights=xs + core.x0, minlength=n + 1)[1:],
                np.bincount(ids, weights=ys + core.y0, minlength=n + 1)[1:],
            ],
            axis=1,
        )
        if n
        else np.zeros((0, 2))
    )
    if type_core is not None:
        t = type_core[ys, xs].astype(np.int64)
        if t.size and t.max() >= num_types:
            raise ValueError(f"type arg-max {int(t.max())} is beyond num_types={num_types}")
        votes = np.bincount((ids - 1) * num_types + t, minlength=n * num_types).reshape(n, num_types)
    else:
        votes = np.zeros((n, num_types), np.int64)
        if num_types > 1:
            votes[:, 1] = area
    s = sem[ys, xs].astype(np.int64)
    if s.size and s.max() >= num_sem_classes:
        raise ValueError(f"semantic class {int(s.max())} is beyond num_sem_classes={num_sem_classes}")
    sem_votes = np.bincount((ids - 1) * num_sem_classes + s, minlength=n * num_sem_classes).reshape(n, num_sem_classes)

    slices = ndimage.find_objects(inst, max_label=n)
    bbox = np.array(
        [(sx.start + core.x0, sy.start + core.y0, sx.stop + core.x0, sy.stop + core.y0) for sy, sx in slices],
        dtype=np.int32,
    ).reshape(n, 4)
    neighbours = plan.neighbours(row, col)
    edge_ids = np.zeros(n + 1, dtype=bool)
    edges = {"top": inst[0], "bottom": inst[-1], "left": inst[:, 0], "right": inst[:, -1]}
    for side in neighbours:
        edge_ids[edges[side]] = True
    border = edge_ids[1:]

    polygons: list[list[Polygon]] = []
    masks: dict[int, tuple[np.ndarray, int, int]] = {}
    for k, (sy, sx) in enumerate(slices, start=1):
        mask = inst[sy, sx] == k
        x0, y0 = sx.start + core.x0, sy.start + core.y0
        polygons.append(_outline(mask, x0, y0))
        if border[k - 1]:
            masks[k] = (mask, x0, y0)

    geometry = geometry_texts(polygons, placement) if placement is not None else []
    lines = {}
    for side in neighbours:
        if side == "top":
            piece, ours, beyond = inst[0], inst_ctx[cy0, cx0:cx1], inst_ctx[cy0 - 1, cx0:cx1]
        elif side == "bottom":
            piece, ours, beyond = inst[-1], inst_ctx[cy1 - 1, cx0:cx1], inst_ctx[cy1, cx0:cx1]
        elif side == "left":
            piece, ours, beyond = inst[:, 0], inst_ctx[cy0:cy1, cx0], inst_ctx[cy0:cy1, cx0 - 1]
        else:
            piece, ours, beyond = inst[:, -1], inst_ctx[cy0:cy1, cx1 - 1], inst_ctx[cy0:cy1, cx1]
        lines[side] = np.stack([piece, ours, beyond]).astype(np.int32)

    sem_low = sem[(-core.y0) % low_step :: low_step, (-core.x0) % low_step :: low_step]
    return TileRecord(
        row=row,
        col=col,
        core=core,
        inst=inst,
        sem=sem.astype(np.uint8 if num_sem_classes <= 256 else np.uint16),
        area=area,
        sum_xy=np.asarray(sum_xy, np.float64),
        bbox=bbox,
        votes=votes.astype(np.int64),
        sem_votes=sem_votes.astype(np.int64),
        border=border,
        polygons=polygons,
        geometry=geometry,
        masks=masks,
        lines=lines,
        sem_pixels=np.bincount(sem.ravel(), minlength=num_sem_classes).astype(np.int64),
        sem_low=np.ascontiguousarray(sem_low, dtype=np.uint8),
    )


# ---- merge -------------------------------------------------------------------------------------------------------


@dataclass
class MergeResult:
    """The slide's instances after joining pieces across tile borders.

    Attributes:
        luts: per tile ``(row, col)``, ``(n_t + 1,)`` int64 map from local piece id to slide instance id (0 -> 0).
        ids: ``(N,)`` instance ids ``1..N``.
        area: ``(N,)`` pixels.
        centroid: ``(N, 2)`` ``(x, y)`` region pixels, pixel centres at integers.
        bbox: ``(N, 4)`` ``(x_min, y_min, x_max, y_max)`` region pixels, maxima exclusive.
        votes: ``(N, K)`` type votes; ``types`` / ``type_probs`` from :func:`vote_types`.
        sem_votes: ``(N, S)``; ``tissue`` is the majority semantic class under each instance.
        members: for instances made of several pieces (or of one piece on a border), the ``(tile, local id)``
            pieces, keyed by instance id.
        joins: number of piece pairs joined across borders.
    """

    luts: dict[tuple[int, int], np.ndarray]
    ids: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    votes: np.ndarray
    types: np.ndarray
    type_probs: np.ndarray
    sem_votes: np.ndarray
    tissue: np.ndarray
    members: dict[int, list[tuple[tuple[int, int], int]]]
    joins: int = 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index: np.ndarray) -> MergeResult:
        """The instances at rows ``index`` (ids - 1), without ``luts`` and ``members``."""
        index = np.asarray(index, dtype=np.int64)
        return MergeResult(
            luts={},
            ids=self.ids[index],
            area=self.area[index],
            centroid=self.centroid[index],
            bbox=self.bbox[index],
            votes=self.votes[index],
            types=self.types[index],
            type_probs=self.type_probs[index],
            sem_votes=self.sem_votes[index],
            tissue=self.tissue[index],
            members={},
            joins=0,
        )


def _border_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pieces to join across one border from the two tiles' lines (``(3, L)``: piece, own label, label beyond).

    ``a`` is the line of the tile on one side, ``b`` of the tile on the other; position ``i`` of both lines is one
    pair of 4-adjacent pixels. Returns the ``(piece in a, piece in b)`` pairs to join.
    """
    pa, pb = a[0], b[0]
    same_a = (a[1] == a[2]) & (a[1] > 0)
    same_b = (b[1] == b[2]) & (b[1] > 0)
    valid = (pa > 0) & (pb > 0)
    if not valid.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pa, pb = pa[valid].astype(np.int64), pb[valid].astype(np.int64)
    votes = same_a[valid].astype(np.int64) + same_b[valid].astype(np.int64)
    key = pa * (int(pb.max()) + 1) + pb
    uniq, inverse = np.unique(key, return_inverse=True)
    pairs = np.bincount(inverse)
    total = np.bincount(inverse, weights=votes)
    keep = total >= pairs  # at least half of the 2 * pairs votes
    width = int(pb.max()) + 1
    return uniq[keep] // width, uniq[keep] % width


def merge_tiles(plan: TilePlan, records: Mapping[tuple[int, int], TileRecord]) -> MergeResult:
    """Join the pieces of all tiles into slide instances (module docstring) and number them.

    Instance ids are ``1..N`` in tile order (row-major over the tile grid), then piece order; an object made of
    several pieces takes the place of its first piece. Tiles absent from ``records`` (skipped as background) hold
    no piece.

    Args:
        plan: the tile plan.
        records: tile records (the label maps are not needed), keyed by ``(row, col)``.

    Returns:
        the :class:`MergeResult`.
    """
    order = sorted(records)
    offsets: dict[tuple[int, int], int] = {}
    total = 0
    for tile in order:
        offsets[tile] = total
        total += records[tile].n
    rows, cols = [], []
    for tile in order:
        rec = records[tile]
        for side, other_side in (("right", "left"), ("bottom", "top")):
            nb = plan.neighbours(*tile).get(side)
            if nb is None or nb not in records or side not in rec.lines:
                continue
            ia, ib = _border_pairs(rec.lines[side], records[nb].lines[other_side])
            rows.append(ia - 1 + offsets[tile])
            cols.append(ib - 1 + offsets[nb])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(total, total))
    _, labels = connected_components(graph, directed=False)
    # number the objects in order of their first piece
    first = np.full(labels.max(initial=-1) + 1, total, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(total))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    final = rank[labels] + 1 if total else np.zeros(0, np.int64)
    n_final = int(final.max(initial=0))

    def gather(name: str) -> np.ndarray:
        parts = [getattr(records[t], name) for t in order]
        return np.concatenate(parts) if parts else np.zeros(0)

    k = records[order[0]].votes.shape[1] if order else 1
    s = records[order[0]].sem_votes.shape[1] if order else 1
    area = np.zeros(n_final, np.int64)
    sum_xy = np.zeros((n_final, 2))
    votes = np.zeros((n_final, k), np.int64)
    sem_votes = np.zeros((n_final, s), np.int64)
    bbox = np.zeros((n_final, 4), np.int64)
    if total:
        idx = final - 1
        np.add.at(area, idx, gather("area"))
        np.add.at(sum_xy, idx, gather("sum_xy").reshape(-1, 2))
        np.add.at(votes, idx, gather("votes").reshape(-1, k))
        np.add.at(sem_votes, idx, gather("sem_votes").reshape(-1, s))
        boxes = gather("bbox").reshape(-1, 4)
        bbox[:, :2] = np.iinfo(np.int64).max
        np.minimum.at(bbox[:, 0], idx, boxes[:, 0])
        np.minimum.at(bbox[:, 1], idx, boxes[:, 1])
        np.maximum.at(bbox[:, 2], idx, boxes[:, 2])
        np.maximum.at(bbox[:, 3], idx, boxes[:, 3])
    types, type_probs = vote_types(votes)
    sizes = np.bincount(final - 1, minlength=n_final) if total else np.zeros(0, np.int64)
    border = gather("border").astype(bool) if total else np.zeros(0, bool)
    members: dict[int, list[tuple[tuple[int, int], int]]] = {}
    luts = {}
    for tile in order:
        o, n = offsets[tile], records[tile].n
        lut = np.zeros(n + 1, np.int64)
        lut[1:] = final[o : o + n]
        luts[tile] = lut
        for local in np.flatnonzero(border[o : o + n] | (sizes[final[o : o + n] - 1] > 1)) + 1:
            members.setdefault(int(lut[local]), []).append((tile, int(local)))
    return MergeResult(
        luts=luts,
        ids=np.arange(1, n_final + 1, dtype=np.int64),
        area=area,
        centroid=sum_xy / np.maximum(area, 1)[:, None],
        bbox=bbox,
        votes=votes,
        types=types,
        type_probs=type_probs,
        sem_votes=sem_votes,
        tissue=sem_votes.argmax(axis=1).astype(np.int32) if n_final else np.zeros(0, np.int32),
        members=members,
        joins=int(total - n_final),
    )


def group_polygons(
    pieces: Sequence[tuple[np.ndarray, int, int]],
) -> list[Polygon]:
    """Outline of an object made of pieces: the union of their masks, traced as one (multi)polygon.

    Args:
        pieces: ``(mask (h, w) bool, x0, y0)`` of each piece, region pixels.

    Returns:
        polygons as :func:`coseg.histo.geojson.mask_to_polygons` gives them.
    """
    x0 = min(x for _, x, _ in pieces)
    y0 = min(y for _, _, y in pieces)
    x1 = max(x + m.shape[1] for m, x, _ in pieces)
    y1 = max(y + m.shape[0] for m, _, y in pieces)
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for m, x, y in pieces:
        canvas[y - y0 : y - y0 + m.shape[0], x - x0 : x - x0 + m.shape[1]] |= m
    return _outline(canvas, x0, y0)


def _outline(mask: np.ndarray, x0: int, y0: int) -> list[Polygon]:
    """Outer outline of an object's pixels (holes filled, as HoVer-Net's contours): the polygons
    :func:`coseg.histo.geojson.mask_to_polygons` gives for the mask with its holes filled (exact under
    re-rasterisation), without the hole-to-region matching that is quadratic in the number of holes (a poor
    prediction can leave blobs with thousands).

    The common case, one piece without diagonal-only contacts, is traced by OpenCV (:func:`_traced_outline`, about
    7x faster: the outlines of a slide's nuclei are the largest share of the per-tile post-processing); other masks
    go through :func:`~coseg.histo.geojson.mask_to_polygons`. Both give the same vertices in the same orientation;
    the first vertex may differ.
    """
    traced = _traced_outline(mask, x0, y0)
    if traced is not None:
        return traced
    return mask_to_polygons(ndimage.binary_fill_holes(mask), offset=(float(x0), float(y0)))


def _traced_outline(mask: np.ndarray, x0: int, y0: int) -> list[Polygon] | None:
    """The outline of a mask of one 4-connected piece with no saddle (a 2 x 2 cell whose two diagonals differ), by
    OpenCV's border following on a doubled lattice; ``None`` for other masks.

    :func:`~coseg.histo.geojson.mask_to_polygons` walks marching squares at level 0.5: its vertices are the midpoints
    of the boundary's pixel edges, joined straight or diagonally, collinear ones dropped. On a lattice with the pixel
    centres at even points, the edge midpoints between them and the pixel corners at odd points, the polygon's
    region and boundary hold: the object's pixel centres, the midpoints of edges with an object pixel on either side,
    and the corners with two edge-adjacent object pixels around them. Without saddles, 4- and 8-connectivity agree,
    so OpenCV's outer border (``RETR_EXTERNAL``: holes ignored, as if filled) runs exactly through the marching
    squares vertices, and ``CHAIN_APPROX_SIMPLE`` keeps the turning points, i.e. drops the collinear ones.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    if h > 1 and w > 1:
        a, d = m[:-1, :-1], m[1:, 1:]
        if ((a == d) & (m[:-1, 1:] == m[1:, :-1]) & (a != m[:-1, 1:])).any():
            return None
    p = np.zeros((h + 2, w + 2), dtype=bool)
    p[1:-1, 1:-1] = m
    lattice = np.zeros((2 * h + 3, 2 * w + 3), dtype=np.uint8)
    lattice[::2, ::2] = p
    lattice[1::2, ::2] = p[:-1] | p[1:]
    lattice[::2, 1::2] = p[:, :-1] | p[:, 1:]
    pa, pb, pc, pd = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    lattice[1::2, 1::2] = (pa & (pb | pc)) | (pd & (pb | pc))
    contours, _ = cv2.findContours(lattice, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1:
        return None
    # OpenCV walks the outer border clockwise on screen: reversed, counter-clockwise in (x, y) numbers; lattice
    # point (2r, 2c) is the centre of padded pixel (r, c), at x = c - 1 + 0.5 in QuPath's pixel-edge coordinates
    pts = contours[0].reshape(-1, 2)[::-1].astype(np.float64)
    ring = np.empty_like(pts)
    ring[:, 0] = pts[:, 0] * 0.5 + (x0 - 0.5)
    ring[:, 1] = pts[:, 1] * 0.5 + (y0 - 0.5)
    return [[ring]]


def geometry_text(polygons: Sequence[Polygon], placement: Placement) -> str:
    """The GeoJSON geometry of an object's polygons (region pixels) in level-0 pixels, rounded to 2 decimals, as the
    compact JSON text :func:`coseg.histo.geojson.write_geojson` writes for
    :func:`coseg.histo.geojson.polygons_geometry`'s geometry (the same bytes).

    Args:
        polygons: the object's polygons (region pixels).
        placement: where the region lies on the slide.

    Returns:
        the JSON text.
    """
    return geometry_texts([polygons], placement)[0]


def geometry_texts(objects: Sequence[Sequence[Polygon]], placement: Placement) -> list[str]:
    """:func:`geometry_text` of many objects, their vertices mapped and rounded in one pass.

    Args:
        objects: each object's polygons (region pixels).
        placement: where the region lies on the slide.

    Returns:
        one JSON text per object.
    """
    rings = [np.asarray(r, dtype=np.float64) for polys in objects for poly in polys for r in poly]
    sy, sx = placement.scale
    oy, ox = placement.offset
    if rings:
        xy = np.concatenate(rings)
        # the arithmetic of polygons_geometry(..., decimals=2), vertex by vertex
        points = np.round(np.stack([(xy[:, 0] + ox) * sx, (xy[:, 1] + oy) * sy], axis=1), 2).tolist()
    start = 0
    out = []
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for polys in objects:
        coords = []
        for poly in polys:
            rings_out = []
            for r in poly:
                ring = points[start : start + len(r)]
                start += len(r)
                rings_out.append(ring + ring[:1])
            coords.append(rings_out)
        kind = {"type": "Polygon", "coordinates": coords[0]} if len(coords) == 1 else None
        out.append(dumps(kind if kind is not None else {"type": "MultiPolygon", "coordinates": coords}))
    return out


def assemble_low(plan: TilePlan, records: Mapping[tuple[int, int], TileRecord], step: int) -> np.ndarray:
    """The slide's semantic classes sampled every ``step`` region pixels, from the records' ``sem_low``.

    Args:
        plan: the tile plan.
        records: the records (headers suffice), keyed by tile; absent tiles stay 0.
        step: the sampling step the records were made with.

    Returns:
        ``(ceil(height / step), ceil(width / step))`` uint8.
    """
    low = np.zeros((math.ceil(plan.height / step), math.ceil(plan.width / step)), np.uint8)
    for (row, col), rec in records.items():
        core = plan.core(row, col)
        y, x = -(-core.y0 // step), -(-core.x0 // step)
        h, w = rec.sem_low.shape
        low[y : y + h, x : x + w] = rec.sem_low
    return low
