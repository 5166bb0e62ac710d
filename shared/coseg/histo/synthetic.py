"""Synthetic H&E-like samples with region, nucleus-instance and nucleus-type labels (quickstart and tests).

Classes follow the Co-Seg++ PUMA setup: regions {0 background, 1 tumour, 2 stroma}; nucleus types
{0 background, 1 tumour, 2 TIL (lymphocyte), 3 other}.

How a sample is built (all sizes scale with ``nucleus_scale``):

- Regions: thresholded, Gaussian-smoothed noise gives smooth boundaries; about ``background_fraction`` of
  the image is empty (white) background, the tissue is split into tumour and stroma by a second field.
- Stain: each pixel gets haematoxylin and eosin amounts and is coloured by Beer-Lambert absorption
  (``RGB = 255 * 10 ** -(h * H_OD + e * E_OD)``), then slightly blurred and given sensor noise.
  Stroma is pale pink with wavy eosin fibres along a smoothly varying orientation; tumour cytoplasm is a
  denser, slightly purple pink; background is near white.
- Nuclei (the structure a model can learn, coupling both tasks): tumour regions hold large, densely packed,
  dark, pleomorphic round tumour nuclei (irregular outlines from random harmonics; some touch); stroma holds
  elongated spindle "other" nuclei aligned with the fibres; small round, very dark lymphocytes (TIL) are
  scattered over the tissue, denser near the tumour/stroma border; the background holds none. Nuclei
  have chromatin texture, tumour nuclei a darker rim and nucleoli. A nucleus only takes tissue pixels not
  yet taken, so touching nuclei stay separate objects (and is dropped when too little of it is left).

Deterministic for a seed; a 256^2 sample takes a few tens of milliseconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from coseg.data.split import split_groups
from coseg.histo.layout import HistoSample, LayoutWriter

__all__ = [
    "make_sample",
    "write_synthetic_dataset",
    "SYNTHETIC_SEMANTIC_CLASSES",
    "SYNTHETIC_INSTANCE_TYPES",
]

#: region classes of the synthetic samples (as PUMA in the paper)
SYNTHETIC_SEMANTIC_CLASSES = {0: "background", 1: "tumour", 2: "stroma"}
#: nucleus types of the synthetic samples (as PUMA in the paper)
SYNTHETIC_INSTANCE_TYPES = {0: "background", 1: "tumour", 2: "TIL", 3: "other"}

# optical density per unit stain (R, G, B); tuned by eye towards scanned H&E rather than Ruifrok's vectors
_H_OD = np.array([0.62, 0.78, 0.30])
_E_OD = np.array([0.05, 0.52, 0.19])

_TUMOUR, _TIL, _OTHER = 1, 2, 3


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-smoothed white noise.

    For large ``sigma`` the noise is smoothed on a grid ``sigma / 2`` times coarser and upsampled with
    bicubic interpolation (OpenCV): the same look at a fraction of the cost of a filter with hundreds of taps
    at full resolution.
    """
    if sigma > 4.0:
        step = sigma / 2.0
        coarse = tuple(int(math.ceil(n / step)) + 1 for n in shape)
        f = ndimage.gaussian_filter(rng.standard_normal(coarse), 2.0, mode="reflect")
        f = cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    else:
        f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def _check_fraction(name: str, v: float, lo: float, hi: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)


class _Canvas:
    """Instance/type maps plus haematoxylin amount; nuclei are drawn into their bounding windows."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator, allowed: np.ndarray) -> None:
        self.shape = shape
        self.allowed = allowed  # nuclei only take tissue pixels
        self.rng = rng
        self.inst = np.zeros(shape, dtype=np.int32)
        self.type = np.zeros(shape, dtype=np.uint8)
        self.hema = np.zeros(shape, dtype=np.float64)
        self._centres = np.zeros((64, 3))  # (y, x, radius) of the nuclei drawn so far
        self.next_id = 1

    def far_enough(self, y: float, x: float, r: float, factor: float) -> bool:
        c = self._centres[: self.next_id - 1]
        d2 = (c[:, 0] - y) ** 2 + (c[:, 1] - x) ** 2
        return bool((d2 >= (factor * (c[:, 2] + r)) ** 2).all())

    def draw(
        self,
        y: float,
        x: float,
        *,
        a: float,
        b: float,
        angle: float,
        harmonics: Sequence[tuple[int, float, float]],
        kind: int,
        darkness: float,
        min_keep: float = 0.6,
    ) -> bool:
        """Draw one nucleus (ellipse with radial harmonics) on free pixels; False if too little is free."""
        h, w = self.shape
        reach = max(a, b) * (1.0 + sum(abs(amp) for _, amp, _ in harmonics)) + 1.0
        r0, r1 = max(0, int(y - reach)), min(h, int(math.ceil(y + reach)) + 1)
        c0, c1 = max(0, int(x - reach)), min(w, int(math.ceil(x + reach)) + 1)
        if r1 <= r0 or c1 <= c0:
            return False
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dy, dx = yy + 0.5 - y, xx + 0.5 - x
        ca, sa = math.cos(angle), math.sin(angle)
        u = dx * ca + dy * sa  # along the long axis
        v = -dx * sa + dy * ca
        phi = np.arctan2(v, u)
        scale = 1.0 + sum(amp * np.cos(k * phi + ph) for k, amp, ph in harmonics)
        rho = np.hypot(u / a, v / b) / scale
        inside = rho <= 1.0
        full = int(inside.sum())
        if full == 0:
            return False
        free = inside & (self.inst[r0:r1, c0:c1] == 0) & self.allowed[r0:r1, c0:c1]
        if free.sum() < min_keep * full:
            return False
        # chromatin: fine texture, darker rim for tumour nuclei
        texture = 1.0 + 0.28 * self.rng.standard_normal(free.shape)
        texture = ndimage.gaussian_filter(texture, 0.8)
        amount = darkness * texture
        if kind == _TUMOUR:
            amount = amount * (0.8 + 0.45 * np.clip(rho, 0, 1) ** 4)
            for _ in range(self.rng.integers(1, 3)):  # nucleoli
                ny, nx = y + self.rng.uniform(-0.4, 0.4) * b, x + self.rng.uniform(-0.4, 0.4) * b
                amount = amount + 0.7 * np.exp(-((yy + 0.5 - ny) ** 2 + (xx + 0.5 - nx) ** 2) / 2.0)
        self.inst[r0:r1, c0:c1][free] = self.next_id
        self.type[r0:r1, c0:c1][free] = kind
        self.hema[r0:r1, c0:c1][free] = amount[free]
        if self.next_id > len(self._centres):
            self._centres = np.concatenate([self._centres, np.zeros_like(self._centres)])
        self._centres[self.next_id - 1] = (y, x, 0.5 * (a + b))
        self.next_id += 1
        return True


def make_sample(
    size: int = 256,
    seed: int = 0,
    *,
    background_fraction: float = 0.15,
    tumour_fraction: float = 0.5,
    nucleus_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Make one synthetic H&E tile with region, instance and type labels.

    Args:
        size: height and width in pixels (32..4096).
        seed: random seed; the same arguments always give the same sample.
        background_fraction: approximate share of empty background, in [0, 0.9].
        tumour_fraction: approximate share of the tissue that is tumour, in [0, 1].
        nucleus_scale: multiplies all nucleus sizes, in [0.25, 4]. Lymphocytes (7 um) are 6-9 px wide at 1.0, so
            1.0 looks like ~10x, 2.0 like ~20x and 4.0 like ~40x (0.25 um/px).

    Returns:
        ``{"image": (H, W, 3) uint8, "sem": (H, W) uint8, "inst": (H, W) int32 (ids 1..n),
        "type": (H, W) uint8}`` with the classes of :data:`SYNTHETIC_SEMANTIC_CLASSES` and
        :data:`SYNTHETIC_INSTANCE_TYPES`.

    Raises:
        TypeError / ValueError: a non-integer or out-of-range argument.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 32 <= size <= 4096:
        raise ValueError(f"size must be an int in [32, 4096], got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    bg_frac = _check_fraction("background_fraction", background_fraction, 0.0, 0.9)
    tum_frac = _check_fraction("tumour_fraction", tumour_fraction, 0.0, 1.0)
    scale = _check_fraction("nucleus_scale", nucleus_scale, 0.25, 4.0)
    size = int(size)
    rng = np.random.default_rng(int(seed))
    shape = (size, size)

    # regions: smooth thresholded noise
    f_bg = _smooth_noise(rng, shape, size / 7.0)
    tissue = f_bg > np.quantile(f_bg, bg_frac) if bg_frac > 0 else np.ones(shape, dtype=bool)
    f_tum = _smooth_noise(rng, shape, size / 6.0)
    if tum_frac <= 0:
        tumour = np.zeros(shape, dtype=bool)
    elif tum_frac >= 1:
        tumour = tissue.copy()
    else:
        tumour = tissue & (f_tum > np.quantile(f_tum[tissue], 1.0 - tum_frac)) if tissue.any() else tissue
    stroma = tissue & ~tumour
    sem = np.zeros(shape, dtype=np.uint8)
    sem[tumour] = 1
    sem[stroma] = 2

    # stroma fibres along a smoothly varying direction theta (fibres run perpendicular to (cos, sin))
    theta = rng.uniform(0, math.pi) + 0.9 * _smooth_noise(rng, shape, size / 5.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    wavelength = 6.0 * scale
    phase = 2 * math.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / wavelength
    fibres = (0.5 + 0.5 * np.sin(phase + 2.5 * _smooth_noise(rng, shape, 3.0))) ** 4
    fibres *= np.clip(0.6 + 0.5 * _smooth_noise(rng, shape, 2.0), 0.0, 1.2)  # broken, uneven fibres

    # stain amounts of the regions (soft transitions)
    soft = {k: ndimage.gaussian_filter(m.astype(np.float64), 1.5) for k, m in (("t", tumour), ("s", stroma))}
    grain = _smooth_noise(rng, shape, 1.2)
    eosin = 0.04 + soft["s"] * (0.34 + 0.32 * fibres + 0.04 * grain) + soft["t"] * (0.58 + 0.08 * grain)
    hema_bg = soft["s"] * 0.05 + soft["t"] * (0.16 + 0.03 * grain)

    canvas = _Canvas(shape, rng, tissue)
    tumour_area = int(tumour.sum())
    stroma_area = int(stroma.sum())
    tissue_area = tumour_area + stroma_area

    # tumour nuclei: large, dense, dark, pleomorphic; some touching
    if tumour_area:
        ys, xs = np.nonzero(tumour)
        target = int(rng.uniform(0.36, 0.46) * tumour_area / (math.pi * (8.0 * scale) ** 2))
        for _ in range(target * 6):
            if canvas.next_id > target or len(ys) == 0:
                break
            i = rng.integers(len(ys))
            y, x = ys[i] + rng.random(), xs[i] + rng.random()
            r = rng.uniform(6.5, 10.0) * scale
            if not canvas.far_enough(y, x, r, 0.82):
                continue
            harm = [(k, rng.uniform(0.0, 0.11), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4)]
            elong = rng.uniform(1.0, 1.35)
            canvas.draw(
                y,
                x,
                a=r * math.sqrt(elong),
                b=r / math.sqrt(elong),
                angle=rng.uniform(0, math.pi),
                harmonics=harm,
                kind=_TUMOUR,
                darkness=rng.uniform(1.05, 1.35),
                min_keep=0.75,
            )

    # spindle "other" nuclei in stroma, aligned with the fibres
    if stroma_area:
        ys, xs = np.nonzero(stroma)
        target = int(stroma_area / (rng.uniform(900.0, 1400.0) * scale**2))
        placed = 0
        for _ in range(target * 8):
            if placed >= target:
                break
            i = rng.integers(len(ys))
            y, x = ys[i] + rng.random(), xs[i] + rng.random()
            a, b = rng.uniform(8.0, 13.0) * scale, rng.uniform(2.2, 3.2) * scale
            if not canvas.far_enough(y, x, 0.5 * (a + b), 1.0):
                continue
            angle = float(theta[ys[i], xs[i]]) + math.pi / 2
            harm = [(2, rng.uniform(0.0, 0.06), rng.uniform(0, 2 * math.pi))]
            placed += canvas.draw(
                y, x, a=a, b=b, angle=angle, harmonics=harm, kind=_OTHER, darkness=rng.uniform(0.95, 1.2)
            )

    # lymphocytes (TIL): small, round, very dark; denser near the tumour/stroma border
    if tissue_area:
        if tumour_area and stroma_area:
            border_dist = np.where(
                tumour, ndimage.distance_transform_edt(tumour), ndimage.distance_transform_edt(~tumour)
            )
            weight = (0.12 + np.exp(-border_dist / (14.0 * scale))) * tissue
        else:
            weight = tissue.astype(np.float64)
        p = weight.ravel() / weight.sum()
        target = int(tissue_area / (rng.uniform(500.0, 1000.0) * scale**2))
        picks = rng.choice(p.size, size=target * 4, p=p)
        placed = 0
        for idx in picks:
            if placed >= target:
                break
            y, x = idx // size + rng.random(), idx % size + rng.random()
            r = rng.uniform(3.2, 4.4) * scale
            if not canvas.far_enough(y, x, r, 0.95):
                continue
            harm = [(2, rng.uniform(0.0, 0.05), rng.uniform(0, 2 * math.pi))]
            placed += canvas.draw(
                y, x, a=r, b=r * rng.uniform(0.88, 1.0), angle=rng.uniform(0, math.pi), harmonics=harm,
                kind=_TIL, darkness=rng.uniform(1.6, 1.95), min_keep=0.85,
            )  # fmt: skip

    nuclei = canvas.inst > 0
    hema = np.where(nuclei, canvas.hema, hema_bg)
    eosin = np.where(nuclei, 0.35 * eosin, eosin)
    hema = ndimage.gaussian_filter(hema, 0.7)
    eosin = ndimage.gaussian_filter(eosin, 0.7)
    od = hema[..., None] * _H_OD + eosin[..., None] * _E_OD
    rgb = 255.0 * np.power(10.0, -od) * 0.97 + rng.normal(0.0, 2.5, (*shape, 3))
    image = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return {"image": image, "sem": sem, "inst": canvas.inst, "type": canvas.type}


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    *,
    num_images: int = 10,
    size: int = 256,
    seed: int = 0,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    overwrite: bool = False,
    **sample_kwargs: Any,
) -> dict[str, Any]:
    """Write synthetic samples in the layout of :mod:`coseg.histo.prepare`.

    Each image is its own group; the split is :func:`coseg.data.split.split_groups` with ``ratios`` and
    ``seed``. Image ``i`` uses a seed drawn from ``seed``, so the dataset is reproducible.

    Args:
        out_dir: folder to create (``images/``, ``labels_sem/``, ``labels_inst/``, ``labels_type/``,
            ``datalist.json``, ``dataset.json``).
        num_images: number of samples (>= 1).
        size: tile size.
        seed: dataset seed.
        ratios: train / validation / test shares.
        overwrite: replace a non-empty ``out_dir``.
        **sample_kwargs: further :func:`make_sample` arguments.

    Returns:
        The ``dataset.json`` content.

    Raises:
        ValueError: bad arguments; FileExistsError: ``out_dir`` not empty without ``overwrite``.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=int(num_images))
    names = [f"synthetic_{i:04d}" for i in range(int(num_images))]
    parts = split_groups(names, None, ratios, seed)
    split_of = {n: s for s, members in parts.items() for n in members}
    info = {
        "format": "synthetic",
        "source": "coseg.histo.synthetic (generated)",
        "magnification": f"{10 * float(sample_kwargs.get('nucleus_scale', 1.0)):g}x (approximate, from nucleus sizes)",
        "semantic_classes": {str(k): v for k, v in SYNTHETIC_SEMANTIC_CLASSES.items()},
        "instance_types": {str(k): v for k, v in SYNTHETIC_INSTANCE_TYPES.items()},
        "semantic_labels": "annotation",
        "generator": {"size": int(size), "seed": int(seed), **sample_kwargs},
    }
    meta = {"name": Path(out_dir).name, "format": "synthetic", "split": {"method": "seeded", "seed": seed}}
    with LayoutWriter(out_dir, overwrite=overwrite) as writer:
        for name, s in zip(names, seeds):
            d = make_sample(size, int(s), **sample_kwargs)
            sample = HistoSample(name, d["image"], d["sem"], d["inst"], d["type"], source=name)
            writer.add(sample, split_of[name], name)
        return writer.finish(info, meta)
