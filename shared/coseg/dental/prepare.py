"""Turn a ToothFairy2-style CBCT dataset into 2D training slices for Co-Seg++.

Usage::

    python -m coseg.dental.prepare --input TOOTHFAIRY2_DIR --output DIR [--axis axial|coronal|sagittal]
        [--window -1000 4000] [--size 256] [--skip-empty] [--channels repeat|adjacent] [--seed 0]
        [--ratios 0.7 0.1 0.2] [--label-map MAP.json] [--unknown-labels error|background]
        [--on-bad-case error|skip] [--overwrite]

Output (the layout of :mod:`coseg.histo.prepare`)::

    DIR/images/<case>_<axis>_<slice>.png       RGB uint8 (windowed scan; channels: repeat or adjacent slices)
    DIR/labels_sem/<...>.png                   uint8: 0 background, 1 lower jawbone, 2 upper jawbone, 3 pharynx
    DIR/labels_inst/<...>.png                  uint16: tooth instances, id = FDI number
    DIR/labels_type/<...>.png                  uint8: tooth types, "fdi" scheme: 0 background, k = FDI_TEETH[k - 1]
    DIR/dataset.json                           class names, tooth type scheme, label mapping, slicing settings
    DIR/datalist.json                          {"training", "validation", "test": [items], "cases": {...}}

Tooth types are written in the ``"fdi"`` scheme (one class per FDI number,
:data:`coseg.dental.labels.FDI_INSTANCE_TYPES`), which holds everything: a bundle that types teeth by jaw
(``tooth_types: "jaw"``) maps them on load (:class:`coseg.dental.transforms.ToothTypesd`). ``dataset.json`` records
the scheme (``"tooth_types": "fdi"``) and its ``instance_types``, which the bundle checks
(:func:`coseg.dental.transforms.check_tooth_types`).

Slices follow :class:`coseg.dental.geometry.SliceGeometry` (anatomical axis from the affine; resize keeping the
physical aspect ratio, then pad to a square); ``datalist.json`` stores each case's geometry under ``cases``
so predictions can be put back on the volume grid. The split is 7:1:2 by patient
(:func:`coseg.data.split.split_groups` with the case ids as groups; a warning says when too few cases leave
the validation or test split empty, and ``datalist.json`` lists them under ``empty_splits``). One volume is in
memory at a time.

Like :mod:`coseg.histo.prepare`, the run is atomic (:class:`coseg.io.StagedDir`): everything is written into a
hidden folder beside ``DIR`` that is renamed to ``DIR`` only when complete, so a failed or killed run leaves no
partial dataset under ``DIR``, and a non-empty ``DIR`` is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from coseg.data.split import empty_subsets, split_groups
from coseg.dental.geometry import SLICE_AXES, make_model_slices, slice_geometry
from coseg.dental.labels import INSTANCE_TYPES, SEMANTIC_CLASSES, CbctLabelMap, build_label_map, tooth_type_names
from coseg.dental.outputs import write_png
from coseg.dental.volumes import CbctCase, find_toothfairy2_cases, read_case
from coseg.errors import InputFileError, install_excepthook
from coseg.io import StagedDir, write_json

__all__ = ["prepare_cbct", "main", "DATASET_TOOTH_TYPES"]

#: The tooth type scheme of the ``labels_type`` slices that :func:`prepare_cbct` writes.
DATASET_TOOTH_TYPES = "fdi"

logger = logging.getLogger(__name__)

_FOLDERS = ("images", "labels_sem", "labels_inst", "labels_type")


def _slices_of_case(
    case: CbctCase,
    label_map: CbctLabelMap,
    out_dir: Path,
    *,
    axis: str,
    size: int,
    window: Sequence[float],
    channels: Literal["repeat", "adjacent"],
    skip_empty: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any], Counter]:
    image, label = read_case(case)
    sem, inst, types = label_map.apply(label.array, path=label.path, tooth_types=DATASET_TOOTH_TYPES)
    del label
    geometry = slice_geometry(image.array.shape, image.affine, axis=axis, size=size)
    sem_m = geometry.to_model(sem, kind="label")
    inst_m = geometry.to_model(inst, kind="label")
    type_m = geometry.to_model(types, kind="label")
    del sem, inst, types
    keep = [n for n in range(geometry.num_slices) if not skip_empty or sem_m[n].any() or inst_m[n].any()]
    images = make_model_slices(image.array, geometry, window=window, channels=channels, slice_indices=keep)
    stats: Counter = Counter()
    items = []
    for k, n in enumerate(keep):
        name = f"{case.case_id}_{axis}_{n:04d}"
        write_png(out_dir / "images" / f"{name}.png", images[k])
        write_png(out_dir / "labels_sem" / f"{name}.png", sem_m[n])
        write_png(out_dir / "labels_inst" / f"{name}.png", inst_m[n].astype(np.uint16))
        write_png(out_dir / "labels_type" / f"{name}.png", type_m[n])
        items.append(
            {
                "image": f"images/{name}.png",
                "label_sem": f"labels_sem/{name}.png",
                "label_inst": f"labels_inst/{name}.png",
                "label_type": f"labels_type/{name}.png",
                "group": case.case_id,
                "case": case.case_id,
                "slice": n,
            }
        )
    for cls, count in zip(*np.unique(sem_m[keep], return_counts=True)):
        stats[f"sem_pixels_{SEMANTIC_CLASSES[int(cls)]}"] += int(count)
    teeth = np.unique(inst_m)
    for fdi in teeth[teeth > 0]:
        stats[f"teeth_{INSTANCE_TYPES[1 if int(fdi) // 10 in (1, 2) else 2]}"] += 1
    case_info = {
        "image": os.fspath(case.image),
        "label": os.fspath(case.label),
        "affine": np.asarray(image.affine).round(6).tolist(),
        "geometry": geometry.to_dict(),
        "num_slices_written": len(keep),
    }
    return items, case_info, stats


def prepare_cbct(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    axis: Literal["axial", "coronal", "sagittal"] = "axial",
    window: Sequence[float] = (-1000.0, 4000.0),
    size: int = 256,
    skip_empty: bool = False,
    channels: Literal["repeat", "adjacent"] = "repeat",
    seed: int = 0,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    label_overrides: Mapping[str, str | int] | None = None,
    unknown_labels: Literal["error", "background"] = "error",
    on_bad_case: Literal["error", "skip"] = "error",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert a ToothFairy2-style dataset (nnU-Net raw layout) to 2D slices and a patient-wise split.

    Args:
        input_dir: folder with ``imagesTr``, ``labelsTr`` and ``dataset.json``.
        output_dir: output folder (see the module docstring for the layout).
        axis: anatomical slicing plane.
        window: intensity window ``(low, high)`` mapped to 0..255.
        size: side of the square slices.
        skip_empty: leave out slices without any semantic region or tooth.
        channels: ``"repeat"`` (2D, the paper's setting) or ``"adjacent"`` (2.5D: slices n-1, n, n+1 as RGB).
        seed: seed of the split.
        ratios: training / validation / test shares (split by case).
        label_overrides: label name -> target, see :func:`coseg.dental.labels.build_label_map`.
        unknown_labels: ``"error"`` or ``"background"`` for names that are neither known structures nor teeth.
        on_bad_case: ``"error"`` stops at the first bad case; ``"skip"`` logs it, leaves it out and lists it
            under ``skipped_cases`` in ``datalist.json``.
        overwrite: replace a non-empty output folder (only once the new dataset is complete).
        progress: show a tqdm progress bar.

    Returns:
        the datalist (as written to ``datalist.json``).

    Raises:
        InputFileError: on bad inputs (with ``on_bad_case="error"`` for per-case problems).
        FileExistsError: if ``output_dir`` is a non-empty folder (or a file) and ``overwrite`` is false; raised
            before any case is read.
        ValueError: on bad arguments or when no slice was produced.
    """
    if axis not in SLICE_AXES:
        raise ValueError(f"axis must be one of {sorted(SLICE_AXES)}, got {axis!r}")
    if channels not in ("repeat", "adjacent"):
        raise ValueError(f"channels must be 'repeat' or 'adjacent', got {channels!r}")
    if on_bad_case not in ("error", "skip"):
        raise ValueError(f"on_bad_case must be 'error' or 'skip', got {on_bad_case!r}")
    if len(ratios) != 3:
        raise ValueError(f"ratios must be 3 numbers (training, validation, test), got {list(ratios)}")
    if len(window) != 2 or float(window[0]) >= float(window[1]):
        raise ValueError(f"window must be (low, high) with low < high, got {list(window)}")
    input_dir = Path(input_dir)
    stage = StagedDir(output_dir, overwrite=overwrite)  # refuses a non-empty output folder before any work
    cases = find_toothfairy2_cases(input_dir)
    label_map = build_label_map(input_dir / "dataset.json", overrides=label_overrides, unknown=unknown_labels)
    with stage:
        out = stage.path
        for folder in _FOLDERS:
            (out / folder).mkdir()
        items: list[dict[str, Any]] = []
        case_infos: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        stats: Counter = Counter()
        for case in tqdm(cases, desc="prepare_cbct", unit="case", disable=not progress):
            try:
                case_items, info, case_stats = _slices_of_case(
                    case, label_map, out, axis=axis, size=size, window=window, channels=channels, skip_empty=skip_empty
                )
            except InputFileError as exc:
                if on_bad_case == "error":
                    raise
                logger.warning("skipping case %s: %s", case.case_id, exc)
                skipped[case.case_id] = str(exc)
                continue
            items.extend(case_items)
            case_infos[case.case_id] = info
            stats.update(case_stats)
        if not items:
            raise ValueError(f"no slices were produced from {input_dir} (all cases skipped or empty)")

        names = [it["image"] for it in items]
        split = split_groups(names, [it["group"] for it in items], ratios=ratios, seed=seed)
        empty = empty_subsets(split, ratios)
        if empty:
            logger.warning(
                "%s: the %s split(s) are empty: %d case(s) cannot fill %d subsets (%d skipped); the datalist is "
                "written, but training without validation cases selects no best model",
                stage.target,
                " and ".join(empty),
                len(case_infos),
                sum(float(r) > 0 for r in ratios),
                len(skipped),
            )
        by_image = {it["image"]: it for it in items}
        datalist: dict[str, Any] = {
            key: [by_image[n] for n in split[key]] for key in ("training", "validation", "test")
        }
        datalist["cases"] = case_infos
        datalist["skipped_cases"] = skipped
        datalist["empty_splits"] = empty
        datalist["meta"] = {
            "source": os.fspath(input_dir),
            "format": "toothfairy2",
            "axis": axis,
            "window": [float(v) for v in window],
            "size": int(size),
            "channels": channels,
            "skip_empty": bool(skip_empty),
            "seed": int(seed),
            "ratios": [float(r) for r in ratios],
            "split_by": "case",
        }
        dataset = {
            "semantic_classes": {str(k): v for k, v in SEMANTIC_CLASSES.items()},
            "tooth_types": DATASET_TOOTH_TYPES,
            "instance_types": {str(k): v for k, v in tooth_type_names(DATASET_TOOTH_TYPES).items()},
            "format": "toothfairy2",
            "source": os.fspath(input_dir),
            "label_kinds": ["sem", "inst", "type"],
            "instance_ids": "FDI tooth number",
            "label_mapping": label_map.describe(),
            "slicing": {k: datalist["meta"][k] for k in ("axis", "window", "size", "channels", "skip_empty")},
            "modality": "CBCT",
        }
        write_json(out / "dataset.json", dataset)
        write_json(out / "datalist.json", datalist)
        stage.commit()
    _print_summary(datalist, stats)
    return datalist


def _print_summary(datalist: Mapping[str, Any], stats: Counter) -> None:
    for key in ("training", "validation", "test"):
        cases = sorted({it["case"] for it in datalist[key]})
        print(f"{key:>10}: {len(cases):4d} cases, {len(datalist[key]):6d} slices")
    if datalist["skipped_cases"]:
        print(f"   skipped: {len(datalist['skipped_cases'])} cases (see datalist.json 'skipped_cases')")
    if datalist.get("empty_splits"):
        print(f"   warning: empty {' and '.join(datalist['empty_splits'])} split(s)")
    for key in sorted(stats):
        print(f"  {key}: {stats[key]}")


def _parse_overrides(value: str | None) -> dict[str, str | int] | None:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(value, f"--label-map is neither a JSON file nor inline JSON ({exc})") from exc
    if not isinstance(overrides, dict):
        raise InputFileError(value, "--label-map must be a JSON object {label name: target}")
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m coseg.dental.prepare",
        description="Slice a ToothFairy2-style CBCT dataset (nnU-Net raw layout) into 2D Co-Seg++ training data.",
    )
    parser.add_argument("--input", required=True, help="folder with imagesTr, labelsTr and dataset.json")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--axis", choices=sorted(SLICE_AXES), default="axial", help="anatomical slicing plane")
    parser.add_argument("--window", nargs=2, type=float, default=(-1000.0, 4000.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--size", type=int, default=256, help="side of the square slices (pixels)")
    parser.add_argument("--skip-empty", action="store_true", help="leave out slices without regions or teeth")
    parser.add_argument("--channels", choices=("repeat", "adjacent"), default="repeat")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient-wise split")
    parser.add_argument("--ratios", nargs=3, type=float, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument(
        "--label-map",
        default=None,
        help='JSON file or inline JSON {label name: target}, e.g. \'{"Crown": "attach", "Implant": "background"}\'',
    )
    parser.add_argument("--unknown-labels", choices=("error", "background"), default="error")
    parser.add_argument("--on-bad-case", choices=("error", "skip"), default="error")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare_cbct(
            args.input,
            args.output,
            axis=args.axis,
            window=args.window,
            size=args.size,
            skip_empty=args.skip_empty,
            channels=args.channels,
            seed=args.seed,
            ratios=args.ratios,
            label_overrides=_parse_overrides(args.label_map),
            unknown_labels=args.unknown_labels,
            on_bad_case=args.on_bad_case,
            overwrite=args.overwrite,
        )
    except (InputFileError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
