"""The bundle side of whole-slide inference: which inputs are large, running both paths, and building the
:class:`~coseg.wsi.run.WholeSlideInferer` from a bundle's ``inference.json``.

``inference.json`` sends every input through :func:`route_inputs`: ordinary images go to the MONAI evaluator (the
whole image through the sliding-window inferer, then post-processing), large ones (more than ``min_pixels``
pixels, or pyramidal slides) to its ``wsi_inferer`` item, built from the same ``network``, ``inferer``,
``preprocessing``, ``watershed`` and class-name items. ``python -m coseg.wsi`` parses the same file
(:func:`wsi_inferer_from_bundle`).

Every input is checked before any is processed (:func:`check_image`): a truncated or corrupt file fails up front,
named, instead of hours later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tifffile
from PIL import Image

from coseg.errors import InputFileError, InputNotFoundError, UserInputError
from coseg.histo.datalist import IMAGE_SUFFIXES, image_datalist
from coseg.wsi.reader import OPENSLIDE_ONLY_SUFFIXES, SLIDE_SUFFIXES, TIFF_SUFFIXES, image_size

__all__ = [
    "InputRoute",
    "route_inputs",
    "check_image",
    "run_inference",
    "wsi_inferer_from_bundle",
    "list_images",
    "parse_override",
]

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
        InputNotFoundError: a missing path or a folder without images (a ``FileNotFoundError``).
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
                raise InputNotFoundError(root, f"no images or slides ({', '.join(suffixes)}) in this folder")
        else:
            paths = [root]
    for p in paths:
        if not p.is_file():
            raise InputNotFoundError(p, "no such image file")
    return [str(p.resolve()) for p in paths]


def route_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    split: str = "test",
    min_pixels: int = DEFAULT_MIN_PIXELS,
) -> InputRoute:
    """Split the inputs into ordinary images and large images or slides, checking every file first
    (:func:`check_image`: ordinary images are decoded, large ones checked for truncation).

    An input is large when it has several pyramid levels, only openslide reads it, or it has more than
    ``min_pixels`` pixels.

    Args:
        inputs: as for :func:`list_images`.
        split: the split of a prepared dataset.
        min_pixels: pixel count above which an image is large.

    Returns:
        the :class:`InputRoute`.

    Raises:
        InputNotFoundError: see :func:`list_images`.
        InputFileError: a file that cannot be read as an image, or is truncated or corrupt.
    """
    route = InputRoute()
    for path in list_images(inputs, split=split):
        h, w, levels = check_image(path, min_pixels=min_pixels)
        large = levels > 1 or Path(path).suffix.lower() in OPENSLIDE_ONLY_SUFFIXES or h * w > min_pixels
        (route.large if large else route.small).append({"image": path})
    if route.large:
        logger.info("%d large image(s) go the whole-slide way: %s", len(route.large), [d["image"] for d in route.large])
    return route


# what tifffile logs when it drops pages or pyramid levels it cannot read (it then carries on without them)
_TIFF_DAMAGE = re.compile(r"series raised|invalid page offset|invalid offset to page|corrupted (tag|page) list")


class _Collect(logging.Handler):
    """Collects the records of one logger while a file's header is read."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_damage_reports() -> Iterator[list[str]]:
    """The structural problems tifffile reports (and otherwise works around by dropping pages) meanwhile."""
    log = logging.getLogger("tifffile")
    handler = _Collect()
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
    handler.messages[:] = [m for m in handler.messages if _TIFF_DAMAGE.search(m)]


def _check_tiff(path: Path, *, decode_all: bool) -> None:
    """A TIFF's levels exist and their data lie inside the file; the last data segment of each level decodes (all
    of level 0 when ``decode_all``)."""
    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputFileError(path, "TIFF holds no image")
        levels = [level.keyframe for level in tif.series[0].levels]
        for offset in levels[0].subifds or ():
            if offset >= size:
                raise InputFileError(path, f"file is truncated: a pyramid level starts at byte {offset} of {size}")
        for i, page in enumerate(levels):
            segments = [(o, n, k) for k, (o, n) in enumerate(zip(page.dataoffsets, page.databytecounts)) if n > 0]
            if not segments:
                continue
            offset, count, index = max(segments)  # the segment stored last
            if offset + count > size:
                raise InputFileError(
                    path, f"file is truncated: level {i} needs {offset + count} bytes, the file has {size}"
                )
            if decode_all and i == 0:
                page.asarray()
            else:
                tif.filehandle.seek(offset)
                page.decode(tif.filehandle.read(count), index, jpegtables=page.jpegtables)


def _check_pil(path: Path, *, decode_all: bool) -> None:
    """A PIL image decodes (``decode_all``), or, for a large one, its data are complete: PNG chunks and their
    checksums, or the end-of-image marker of a JPEG."""
    with Image.open(path) as im:
        if decode_all or im.format not in ("PNG", "JPEG"):
            im.load()
            return
        if im.format == "PNG":
            im.verify()
            return
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 2))
        if fh.read(2) != b"\xff\xd9":
            raise InputFileError(path, "file is truncated: the JPEG has no end-of-image marker")


def check_image(path: str | os.PathLike, *, min_pixels: int = DEFAULT_MIN_PIXELS) -> tuple[int, int, int]:
    """Check that an input image or slide is complete and readable, without decoding a whole slide.

    Images of at most ``min_pixels`` pixels are decoded. Larger ones and slides get cheap checks: the data of
    every pyramid level of a TIFF lie inside the file and the last tile (or strip) of each level decodes; a PNG's
    chunks and checksums are complete; a JPEG ends with its end-of-image marker. Formats only openslide reads are
    checked by opening them.

    Args:
        path: the image or slide file.
        min_pixels: the size up to which an image is decoded whole.

    Returns:
        ``(height, width, number of levels)`` as :func:`coseg.wsi.reader.image_size` gives them.

    Raises:
        InputFileError: the file is missing, not an image, truncated or corrupt.
    """
    p = Path(path)
    with _tifffile_damage_reports() as damage:
        h, w, levels = image_size(p)
        small = levels == 1 and h * w <= min_pixels
        try:
            if p.suffix.lower() in TIFF_SUFFIXES:
                _check_tiff(p, decode_all=small)
            elif p.suffix.lower() not in OPENSLIDE_ONLY_SUFFIXES:
                _check_pil(p, decode_all=small)
        except InputFileError:
            raise
        except Exception as exc:  # tifffile, the codecs and PIL raise many types
            raise InputFileError(p, f"damaged image file ({type(exc).__name__}: {exc})") from exc
    if damage:
        raise InputFileError(p, f"damaged TIFF: {damage[0]}")
    return h, w, levels


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
        UserInputError: without ``=`` (a ``ValueError``).
    """
    if "=" not in text:
        raise UserInputError(f"a config override must look like KEY=VALUE, got {text!r}")
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
        InputNotFoundError: no ``configs/inference.json`` in ``bundle`` (a ``FileNotFoundError``).
        ValueError: settings options for a group that the config gives as a reference or an expression.
    """
    from monai.bundle import ConfigParser

    from coseg.wsi.run import WholeSlideInferer
    from coseg.wsi.settings import SETTINGS_GROUPS, group_options

    root = Path(bundle).resolve()
    config = root / "configs" / "inference.json"
    if not config.is_file():
        raise InputNotFoundError(config, f"no such file (is {root} a bundle folder?)")
    parser = ConfigParser()
    parser.read_config([str(config), *(str(f) for f in config_files)])
    parser["bundle_root"] = str(root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    options = {k: v for k, v in options.items() if v is not None}
    if "checkpoint" in options and "ckpt_path" in parser.config:
        parser["ckpt_path"] = str(options["checkpoint"])  # the network is built as these weights record it
    groups = group_options(options)
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
