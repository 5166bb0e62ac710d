"""3D tooth instances: linking 2D slice instances across slices (union-find over overlaps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["LinkedInstances", "link_instances_3d"]


class LinkedInstances(NamedTuple):
    """Result of :func:`link_instances_3d`: ``labels`` ``(D, H, W)`` int32 3D ids 1..n (0 background) and
    ``types`` 3D id -> majority instance type (0 when no typed voxel)."""

    labels: np.ndarray
    types: dict[int, int]


class _UnionFind:
    def __init__(self) -> None:
        self.parent = [0]
        self.birth = [0]

    def add(self, birth: int) -> int:
        self.parent.append(len(self.parent))
        self.birth.append(birth)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, keep: int, other: int) -> int:
        keep, other = self.find(keep), self.find(other)
        if keep != other:
            self.parent[other] = keep
            self.birth[keep] = min(self.birth[keep], self.birth[other])
        return keep

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def link_instances_3d(
    inst_slices: np.ndarray,
    type_slices: np.ndarray | None = None,
    *,
    min_overlap: float = 0.3,
    max_gap: int = 1,
    merge_young: int = 2,
    min_voxels: int = 0,
    groups: np.ndarray | None = None,
) -> LinkedInstances:
    """Give each object one id in 3D by linking per-slice instances across neighbouring slices.

    Slices are visited along axis 0. The reference for slice ``z`` holds, per pixel, the 3D id of the nearest
    of the previous ``max_gap + 1`` slices where that pixel was an object, so a tooth missed in up to
    ``max_gap`` slices keeps its id. A slice instance ``c`` and a 3D object ``t`` are *linked* when their
    overlap coefficient ``|c & t| / min(|c|, |t|)`` (pixels in this slice vs the reference) is at least
    ``min_overlap``. Then, per slice instance:

    - no link: a new 3D object starts;
    - one link: it joins that object; several pieces linked to one object all join it (a tooth split in one
      slice, or a molar's roots, stays one tooth);
    - several links: objects younger than ``merge_young`` slices are merged into one (the cusps of a molar
      meeting in its crown); if two or more *established* objects remain (two touching teeth predicted as one
      instance in this slice), the instance's pixels are split between them by the nearest reference pixel, so
      the teeth stay two.

    Objects of different jaws never link: a slice instance whose pixels are mostly of one type group (``groups`` of
    ``type_slices``: by default the types themselves, upper 1 / lower 2) does not join an *established* object
    (at least ``merge_young`` slices old) whose voxels so far are mostly of another group. Upper and lower teeth
    stand on each other along the axial axis (in occlusion, or when the network bleeds a crown into the occlusal
    gap), and overlap alone would link each upper tooth to the lower tooth under it, one 3D tooth whose majority
    type erases the other jaw's tooth. A young object (a tooth's first slices, where a mistyped slice is common)
    still links.

    Every 3D object gets the majority type of its voxels (``type_slices``, 0 ignored). Objects with fewer
    than ``min_voxels`` voxels are removed and the rest renumbered 1..n in order of first appearance.

    Args:
        inst_slices: ``(D, H, W)`` integer per-slice instance ids (ids need not agree between slices).
        type_slices: ``(D, H, W)`` integer per-pixel types, or ``None``.
        min_overlap: link threshold in ``(0, 1]``.
        max_gap: number of empty slices an object may skip, >= 0.
        merge_young: age (slices) below which objects meeting in one instance are merged, >= 1.
        min_voxels: smallest 3D object kept, >= 0.
        groups: look-up table from a type value to its linking group (0: no group), e.g.
            :func:`coseg.dental.labels.fdi_class_lut` ``("jaw")`` for FDI classes; ``None``: the types themselves.
            Without ``type_slices`` nothing is grouped.

    Returns:
        :class:`LinkedInstances`.

    Raises:
        ValueError: on bad shapes, dtypes or parameter values.
    """
    inst = np.asarray(inst_slices)
    if inst.ndim != 3 or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"inst_slices must be a (D, H, W) integer array, got {inst.shape} {inst.dtype}")
    if type_slices is not None:
        type_slices = np.asarray(type_slices)
        if type_slices.shape != inst.shape or not np.issubdtype(type_slices.dtype, np.integer):
            raise ValueError(f"type_slices must be an integer array of shape {inst.shape}")
        if type_slices.size and type_slices.min() < 0:
            raise ValueError("type_slices must be >= 0")
        top = int(type_slices.max(initial=0))
        if groups is None:
            group_lut = np.arange(top + 1, dtype=np.int64)
        else:
            group_lut = np.asarray(groups).astype(np.int64)
            if group_lut.ndim != 1 or len(group_lut) <= top or (group_lut.size and group_lut.min() < 0):
                raise ValueError(f"groups must be a 1D look-up table of >= {top + 1} non-negative entries")
    elif groups is not None:
        raise ValueError("groups needs type_slices")
    if not 0.0 < float(min_overlap) <= 1.0:
        raise ValueError(f"min_overlap must lie in (0, 1], got {min_overlap}")
    for name, value, low in (("max_gap", max_gap, 0), ("merge_young", merge_young, 1), ("min_voxels", min_voxels, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    depth = inst.shape[0]
    tracks = np.zeros(inst.shape, dtype=np.int32)
    uf = _UnionFind()
    n_groups = int(group_lut.max(initial=0)) + 1 if type_slices is not None else 1
    votes: list[np.ndarray] = [np.zeros(n_groups, dtype=np.int64)]  # per union-find id: pixels of each group

    def new_track(birth: int) -> int:
        votes.append(np.zeros(n_groups, dtype=np.int64))
        return uf.add(birth)

    def union(keep: int, other: int) -> int:
        keep, other = uf.find(keep), uf.find(other)
        root = uf.union(keep, other)
        if keep != other:
            votes[root] = votes[keep] + votes[other]
        return root

    def group_of(counts: np.ndarray) -> int:
        counts = counts[1:]
        if not counts.any():
            return 0
        best = int(np.argmax(counts))
        return best + 1 if (counts == counts[best]).sum() == 1 else 0

    for z in range(depth):
        cur = inst[z]
        fg = cur > 0
        if not fg.any():
            continue
        ref = np.zeros(cur.shape, dtype=np.int64)
        for s in range(max(0, z - max_gap - 1), z):  # oldest first: newer slices overwrite
            prev = tracks[s]
            ref[prev > 0] = prev[prev > 0]
        root_of = uf.roots()
        ref = root_of[ref]
        ids, compact = np.unique(cur[fg], return_inverse=True)
        local = np.zeros(cur.shape, dtype=np.int64)
        local[fg] = compact.ravel() + 1
        n_local = len(ids)
        group_z = group_lut[type_slices[z]] if type_slices is not None else np.zeros(cur.shape, dtype=np.int64)
        local_votes = np.bincount(local[fg] * n_groups + group_z[fg], minlength=(n_local + 1) * n_groups).reshape(
            n_local + 1, n_groups
        )
        area_local = np.bincount(local.ravel(), minlength=n_local + 1)
        area_ref = np.bincount(ref.ravel(), minlength=len(root_of))
        both = fg & (ref > 0)
        pair_keys, overlap = np.unique(local[both] * len(root_of) + ref[both], return_counts=True)
        candidates: dict[int, list[tuple[int, int]]] = {}
        for key, count in zip(pair_keys.tolist(), overlap.tolist()):
            c, t = divmod(key, len(root_of))
            if count / min(area_local[c], area_ref[t]) >= min_overlap:
                g_c, g_t = group_of(local_votes[c]), group_of(votes[t])
                if g_c and g_t and g_c != g_t and z - uf.birth[t] >= merge_young:
                    continue  # another jaw's established tooth
                candidates.setdefault(c, []).append((t, count))
        assign = np.zeros(n_local + 1, dtype=np.int64)
        splits: list[tuple[int, list[int]]] = []
        for c in range(1, n_local + 1):
            links = candidates.get(c, [])
            if not links:
                assign[c] = new_track(z)
                continue
            if len(links) == 1:
                assign[c] = uf.find(links[0][0])
                continue
            established = [t for t, _ in links if z - uf.birth[uf.find(t)] >= merge_young]
            if len(established) <= 1:
                oldest = min((t for t, _ in links), key=lambda t: uf.birth[uf.find(t)])
                keep = established[0] if established else oldest
                for t, _ in links:
                    keep = union(keep, t)
                assign[c] = keep
                continue
            best = max(((t, n) for t, n in links if t in established), key=lambda p: p[1])[0]
            for t, _ in links:
                if t not in established:
                    union(best, t)
            splits.append((c, established))
        labels_z = assign[local]
        for c, established in splits:
            labels_z[local == c] = _split_by_nearest(local == c, ref, [uf.find(t) for t in established], uf)
        tracks[z] = labels_z
        if type_slices is not None:
            roots_z = uf.roots()[labels_z]
            for root, g, count in _pair_counts(roots_z[fg], group_z[fg]):
                votes[root][g] += count
    return _finish_linking(tracks, uf, type_slices, min_voxels)


def _pair_counts(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, int]]:
    """``(a value, b value, count)`` of every pair that occurs in the equal-length arrays ``a`` and ``b``."""
    if not a.size:
        return []
    pairs, counts = np.unique(np.stack([a, b]), axis=1, return_counts=True)
    return [(int(x), int(y), int(n)) for (x, y), n in zip(pairs.T, counts)]


def _split_by_nearest(mask: np.ndarray, ref: np.ndarray, owners: list[int], uf: _UnionFind) -> np.ndarray:
    """Values for ``mask``'s pixels: the owner (root id) of the nearest reference pixel of one of ``owners``."""
    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    sub_roots = uf.roots()[ref[box]]
    seeds = np.isin(sub_roots, owners)
    _, (ii, jj) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return sub_roots[ii, jj][mask[box]]


def _finish_linking(
    tracks: np.ndarray, uf: _UnionFind, type_slices: np.ndarray | None, min_voxels: int
) -> LinkedInstances:
    root_of = uf.roots().astype(np.int32)
    roots = root_of[tracks]
    sizes = np.bincount(roots.ravel(), minlength=len(root_of))
    keep = [r for r in np.flatnonzero(sizes).tolist() if r > 0 and sizes[r] >= max(min_voxels, 1)]
    keep.sort(key=lambda r: (uf.birth[r], r))  # order of first appearance along axis 0
    relabel = np.zeros(len(root_of), dtype=np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    labels = relabel[roots]
    types = {i: 0 for i in range(1, len(keep) + 1)}
    if keep and type_slices is not None:
        fg = labels > 0
        n_types = int(type_slices.max()) + 1
        votes = np.bincount(
            labels[fg].astype(np.int64) * n_types + type_slices[fg].astype(np.int64),
            minlength=(len(keep) + 1) * n_types,
        ).reshape(len(keep) + 1, n_types)
        votes[:, 0] = 0
        for i in range(1, len(keep) + 1):
            types[i] = int(np.argmax(votes[i])) if votes[i].any() else 0
    return LinkedInstances(labels=labels, types=types)


def voxel_stats(labels: np.ndarray, *, boxes: bool = True) -> tuple[np.ndarray, np.ndarray, list | None]:
    """Voxel counts, per-axis index sums (``(3, n)``) and bounding boxes of every id, slice by slice (bounded
    memory on large volumes)."""
    n = int(labels.max(initial=0)) + 1
    counts = np.zeros(n, dtype=np.int64)
    sums = np.zeros((3, n))
    jj, kk = np.indices(labels.shape[1:])
    for i in range(labels.shape[0]):
        plane = labels[i].ravel().astype(np.int64)
        c = np.bincount(plane, minlength=n)
        counts += c
        sums[0] += c * i
        sums[1] += np.bincount(plane, weights=jj.ravel(), minlength=n)
        sums[2] += np.bincount(plane, weights=kk.ravel(), minlength=n)
    return counts, sums, (ndimage.find_objects(labels) if boxes else None)


def centroids(labels: np.ndarray, ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Voxel-index centroid of each of ``ids`` present in ``labels``."""
    counts, sums, _ = voxel_stats(labels, boxes=False)
    return {i: sums[:, i] / counts[i] for i in ids if 0 < i < len(counts) and counts[i] > 0}
