"""Convert a raw 2D histology dataset into the project's layout (``python -m coseg.histo.prepare``).

Example::

    python -m coseg.histo.prepare --format puma --input /data/puma_raw --output /data/puma
    python -m coseg.histo.prepare --format glas --input "/data/Warwick QU Dataset" --output /data/glas \\
        --split official

The layout, ``datalist.json`` and ``dataset.json`` are described in :mod:`coseg.histo.layout`; the
raw formats and class maps in :mod:`coseg.histo.formats`.

Splits:

- ``seeded`` (default): whole groups (patients, or source images of tiles) are dealt to
  training / validation / test by :func:`coseg.data.split.split_groups` with ``--ratios`` (default
  0.7 0.1 0.2, the paper's 7:1:2) and ``--seed``.
- ``official`` (``glas``, ``crag``): the official test subsets go to ``test``; the official training
  subset is split by groups into ``training`` and ``validation`` in the proportion of the first two ratios.
  Each item records its official ``subset``.

Semantic maps for formats without region labels (``--derive-sem``, recorded in ``dataset.json`` as
``semantic_labels``): ``foreground`` (default): class 1 = "nucleus" wherever an object is; ``type``: the
object type map doubles as the semantic map (same class names); ``none``: no semantic map. Formats whose
instance maps come without types get type 1 (``nucleus`` / ``gland``) for every object.

Empty annotations: a PUMA GeoJSON without any feature, or a GlaS / CRAG gland map without any gland, is an
error (as a missing file is) unless ``--allow-empty``; ``consep_tiles`` and ``folder`` accept all-zero maps
(tiles without objects are common). The summary counts the images without objects and without regions, and
a warning says when a split meant to hold images (positive ratio) ends up empty.

Every input is read and checked while the output is written into a hidden temporary folder beside
``--output``, which is renamed into place only at the end: a failed run leaves no partial dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from coseg.data.split import empty_subsets, split_groups
from coseg.errors import InputFileError, install_excepthook
from coseg.histo.formats import FORMATS, FormatOptions, HistoFormat, RawCase
from coseg.histo.layout import SPLIT_NAMES, HistoSample, LayoutWriter, format_summary

__all__ = ["prepare_dataset", "assign_splits", "main", "DERIVE_SEM_OPTIONS", "SPLIT_OPTIONS"]

logger = logging.getLogger(__name__)

DERIVE_SEM_OPTIONS = ("foreground", "type", "none")
SPLIT_OPTIONS = ("seeded", "official")
FOREGROUND_NAME = "nucleus"


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(not math.isfinite(x) or x < 0 for x in r) or sum(r) <= 0:
        raise ValueError(
            f"ratios must be three non-negative numbers (train, val, test) with a positive sum, got {ratios}"
        )
    return r  # type: ignore[return-value]


def assign_splits(
    cases: Sequence[RawCase],
    *,
    method: str = "seeded",
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    official_subsets: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Decide the split of every case.

    Args:
        cases: the cases (names unique).
        method: ``"seeded"`` or ``"official"``.
        ratios: ``(train, val, test)`` shares; with ``"official"`` only the first two matter.
        seed: seed of the group shuffle.
        official_subsets: official subset -> ``"training"`` / ``"test"`` (needed for ``"official"``).

    Returns:
        ``{case name: "training" | "validation" | "test"}``.

    Raises:
        ValueError: unknown method, bad ratios, a format without an official split, a case without an
            official subset, or an official training subset with a zero train+val ratio.
    """
    if method not in SPLIT_OPTIONS:
        raise ValueError(f"split must be one of {SPLIT_OPTIONS}, got {method!r}")
    r = _check_ratios(ratios)
    names = [c.name for c in cases]
    groups = [c.group for c in cases]
    if method == "seeded":
        parts = split_groups(names, groups, r, seed, SPLIT_NAMES)
        return {n: split for split, members in parts.items() for n in members}
    if not official_subsets:
        raise ValueError("this format has no official split; use split='seeded'")
    out: dict[str, str] = {}
    train_cases = []
    for c in cases:
        if c.subset not in official_subsets:
            raise ValueError(f"case {c.name!r} belongs to no official subset ({sorted(official_subsets)})")
        if official_subsets[c.subset] == "test":
            out[c.name] = "test"
        else:
            train_cases.append(c)
    if train_cases:
        if r[0] + r[1] <= 0:
            raise ValueError("official split: the train and validation ratios are both 0")
        parts = split_groups(
            [c.name for c in train_cases], [c.group for c in train_cases], (r[0], r[1]), seed, SPLIT_NAMES[:2]
        )
        out.update({n: split for split, members in parts.items() for n in members})
    return out


def _derive(sample: HistoSample, derive_sem: str) -> HistoSample:
    if sample.inst is not None and sample.type is None:
        sample.type = (np.asarray(sample.inst) > 0).astype(np.uint8)
    if sample.sem is None and sample.inst is not None:
        if derive_sem == "foreground":
            sample.sem = (np.asarray(sample.inst) > 0).astype(np.uint8)
        elif derive_sem == "type":
            sample.sem = np.asarray(sample.type).astype(np.uint8)
    return sample


def prepare_dataset(
    fmt: str,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    split: str = "seeded",
    seed: int = 0,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    class_map: Mapping[str, Any] | None = None,
    derive_sem: str = "foreground",
    gland_types: str = "gland",
    group_regex: str | None = None,
    images_dir: str = "images",
    sem_dir: str = "sem",
    inst_dir: str = "inst",
    type_dir: str = "type",
    touching_gap: bool = False,
    allow_empty: bool = False,
    mpp: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert ``input_dir`` (raw dataset of format ``fmt``) into the layout at ``output_dir``.

    Args:
        fmt: one of :data:`coseg.histo.formats.FORMATS` (``puma``, ``glas``, ``crag``,
            ``consep_tiles``, ``folder``).
        input_dir: raw dataset folder.
        output_dir: layout folder to create.
        split: ``"seeded"`` or ``"official"`` (see the module docstring).
        seed: seed of the group shuffle.
        ratios: train / validation / test shares.
        class_map: parsed class-map JSON (see :mod:`coseg.histo.formats`).
        derive_sem: ``"foreground"``, ``"type"`` or ``"none"`` for formats without region labels.
        gland_types: ``glas``: ``"gland"`` or ``"grade"``.
        group_regex: regular expression whose first group gives a case's group (patient / source image).
        images_dir / sem_dir / inst_dir / type_dir: ``folder`` sub-folder names.
        touching_gap: ``puma``: 1-pixel gap between touching nuclei.
        allow_empty: ``puma``, ``glas``, ``crag``: accept annotation files without any object or region (an
            empty GeoJSON, an all-zero gland map) with a warning instead of an error; the summary counts the
            images without objects and without regions.
        mpp: microns per pixel, recorded in ``dataset.json`` when given.
        overwrite: replace an existing non-empty ``output_dir``.
        progress: show a tqdm progress bar.

    Returns:
        The ``dataset.json`` content (class names, statistics, ...).

    Raises:
        ValueError: bad options (unknown format, split or derive option, ratios, ...).
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is false.
        InputFileError: any problem with an input file (named in the message).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if split not in SPLIT_OPTIONS:
        raise ValueError(f"split must be one of {SPLIT_OPTIONS}, got {split!r}")
    _check_ratios(ratios)
    if derive_sem not in DERIVE_SEM_OPTIONS:
        raise ValueError(f"derive_sem must be one of {DERIVE_SEM_OPTIONS}, got {derive_sem!r}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number, got {mpp}")
    options = FormatOptions(
        class_map=class_map,
        gland_types=gland_types,
        group_regex=group_regex,
        images_dir=images_dir,
        sem_dir=sem_dir,
        inst_dir=inst_dir,
        type_dir=type_dir,
        touching_gap=touching_gap,
        allow_empty=allow_empty,
    )
    reader: HistoFormat = FORMATS[fmt](input_dir, options)
    cases = reader.discover()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputFileError(input_dir, f"several cases share output names {dup[:5]}")
    splits = assign_splits(cases, method=split, ratios=ratios, seed=seed, official_subsets=reader.official_subsets)
    wanted = _check_ratios(ratios) if split == "seeded" else (*_check_ratios(ratios)[:2], 1.0)
    empty = empty_subsets({s: [n for n, v in splits.items() if v == s] for s in SPLIT_NAMES}, wanted)
    if empty:
        logger.warning(
            "%s: the %s split(s) will be empty (%d cases in %d groups); training without validation images "
            "selects no best model, and nothing is left to evaluate without test images",
            output_dir,
            " and ".join(empty),
            len(cases),
            len({c.group for c in cases}),
        )
    info = reader.dataset_info()
    if "sem" in reader.provides:
        info["semantic_labels"] = "annotation"
    elif "inst" in reader.provides and derive_sem != "none":
        info["semantic_labels"] = f"derived_{derive_sem}"
        if derive_sem == "foreground":
            info["semantic_classes"] = {"0": "background", "1": FOREGROUND_NAME}
        else:  # the type map doubles as the semantic map
            info["semantic_classes"] = info.get("instance_types")
    else:
        info["semantic_labels"] = "none"
    if "inst" in reader.provides and "type" not in reader.provides:
        info["instance_types"] = {"0": "background", "1": reader.object_name}
    info["derive_sem"] = derive_sem
    info["allow_empty"] = bool(allow_empty)
    if mpp is not None:
        info["mpp"] = float(mpp)
    meta = {
        "name": Path(output_dir).name,
        "format": fmt,
        "input": str(Path(input_dir).absolute()),
        "split": {"method": split, "seed": seed, "ratios": list(_check_ratios(ratios))},
    }
    with LayoutWriter(output_dir, overwrite=overwrite) as writer:
        for case in tqdm(cases, desc=f"prepare {fmt}", unit="img", disable=not progress):
            sample = _derive(case.load(), derive_sem)
            extra = {"subset": case.subset} if case.subset is not None else {}
            writer.add(sample, splits[case.name], case.group, **extra)
        info = writer.finish(info, meta)
    logger.info("wrote %d images to %s", sum(info["statistics"]["images"].values()), output_dir)
    return info


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coseg.histo.prepare",
        description="Convert a raw histology dataset into images/ labels_sem/ labels_inst/ labels_type/ "
        "+ datalist.json + dataset.json.",
    )
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="raw dataset format")
    p.add_argument("--input", required=True, type=Path, help="raw dataset folder")
    p.add_argument("--output", required=True, type=Path, help="output folder (must be empty or absent)")
    p.add_argument("--split", choices=SPLIT_OPTIONS, default="seeded", help="seeded group split or official")
    p.add_argument("--seed", type=int, default=0, help="seed of the group shuffle (default 0)")
    p.add_argument("--ratios", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--class-map", type=Path, help="JSON class map (see coseg.histo.formats)")
    p.add_argument("--derive-sem", choices=DERIVE_SEM_OPTIONS, default="foreground")
    p.add_argument("--gland-types", choices=("gland", "grade"), default="gland", help="glas: type per gland")
    p.add_argument("--group-regex", help="regex on case names; group 1 = patient / source image")
    p.add_argument("--images-dir", default="images", help="folder: image sub-folder")
    p.add_argument("--sem-dir", default="sem", help="folder: semantic label sub-folder")
    p.add_argument("--inst-dir", default="inst", help="folder: instance label sub-folder")
    p.add_argument("--type-dir", default="type", help="folder: type label sub-folder")
    p.add_argument("--touching-gap", action="store_true", help="puma: 1-pixel gap between touching nuclei")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="puma/glas/crag: accept annotation files without any object or region (counted in the summary)",
    )
    p.add_argument("--mpp", type=float, help="microns per pixel to record in dataset.json")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 bad input, 2 bad options)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    class_map = None
    try:
        if args.class_map is not None:
            try:
                class_map = json.loads(args.class_map.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputFileError(args.class_map, f"cannot be read as JSON ({exc})") from exc
        info = prepare_dataset(
            args.format,
            args.input,
            args.output,
            split=args.split,
            seed=args.seed,
            ratios=args.ratios,
            class_map=class_map,
            derive_sem=args.derive_sem,
            gland_types=args.gland_types,
            group_regex=args.group_regex,
            images_dir=args.images_dir,
            sem_dir=args.sem_dir,
            inst_dir=args.inst_dir,
            type_dir=args.type_dir,
            touching_gap=args.touching_gap,
            allow_empty=args.allow_empty,
            mpp=args.mpp,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except InputFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(info))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
