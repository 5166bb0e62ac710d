"""Helpers the bundle configs call: where the bundle is, and which data it reads."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "find_bundle_root",
    "histo_datalist",
    "read_datalist",
    "image_datalist",
    "dataset_classes",
    "check_dataset_classes",
    "trainable_parameters",
]

logger = logging.getLogger(__name__)


def _bundle_name(path: Path) -> str | None:
    meta = path / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError):
        return None


def find_bundle_root(name: str) -> str:
    """Absolute path of the bundle called ``name``, independent of the working directory.

    Looked up, in order: (1) a packaged bundle that vendors this ``coseg`` (``<bundle>/coseg``) or a sibling
    bundle extracted beside it; (2) ``<repository>/bundles/<name>`` when ``coseg`` is installed from this
    repository's ``shared/``; (3) the working directory if it is that bundle. Configs may always override
    ``bundle_root`` on the command line (``--bundle_root DIR``), as MONAI Label does.

    Raises:
        FileNotFoundError: when no bundle of that name is found.
    """
    package = Path(__file__).resolve().parents[1]  # .../coseg
    candidates = [package.parent, package.parent.parent / name, package.parents[1] / "bundles" / name]
    candidates.append(Path.cwd())
    for path in candidates:
        if _bundle_name(path) == name:
            return str(path)
    raise FileNotFoundError(
        f"cannot find the bundle {name!r} (looked in {', '.join(str(c) for c in candidates)}); "
        "pass --bundle_root /path/to/bundle"
    )


def dataset_classes(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The class names of a prepared dataset (its ``dataset.json``), or ``{}`` when it has none."""
    path = Path(dataset_dir) / "dataset.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def histo_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    *,
    synthesize: bool = False,
    num_images: int = 24,
    image_size: int = 256,
    seed: int = 0,
    nucleus_scale: float = 1.0,
    fraction: float = 1.0,
    fraction_seed: int = 0,
) -> list[dict[str, Any]]:
    """Items of one split of a prepared histology dataset (``datalist.json`` of ``coseg.data.prepare_histo``).

    Args:
        dataset_dir: the prepared dataset folder.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        synthesize: when ``dataset_dir`` holds no ``datalist.json``, write a synthetic H&E dataset there first
            (:func:`coseg.data.synthetic_histo.write_synthetic_dataset`): the quickstart's embedded sample.
        num_images, image_size, seed, nucleus_scale: of the synthetic dataset; an existing synthetic dataset made
            with other settings is regenerated.
        fraction, fraction_seed: see :func:`read_datalist`.

    Raises:
        FileNotFoundError: no datalist and ``synthesize`` is off (the message says how to make one).
    """
    root = Path(dataset_dir).expanduser()
    datalist = root / "datalist.json"
    wanted = {"size": int(image_size), "seed": int(seed), "nucleus_scale": float(nucleus_scale)}
    stale = synthesize and datalist.is_file() and dataset_classes(root).get("generator") not in (None, wanted)
    if not datalist.is_file() or stale:
        if not synthesize:
            raise FileNotFoundError(
                f"{root}: no datalist.json. Prepare a dataset with `python -m coseg.data.prepare_histo --format "
                f"... --input RAW --output {root}`, or run the quickstart preset (configs/quickstart.json) "
                "which synthesizes a sample."
            )
        from coseg.data.synthetic_histo import write_synthetic_dataset

        logger.warning("no dataset in %s: writing a synthetic H&E sample of %d images there", root, num_images)
        write_synthetic_dataset(
            root, num_images=num_images, size=image_size, seed=seed, nucleus_scale=nucleus_scale, overwrite=True
        )
    return read_datalist(root, split, fraction=fraction, fraction_seed=fraction_seed)


def read_datalist(
    dataset_dir: str | os.PathLike, split: str, *, fraction: float = 1.0, fraction_seed: int = 0
) -> list[dict[str, Any]]:
    """Items of one split of a prepared 2D dataset's ``datalist.json`` (histology images or CBCT slices).

    Args:
        dataset_dir: the prepared dataset folder.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        fraction: keep this fraction of the split (nested seeded subsets: the 10 % subset is inside the 30 %
            one), for limited-annotation experiments.
        fraction_seed: seed of that subsampling.

    Returns:
        MONAI datalist items with absolute paths.

    Raises:
        FileNotFoundError: no ``datalist.json``.
        ValueError: an unknown split or a fraction outside (0, 1].
    """
    root = Path(dataset_dir).expanduser()
    datalist = root / "datalist.json"
    if not datalist.is_file():
        raise FileNotFoundError(f"{root}: no datalist.json (prepare the dataset first)")
    content = json.loads(datalist.read_text(encoding="utf-8"))
    if split not in content:
        raise ValueError(
            f"{datalist}: no split {split!r}; it has {[k for k in content if isinstance(content[k], list)]}"
        )
    items = [_absolute(item, root) for item in content[split]]
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1.0 and items:
        order = np.random.default_rng(fraction_seed).permutation(len(items))
        keep = max(1, int(round(fraction * len(items))))
        items = [items[i] for i in sorted(order[:keep])]
    return items


#: datalist entries that hold file paths (relative to the dataset folder)
PATH_KEYS = ("image", "label", "label_sem", "label_inst", "label_type")


def _absolute(item: dict[str, Any], root: Path) -> dict[str, Any]:
    out = dict(item)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = str((root / out[key]).resolve())
    return out


#: image file suffixes that inference picks up from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def image_datalist(inputs: str | os.PathLike | list[str], *, split: str = "test") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for inference: one image file, a folder of images, a list of files, or a prepared
    dataset folder (with ``datalist.json``: the images of ``split``).

    Raises:
        FileNotFoundError: a missing path, or a folder without images.
    """
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
    else:
        root = Path(inputs).expanduser()
        if (root / "datalist.json").is_file():
            return [{"image": item["image"]} for item in histo_datalist(root, split)]
        if root.is_dir():
            paths = sorted(
                p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not paths:
                raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        else:
            paths = [root]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    return [{"image": str(p.resolve())} for p in paths]


def check_dataset_classes(
    dataset_dir: str | os.PathLike, sem_classes: dict[Any, str], inst_types: dict[Any, str]
) -> None:
    """Fail early when a prepared dataset's class lists (``dataset.json``) differ from the bundle's.

    Raises:
        ValueError: the numbers of classes differ (names may differ; they are only logged).
    """
    info = dataset_classes(dataset_dir)
    for key, ours in (("semantic_classes", sem_classes), ("instance_types", inst_types)):
        theirs = info.get(key)
        if theirs is None:
            continue
        if len(theirs) != len(ours):
            raise ValueError(
                f"{dataset_dir}/dataset.json has {len(theirs)} {key} {dict(theirs)} but the bundle is configured for "
                f"{len(ours)} {dict(ours)}; override sem_classes / inst_types to match the data"
            )
        if [str(v) for v in theirs.values()] != [str(v) for v in ours.values()]:
            logger.warning("class names of %s differ from the bundle's: %s vs %s", key, dict(theirs), dict(ours))


def trainable_parameters(network: Any) -> list[Any]:
    """The parameters that require gradients (the frozen SAM2 trunk is left out of the optimizer)."""
    return [p for p in network.parameters() if p.requires_grad]
