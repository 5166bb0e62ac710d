"""The bundle side of whole-slide inference: which inputs are large, running both paths, and building the
:class:`~coseg.wsi.run.WholeSlideInferer` from a bundle's ``inference.json``.

``inference.json`` sends every input through :func:`route_inputs`: ordinary images go to the MONAI evaluator (the
whole image through the sliding-window inferer, then post-processing), large ones (more than ``min_pixels``
pixels, or pyramidal slides) to its ``wsi_inferer`` item, built from the same ``network``, ``inferer``,
``preprocessing``, ``watershed`` and class-name items. ``python -m coseg.wsi`` parses the same file
(:func:`wsi_inferer_from_bundle`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coseg.histo.datalist import IMAGE_SUFFIXES, image_datalist
from coseg.wsi.reader import OPENSLIDE_ONLY_SUFFIXES, SLIDE_SUFFIXES, image_size

__all__ = ["InputRoute", "route_inputs", "run_inference", "wsi_inferer_from_bundle", "list_images", "parse_override"]

logger = logging.getLogger(__name__)

#: default size above which an image goes the whole-slide way (4096 x 4096 pixels)
DEFAULT_MIN_PIXELS = 4096 * 4096


@dataclass
class InputRoute:
    """Datalists of the two inference paths.

    Attributes:
        small: ``[{"image": path}]`` for the whole-image evaluator.
        large: ``[{"image": path}]`` for the whole-slide inferer.
    """

    small: list[dict[str, str]] = field(default_factory=list)
    large: list[dict[str, str]] = field(default_factory=list)


def list_images(inputs: str | os.PathLike | Sequence[str | os.PathLike], *, split: str = "test") -> list[str]:
    """Image and slide files of an input: a file, a folder (images and slides in it, sorted), a list of files, or a
    prepared dataset folder (the images of ``split`` in its ``datalist.json``).

    Raises:
        FileNotFoundError: a missing path or a folder without images.
    """
    if isinstance(inputs, (list, tuple)):
        paths = [Path(p) for p in inputs]
    else:
        root = Path(inputs).expanduser()
        if (root / "datalist.json").is_file():
            return [item["image"] for item in image_datalist(root, split=split)]
        if root.is_dir():
            suffixes = tuple(IMAGE_SUFFIXES) + SLIDE_SUFFIXES
            paths = sorted(p for p in root.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))
            if not paths:
                raise FileNotFoundError(f"{root}: no images or slides ({', '.join(suffixes)}) in this folder")
        else:
            paths = [root]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    return [str(p.resolve()) for p in paths]


def route_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str = "test",
    min_pixels: int = DEFAULT_MIN_PIXELS,
) -> InputRoute:
    """Split the inputs into ordinary images and large images or slides (read from the file headers only).

    An input is large when it has several pyramid levels, only openslide reads it, or it has more than
    ``min_pixels`` pixels.

    Args:
        inputs: as for :func:`list_images`.
        split: the split of a prepared dataset.
        min_pixels: pixel count above which an image is large.

    Returns:
        the :class:`InputRoute`.

    Raises:
        FileNotFoundError: see :func:`list_images`.
        InputFileError: a file that cannot be read as an image.
    """
    route = InputRoute()
    for path in list_images(inputs, split=split):
        h, w, levels = image_size(path)
        large = levels > 1 or Path(path).suffix.lower() in OPENSLIDE_ONLY_SUFFIXES or h * w > min_pixels
        (route.large if large else route.small).append({"image": path})
    if route.large:
        logger.info("%d large image(s) go the whole-slide way: %s", len(route.large), [d["image"] for d in route.large])
    return route


def run_inference(*, evaluator: Any, small: Sequence[Any], wsi_inferer: Any, large: Sequence[Any]) -> list[Any]:
    """Run the bundle's evaluator on the ordinary images and the whole-slide inferer on the large ones.

    Returns:
        the :class:`~coseg.wsi.run.SlideResult` of each large input.
    """
    if small:
        evaluator.run()
    return wsi_inferer(list(large)) if large else []


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, booleans, lists, quoted strings), else as text.

    Raises:
        ValueError: without ``=``.
    """
    if "=" not in text:
        raise ValueError(f"a config override must look like KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def wsi_inferer_from_bundle(
    bundle: str | os.PathLike,
    *,
    config_files: Sequence[str | os.PathLike] = (),
    overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """Build the bundle's whole-slide inferer from ``configs/inference.json`` (plus more config files and overrides,
    as ``monai.bundle run`` merges them), with ``options`` replacing its settings.

    The config's ``wsi_inferer`` item is used when present; otherwise the inferer is assembled from the ``network``,
    ``inferer``, ``preprocessing``, ``watershed``, ``sem_min_size``, ``sem_classes``, ``inst_types``, ``ckpt_path``,
    ``device``, ``amp``, ``amp_kwargs`` and ``output_dir`` items, the items ``wsi_inferer`` refers to.

    Args:
        bundle: the bundle folder (with ``configs/inference.json``).
        config_files: more config files merged after it (e.g. ``configs/quickstart.json``).
        overrides: ``{id: value}`` config overrides (``#``-separated ids).
        options: flat settings: fields of :class:`~coseg.wsi.settings.ReadSettings`,
            :class:`~coseg.wsi.settings.TileSettings` or :class:`~coseg.wsi.settings.OutputSettings` (``level``,
            ``mpp``, ``roi``, ``tile_size``, ``overwrite``, ...; each set in its group,
            :func:`~coseg.wsi.settings.group_options`) or other arguments of
            :class:`~coseg.wsi.run.WholeSlideInferer` (``output_dir``, ``checkpoint``, ``progress``, ...); ``None``
            values are ignored.

    Returns:
        the :class:`~coseg.wsi.run.WholeSlideInferer`.

    Raises:
        FileNotFoundError: no ``configs/inference.json`` in ``bundle``.
        ValueError: settings options for a group that the config gives as a reference or an expression.
    """
    from monai.bundle import ConfigParser

    from coseg.wsi.run import WholeSlideInferer
    from coseg.wsi.settings import SETTINGS_GROUPS, group_options

    root = Path(bundle).resolve()
    config = root / "configs" / "inference.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no such file (is {root} a bundle folder?)")
    parser = ConfigParser()
    parser.read_config([str(config), *(str(f) for f in config_files)])
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    groups = group_options({k: v for k, v in options.items() if v is not None})
    if "wsi_inferer" in parser.config:
        for group, cls in SETTINGS_GROUPS.items():
            if not groups[group]:
                continue
            item = parser.config["wsi_inferer"].get(group)
            if item is None:
                parser[f"wsi_inferer#{group}"] = {"_target_": f"{cls.__module__}.{cls.__name__}"}
            elif not isinstance(item, Mapping):
                raise ValueError(
                    f"{config}: wsi_inferer#{group} is {item!r}, not a {cls.__name__} item whose fields can be set; "
                    f"cannot apply {sorted(groups[group])}"
                )
            for key, value in groups[group].items():
                parser[f"wsi_inferer#{group}#{key}"] = value
        for key, value in groups["other"].items():
            parser[f"wsi_inferer#{key}"] = value
        return parser.get_parsed_content("wsi_inferer")
    kwargs = {
        "network": parser.get_parsed_content("network"),
        "inferer": parser.get_parsed_content("inferer"),
        "preprocessing": parser.get_parsed_content("preprocessing"),
        "watershed": parser.get_parsed_content("watershed"),
        "sem_min_size": parser.get_parsed_content("sem_min_size") if "sem_min_size" in parser.config else 1,
        "sem_classes": parser.get_parsed_content("sem_classes"),
        "inst_types": parser.get_parsed_content("inst_types"),
        "checkpoint": parser.get_parsed_content("ckpt_path"),
        "device": parser.get_parsed_content("device"),
        "amp": parser.get_parsed_content("amp"),
        "amp_kwargs": parser.get_parsed_content("amp_kwargs"),
        "output_dir": parser.get_parsed_content("output_dir"),
        **{group: cls(**groups[group]) for group, cls in SETTINGS_GROUPS.items()},
    }
    kwargs.update(groups["other"])
    return WholeSlideInferer(**kwargs)
