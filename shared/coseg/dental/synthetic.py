"""A synthetic dental CBCT phantom in ToothFairy2's label scheme, for the quickstart and the tests.

The phantom is anatomically laid out, not anatomically exact: a U-shaped mandible (lower jawbone, with rami)
and maxilla (upper jawbone, with a palate), separate teeth along both arches (FDI 11-18 and 21-28 in the
maxilla, 31-38 and 41-48 in the mandible; crowns meeting at the occlusal plane, tapered roots in the bone, two
roots for molars), a pharynx airway behind, inferior alveolar canals in the mandible, maxillary sinuses above
the upper molars, soft tissue and air outside the head. Intensities are HU-like (air -1000, soft tissue
about 40, trabecular bone about 750 with a cortical shell about 1500, dentin about 1900, enamel about 2900,
pulp about 350, titanium implant 4500), then smoothed and noisy.

Array layout: ``(D, H, W)`` with ``D`` slices from inferior to superior, ``H`` rows from anterior to posterior
and ``W`` columns from the patient's right to left; the returned RAS affine says so (axis codes ``S, P, L``).
Files are written in the index order ITK uses for such a scan (``W, H, D``, identity LPS direction), as the
ToothFairy2 ``.mha`` files are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from coseg.dental.labels import FDI_TEETH, TOOTH_WIDTHS_MM, TOOTHFAIRY2_LABELS

__all__ = ["Phantom", "make_phantom", "write_toothfairy2_like", "phantom_affine", "restore_phantom"]

_LOWER_JAW, _UPPER_JAW = 1, 2
_CANAL = {"left": 3, "right": 4}
_SINUS = {"left": 5, "right": 6}
_PHARYNX, _IMPLANT = 7, 10

_HU_AIR, _HU_SOFT, _HU_TRABECULAR, _HU_CORTICAL = -1000.0, 40.0, 750.0, 1500.0
_HU_DENTIN, _HU_ENAMEL, _HU_PULP, _HU_CANAL, _HU_IMPLANT = 1900.0, 2900.0, 350.0, 150.0, 4500.0

# Per tooth position 1..8 (central incisor .. third molar): bucco-lingual / mesio-distal ratio and total length
# as a fraction of the half height of the volume (mesio-distal widths: coseg.dental.labels.TOOTH_WIDTHS_MM).
_DEPTH_RATIO = np.array([0.75, 0.8, 1.0, 1.1, 1.1, 1.05, 1.05, 1.0])
_LENGTH = np.array([0.75, 0.72, 0.85, 0.72, 0.7, 0.68, 0.65, 0.6])
_GAP, _CROWN = 0.025, 0.3  # half occlusal gap and crown height, in half heights


class Phantom(NamedTuple):
    """``image`` ``(D, H, W)`` int16 HU-like values, ``label`` ``(D, H, W)`` uint8 ToothFairy2 ids,
    ``affine`` ``(4, 4)`` voxel-to-RAS affine of both."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine of a ``(D, H, W)`` phantom: ``d`` to superior, ``h`` to posterior, ``w`` to the patient's left,
    centred on the middle of the volume.

    Args:
        shape: ``(D, H, W)``.
        spacing: ``(sd, sh, sw)`` in mm.

    Returns:
        ``(4, 4)`` float64 affine.
    """
    sd, sh, sw = (float(v) for v in spacing)
    affine = np.array([[0, 0, -sw, 0], [0, -sh, 0, 0], [sd, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


class _Arch:
    """A parabolic dental arch ``y = y0 + c x^2`` in in-plane mm (x to the patient's left, y posterior)."""

    def __init__(self, y_front: float, half_width: float, y_back: float, samples: int = 801) -> None:
        self.c = (y_back - y_front) / half_width**2
        self.y0 = y_front
        self.x = np.linspace(-half_width, half_width, samples)
        self.y = y_front + self.c * self.x**2
        step = np.hypot(np.diff(self.x), np.diff(self.y))
        arc = np.concatenate([[0.0], np.cumsum(step)])
        self.s = arc - np.interp(0.0, self.x, arc)  # signed arc length, 0 at the midline, > 0 to the left
        self.half_length = float(self.s[-1])

    def point(self, s: float) -> tuple[float, float, float, float]:
        """Position and unit tangent ``(x, y, tx, ty)`` at signed arc length ``s``."""
        x = float(np.interp(s, self.s, self.x))
        tx, ty = 1.0, 2 * self.c * x
        norm = float(np.hypot(tx, ty))
        return x, self.y0 + self.c * x**2, tx / norm, ty / norm

    def mask(self, grid_x: np.ndarray, grid_y: np.ndarray, s_range: tuple[float, float] | None = None) -> np.ndarray:
        """Pixels of the ``(H, W)`` grid nearest to the curve samples (optionally within a signed arc range)."""
        keep = np.ones(len(self.s), dtype=bool) if s_range is None else (self.s >= s_range[0]) & (self.s <= s_range[1])
        xs, ys = self.x[keep], self.y[keep]
        col = np.rint((xs - grid_x[0]) / (grid_x[1] - grid_x[0])).astype(int)
        row = np.rint((ys - grid_y[0]) / (grid_y[1] - grid_y[0])).astype(int)
        inside = (col >= 0) & (col < len(grid_x)) & (row >= 0) & (row < len(grid_y))
        out = np.zeros((len(grid_y), len(grid_x)), dtype=bool)
        out[row[inside], col[inside]] = True
        return out


def _choose_missing(rng: np.random.Generator, missing_teeth: int | Sequence[int] | None) -> set[int]:
    if missing_teeth is None:
        return {t for t in FDI_TEETH if rng.random() < (0.4 if t % 10 == 8 else 0.04)}
    if isinstance(missing_teeth, (int, np.integer)) and not isinstance(missing_teeth, bool):
        if not 0 <= missing_teeth <= len(FDI_TEETH):
            raise ValueError(f"missing_teeth must lie in 0..{len(FDI_TEETH)}, got {missing_teeth}")
        return {int(t) for t in rng.choice(FDI_TEETH, size=int(missing_teeth), replace=False)}
    chosen = {int(t) for t in missing_teeth}
    bad = sorted(chosen - set(FDI_TEETH))
    if bad:
        raise ValueError(f"missing_teeth holds non-FDI numbers {bad}")
    return chosen


def make_phantom(
    shape: Sequence[int] = (64, 96, 96),
    spacing: Sequence[float] = (0.3, 0.3, 0.3),
    seed: int = 0,
    *,
    missing_teeth: int | Sequence[int] | None = None,
    implant_probability: float = 0.3,
    noise_hu: float = 35.0,
    smoothing: float = 0.7,
) -> Phantom:
    """Make one synthetic dental CBCT volume with its ToothFairy2 label volume.

    Anatomy scales with the field of view: in-plane sizes with ``min(H sh, W sw)``, heights with ``D sd``.

    Args:
        shape: ``(D, H, W)``, each >= 16.
        spacing: ``(sd, sh, sw)`` voxel size in mm, each > 0.
        seed: random seed (same seed and arguments: same phantom).
        missing_teeth: ``None`` (random: each third molar missing with probability 0.4, other teeth 0.04), a
            number of teeth to remove at random, or the FDI numbers to remove.
        implant_probability: chance of a titanium implant (label 10) in the bone of one missing tooth (not a
            third molar), in ``[0, 1]``.
        noise_hu: standard deviation of the added Gaussian noise, >= 0.
        smoothing: Gaussian blur sigma in voxels applied before the noise (scanner blur), >= 0.

    Returns:
        :class:`Phantom` ``(image, label, affine)``.

    Raises:
        ValueError: on bad arguments.
    """
    shape = tuple(int(v) for v in shape)
    spacing = tuple(float(v) for v in spacing)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be (D, H, W) with every size >= 16, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive sizes in mm, got {spacing}")
    if not 0.0 <= implant_probability <= 1.0:
        raise ValueError(f"implant_probability must lie in [0, 1], got {implant_probability}")
    if noise_hu < 0 or smoothing < 0:
        raise ValueError(f"noise_hu and smoothing must be >= 0, got {noise_hu}, {smoothing}")
    rng = np.random.default_rng(seed)
    missing = _choose_missing(rng, missing_teeth)
    depth, height, width = shape
    sd, sh, sw = spacing
    half_z = depth * sd / 2
    radius = min(height * sh, width * sw) / 2
    v = ((np.arange(depth) + 0.5) * sd - half_z) / half_z  # -1 inferior .. 1 superior
    gy = (np.arange(height) + 0.5) * sh - height * sh / 2  # mm, posterior positive
    gx = (np.arange(width) + 0.5) * sw - width * sw / 2  # mm, patient-left positive
    jitter = 1.0 + 0.04 * rng.standard_normal(2)

    label = np.zeros(shape, dtype=np.uint8)
    hu = np.full(shape, _HU_AIR, dtype=np.float32)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    head = ((xx / (0.96 * width * sw / 2)) ** 2 + ((yy - 0.04 * radius) / (0.97 * height * sh / 2)) ** 2) <= 1
    hu[:, head] = _HU_SOFT

    arches = {
        _UPPER_JAW: _Arch(-0.60 * radius * jitter[0], 0.58 * radius * jitter[1], 0.20 * radius),
        _LOWER_JAW: _Arch(-0.56 * radius * jitter[0], 0.55 * radius * jitter[1], 0.22 * radius),
    }
    gap = max(_GAP, 0.75 * sd / half_z)  # at least one empty slice between upper and lower crowns
    teeth = _tooth_layout(arches, missing, gap)
    depth_max = max(t["r_n"] for t in teeth.values()) if teeth else 0.05 * radius
    pix = (sh, sw)

    # pharynx: an elliptical air tube behind the oral cavity
    pharynx_2d = ((xx / (0.16 * radius)) ** 2 + ((yy - 0.64 * radius) / (0.10 * radius)) ** 2) <= 1
    pharynx = pharynx_2d[None] & (v <= 0.45)[:, None, None]
    label[pharynx] = _PHARYNX

    # jawbones: bands around the arches, thicker towards the base; palate; rami
    bone = np.zeros(shape, dtype=bool)
    for jaw, arch in arches.items():
        dist = ndimage.distance_transform_edt(~arch.mask(gx, gy), sampling=pix)
        if jaw == _UPPER_JAW:
            v_low, v_high = gap + 0.8 * _CROWN, 0.95
            frac = np.clip((v - v_low) / (v_high - v_low), 0, 1)
        else:
            v_low, v_high = -0.98, -(gap + 0.8 * _CROWN)
            frac = np.clip((v_high - v) / (v_high - v_low), 0, 1)
        thickness = depth_max * (1.1 + 0.4 * frac)
        in_range = (v >= v_low) & (v <= v_high)
        jaw_mask = (dist[None] <= thickness[:, None, None]) & in_range[:, None, None]
        if jaw == _UPPER_JAW:
            inside = (yy >= arch.y0 + arch.c * xx**2) & (np.abs(xx) <= arch.x[-1]) & (yy <= arch.y[-1])
            palate_v = (v >= 0.42) & (v <= 0.54)
            jaw_mask |= inside[None] & palate_v[:, None, None]
        else:
            ramus = np.zeros_like(head)
            for sign in (-1, 1):
                ramus |= (np.abs(xx - sign * arch.x[-1]) <= 0.09 * radius) & (
                    (yy >= arch.y[-1] - 0.05 * radius) & (yy <= arch.y[-1] + 0.30 * radius)
                )
            jaw_mask |= ramus[None] & ((v >= -0.98) & (v <= 0.2))[:, None, None]
        jaw_mask &= label == 0
        label[jaw_mask] = jaw
        bone |= jaw_mask

    # maxillary sinuses carved out of the maxilla (air), above the molars
    for side, sign in (("left", 1), ("right", -1)):
        sinus = (
            ((xx[None] - sign * 0.40 * radius) / (0.18 * radius)) ** 2
            + (yy[None] / (0.22 * radius)) ** 2
            + ((v[:, None, None] - 0.88) / 0.15) ** 2
        ) <= 1
        sinus &= head[None]
        label[sinus] = _SINUS[side]
        bone &= ~sinus

    # inferior alveolar canals in the mandible, below the roots, from the premolars backwards
    lower = arches[_LOWER_JAW]
    canal_r = max(0.035 * radius, 0.8 * min(sh, sw))
    canal_v = -0.8
    dz = (v - canal_v) * half_z
    for side, sign in (("left", 1), ("right", -1)):
        s_range = (
            (0.45 * lower.half_length, lower.half_length)
            if sign > 0
            else (-lower.half_length, -0.45 * lower.half_length)
        )
        dist = ndimage.distance_transform_edt(~lower.mask(gx, gy, s_range), sampling=pix)
        canal = (dist[None] ** 2 + dz[:, None, None] ** 2) <= canal_r**2
        canal &= label == _LOWER_JAW
        label[canal] = _CANAL[side]
        bone &= ~canal
        hu[canal] = _HU_CANAL

    # bone intensities: cortical shell over trabecular bone with a soft texture
    hu[bone] = _HU_TRABECULAR
    inner = ndimage.binary_erosion(bone, iterations=max(1, round(1.2 / min(spacing))))
    shell = bone & ~inner
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5) * 400
    hu[inner] += texture[inner]
    hu[shell] = _HU_CORTICAL
    hu[label == _PHARYNX] = _HU_AIR
    hu[(label == _SINUS["left"]) | (label == _SINUS["right"])] = _HU_AIR + 50

    under_label, under_hu = label.copy(), hu.copy()
    for fdi, tooth in teeth.items():
        _draw_tooth(label, hu, fdi, tooth, v, gy, gx)
    _separate_teeth(label, hu, under_label, under_hu)

    candidates = sorted(t for t in missing if t % 10 != 8)
    if candidates and rng.random() < implant_probability:
        fdi = int(rng.choice(candidates))
        slot = _tooth_layout(arches, set(FDI_TEETH) - {fdi}, gap)[fdi]
        _draw_implant(label, hu, fdi, slot, v, gy, gx)

    if smoothing > 0:
        hu = ndimage.gaussian_filter(hu, smoothing)
    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 32767).astype(np.int16)
    return Phantom(image=image, label=label, affine=phantom_affine(shape, spacing))


def _separate_teeth(label: np.ndarray, hu: np.ndarray, under_label: np.ndarray, under_hu: np.ndarray) -> None:
    """Keep every tooth apart from the others (26-connectivity): a tooth voxel with a lower-numbered tooth among
    its 26 neighbours gets back what lay under the teeth (``under_*``; on coarse grids neighbouring crowns would
    otherwise touch), and a tooth cut in pieces by this keeps only its largest piece."""
    teeth = np.where(np.isin(label, FDI_TEETH), label, np.uint8(255))
    contact = (teeth < 255) & (ndimage.minimum_filter(teeth, size=3) < teeth)
    label[contact] = under_label[contact]
    hu[contact] = under_hu[contact]
    # on very coarse grids the trimming can cut a thin tooth in two: keep its largest piece
    cube = np.ones((3, 3, 3), dtype=bool)
    for fdi, box in enumerate(ndimage.find_objects(np.where(np.isin(label, FDI_TEETH), label, 0)), start=1):
        if box is None:
            continue
        pieces, count = ndimage.label(label[box] == fdi, structure=cube)
        if count > 1:
            drop = pieces != 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
            drop &= pieces > 0
            label[box][drop] = under_label[box][drop]
            hu[box][drop] = under_hu[box][drop]


def _tooth_layout(arches: dict[int, _Arch], missing: set[int], gap: float) -> dict[int, dict[str, float]]:
    """Centre, tangent, radii and vertical extent of every present tooth."""
    out: dict[int, dict[str, float]] = {}
    for quadrant in (1, 2, 3, 4):
        jaw = _UPPER_JAW if quadrant in (1, 2) else _LOWER_JAW
        arch = arches[jaw]
        side = 1.0 if quadrant in (2, 3) else -1.0  # patient left is +x
        widths = np.asarray(TOOTH_WIDTHS_MM[1 if jaw == _UPPER_JAW else 2])
        slots = arch.half_length * widths / widths.sum()
        centres = np.cumsum(slots) - slots / 2
        for k in range(8):
            fdi = 10 * quadrant + k + 1
            if fdi in missing:
                continue
            x, y, tx, ty = arch.point(side * centres[k])
            r_t = 0.42 * slots[k]
            top = gap if jaw == _UPPER_JAW else -gap
            direction = 1.0 if jaw == _UPPER_JAW else -1.0
            out[fdi] = {
                "x": x,
                "y": y,
                "tx": tx,
                "ty": ty,
                "r_t": r_t,
                "r_n": r_t * _DEPTH_RATIO[k],
                "v_occ": top,
                "v_apex": top + direction * _LENGTH[k],
                "molar": float(k >= 5),
            }
    return out


def _tooth_box(tooth: dict[str, float], v: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> tuple[slice, slice, slice]:
    reach = 1.1 * max(tooth["r_t"], tooth["r_n"])
    v_lo, v_hi = sorted((tooth["v_occ"], tooth["v_apex"]))
    d = np.flatnonzero((v >= v_lo) & (v <= v_hi))
    h = np.flatnonzero(np.abs(gy - tooth["y"]) <= reach)
    w = np.flatnonzero(np.abs(gx - tooth["x"]) <= reach)
    if not (d.size and h.size and w.size):
        return slice(0, 0), slice(0, 0), slice(0, 0)
    return slice(d[0], d[-1] + 1), slice(h[0], h[-1] + 1), slice(w[0], w[-1] + 1)


def _tooth_frame(
    tooth: dict[str, float], v: np.ndarray, gy: np.ndarray, gx: np.ndarray
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray, float] | None:
    """The box around a tooth and its local frame there, or ``None`` when the tooth misses the grid.

    Returns ``(box, t, n, u, crown)``: tangential and normal in-plane offsets (mm, ``(1, h, w)``), height fraction
    (``(d, 1, 1)``: 0 at the occlusal surface, 1 at the apex) inside ``box``, and the crown's height fraction.
    """
    box = _tooth_box(tooth, v, gy, gx)
    if box[0].stop == 0:
        return None
    dx = gx[box[2]][None, None, :] - tooth["x"]
    dy = gy[box[1]][None, :, None] - tooth["y"]
    t = dx * tooth["tx"] + dy * tooth["ty"]
    n = -dx * tooth["ty"] + dy * tooth["tx"]
    u = (v[box[0]][:, None, None] - tooth["v_occ"]) / (tooth["v_apex"] - tooth["v_occ"])
    return box, t, n, u, _CROWN / abs(tooth["v_apex"] - tooth["v_occ"])


def _draw_tooth(
    label: np.ndarray,
    hu: np.ndarray,
    fdi: int,
    tooth: dict[str, float],
    v: np.ndarray,
    gy: np.ndarray,
    gx: np.ndarray,
) -> None:
    frame = _tooth_frame(tooth, v, gy, gx)
    if frame is None:
        return
    box, t, n, u, crown = frame
    cusp = 0.25 * crown
    rounded = 0.65 + 0.35 * np.sqrt(np.clip(1 - ((cusp - u) / cusp) ** 2, 0, 1))
    root = 0.85 - 0.6 * (u - crown) / (1 - crown)
    profile = np.where(u < cusp, rounded, np.where(u <= crown, 1.0, root))
    rho = np.sqrt((t / tooth["r_t"]) ** 2 + (n / tooth["r_n"]) ** 2)
    inside = rho <= profile
    if tooth["molar"]:
        furcation = crown + 0.25 * (1 - crown)
        below = u > furcation
        half = 0.5 * tooth["r_t"]
        rho_roots = np.minimum(
            np.sqrt(((t - half) / (0.55 * half)) ** 2 + (n / tooth["r_n"]) ** 2),
            np.sqrt(((t + half) / (0.55 * half)) ** 2 + (n / tooth["r_n"]) ** 2),
        )
        root_profile = 0.95 - 0.5 * (u - furcation) / (1 - furcation)
        inside = np.where(below, rho_roots <= root_profile, inside)
        rho = np.where(below, rho_roots / 0.55, rho)
    inside &= (u >= 0) & (u <= 1)
    sub_label, sub_hu = label[box], hu[box]
    free = inside & ((sub_label == 0) | (sub_label == _LOWER_JAW) | (sub_label == _UPPER_JAW))
    sub_label[free] = fdi
    enamel = (u < crown) & (rho > 0.78 * profile)
    pulp = (rho < 0.3 * profile) & (u > 0.2 * crown)
    values = np.where(enamel, _HU_ENAMEL, np.where(pulp, _HU_PULP, _HU_DENTIN)).astype(np.float32)
    sub_hu[free] = np.broadcast_to(values, free.shape)[free]


def _draw_implant(
    label: np.ndarray, hu: np.ndarray, fdi: int, tooth: dict[str, float], v: np.ndarray, gy: np.ndarray, gx: np.ndarray
) -> None:
    frame = _tooth_frame(tooth, v, gy, gx)
    if frame is None:
        return
    box, t, n, u, crown = frame
    screw = (np.hypot(t, n) <= 0.35 * min(tooth["r_t"], tooth["r_n"])) & (u >= crown) & (u <= 0.9)
    sub_label, sub_hu = label[box], hu[box]
    sub_label[screw] = _IMPLANT
    sub_hu[screw] = _HU_IMPLANT


def restore_phantom(
    phantom: Phantom, *, axis_order: Sequence[int] = (0, 1, 2), flip_axes: Sequence[bool] = (False, False, False)
) -> Phantom:
    """The same phantom stored another way: array axes permuted and reversed, the affine changed to match, so
    every voxel keeps its place in the patient (a scan saved with a permuted or flipped direction matrix).

    Args:
        phantom: the phantom.
        axis_order: new array axis ``i`` is old axis ``axis_order[i]`` (a permutation of 0, 1, 2).
        flip_axes: per new axis, whether its index order is reversed.

    Returns:
        the re-stored :class:`Phantom`.

    Raises:
        ValueError: ``axis_order`` is not a permutation of 0, 1, 2 or ``flip_axes`` not 3 flags.
    """
    order = [int(a) for a in axis_order]
    if sorted(order) != [0, 1, 2] or len(flip_axes) != 3:
        raise ValueError(f"axis_order must permute (0, 1, 2) and flip_axes hold 3 flags, got {axis_order}, {flip_axes}")
    shape = [phantom.image.shape[a] for a in order]
    index_map = np.zeros((4, 4))  # new voxel index (homogeneous) -> old voxel index
    index_map[3, 3] = 1.0
    image, label = phantom.image.transpose(order), phantom.label.transpose(order)
    for new_axis, old_axis in enumerate(order):
        if flip_axes[new_axis]:
            image, label = np.flip(image, new_axis), np.flip(label, new_axis)
            index_map[old_axis, new_axis] = -1.0
            index_map[old_axis, 3] = shape[new_axis] - 1
        else:
            index_map[old_axis, new_axis] = 1.0
    return Phantom(
        image=np.ascontiguousarray(image), label=np.ascontiguousarray(label), affine=phantom.affine @ index_map
    )


def _write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a ``(D, H, W)`` phantom array in ITK index order ``(W, H, D)`` as ``.mha`` or ``.nii.gz``."""
    if path.name.endswith(".nii.gz"):
        image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine[:, [2, 1, 0, 3]])
        image.set_sform(affine[:, [2, 1, 0, 3]], code=1)
        image.set_qform(affine[:, [2, 1, 0, 3]], code=1)
        image.header.set_xyzt_units("mm")
        nib.save(image, path)
        return
    import SimpleITK as sitk

    itk_image = sitk.GetImageFromArray(array)  # SimpleITK reads numpy (z, y, x): index (w, h, d)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3][:, [2, 1, 0]]
    spacing = np.linalg.norm(lps, axis=0)
    itk_image.SetSpacing(tuple(float(s) for s in spacing))
    itk_image.SetDirection(tuple(float(v) for v in (lps / spacing).ravel()))
    itk_image.SetOrigin(tuple(float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]))
    sitk.WriteImage(itk_image, os.fspath(path), useCompression=True)


def write_toothfairy2_like(
    out_dir: str | os.PathLike,
    num_cases: int = 3,
    shape: Sequence[int] = (64, 96, 96),
    seed: int = 0,
    fmt: Literal["mha", "nii.gz"] = "mha",
    reindex: bool = False,
    *,
    spacing: Sequence[float] = (0.3, 0.3, 0.3),
    axis_order: Sequence[int] = (0, 1, 2),
    flip_axes: Sequence[bool] = (False, False, False),
) -> Path:
    """Write phantoms in ToothFairy2's nnU-Net raw layout.

    Files: ``imagesTr/ToothFairy2F_<nnn>_0000.<fmt>``, ``labelsTr/ToothFairy2F_<nnn>.<fmt>`` and a nnU-Net v2
    ``dataset.json`` with the real ToothFairy2 label names (placeholders ``NA1``-``NA6`` included). With
    ``reindex`` every non-background id is permuted (seeded), in the label volumes and in ``dataset.json``
    alike: a copy that only mapping by name reads correctly.

    Args:
        out_dir: dataset folder (created).
        num_cases: number of cases, >= 1.
        shape: ``(D, H, W)`` of each phantom.
        seed: seed of the first case (case ``i`` uses ``seed + i``; the permutation uses ``seed``).
        fmt: ``"mha"`` or ``"nii.gz"``.
        reindex: permute the label ids.
        spacing: voxel size in mm.
        axis_order, flip_axes: store every phantom with permuted / reversed array axes and the affine to match
            (:func:`restore_phantom`): the same patients with other direction matrices.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: on bad arguments.
    """
    if fmt not in ("mha", "nii.gz"):
        raise ValueError(f"fmt must be 'mha' or 'nii.gz', got {fmt!r}")
    if isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    names = dict(TOOTHFAIRY2_LABELS)
    ids = np.array(sorted(i for i in names.values() if i > 0))
    lut = np.arange(ids.max() + 1, dtype=np.uint8)
    if reindex:
        lut[ids] = np.random.default_rng(seed).permutation(ids)
        names = {name: int(lut[i]) for name, i in names.items()}
    for i in range(num_cases):
        case = f"ToothFairy2F_{i + 1:03d}"
        phantom = restore_phantom(make_phantom(shape, spacing, seed + i), axis_order=axis_order, flip_axes=flip_axes)
        _write_volume(out / "imagesTr" / f"{case}_0000.{fmt}", phantom.image, phantom.affine)
        _write_volume(out / "labelsTr" / f"{case}.{fmt}", lut[phantom.label], phantom.affine)
    dataset = {
        "name": "ToothFairy2-like synthetic phantoms",
        "description": "coseg.dental.synthetic phantoms in the ToothFairy2 label scheme",
        "channel_names": {"0": "CBCT"},
        "labels": dict(sorted(names.items(), key=lambda kv: kv[1])),
        "numTraining": num_cases,
        "file_ending": f".{fmt}",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return out
