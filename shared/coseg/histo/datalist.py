"""Histology datalists: prepared datasets (with the embedded synthetic sample) and images for inference."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from coseg.data.datalist import dataset_classes, read_datalist

__all__ = ["histo_datalist", "IMAGE_SUFFIXES", "image_datalist"]

logger = logging.getLogger(__name__)


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
    """Items of one split of a prepared histology dataset (``datalist.json`` of ``coseg.histo.prepare``).

    Args:
        dataset_dir: the prepared dataset folder.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        synthesize: when ``dataset_dir`` holds no ``datalist.json``, write a synthetic H&E dataset there first
            (:func:`coseg.histo.synthetic.write_synthetic_dataset`): the quickstart's embedded sample.
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
                f"{root}: no datalist.json. Prepare a dataset with `python -m coseg.histo.prepare --format "
                f"... --input RAW --output {root}`, or run the quickstart preset (configs/quickstart.json) "
                "which synthesizes a sample."
            )
        from coseg.histo.synthetic import write_synthetic_dataset

        logger.warning("no dataset in %s: writing a synthetic H&E sample of %d images there", root, num_images)
        write_synthetic_dataset(
            root, num_images=num_images, size=image_size, seed=seed, nucleus_scale=nucleus_scale, overwrite=True
        )
    return read_datalist(root, split, fraction=fraction, fraction_seed=fraction_seed)


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
