"""MONAI dictionary transforms the bundles need and MONAI lacks: loading and input checks that name the file,
SAM2's input normalisation, H&E stain jitter, label maps resized with their instances kept whole, the choice of
transforms by ``input_mode``, and flattening of the nested engine outputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import ImageReader, MetaTensor, PILReader
from monai.transforms import LoadImage, LoadImaged, MapTransform, Resize
from monai.utils import ensure_tuple
from PIL import Image

from coseg.constants import normalize
from coseg.data.resize import keep_instances_whole
from coseg.errors import InputFileError, InputNotFoundError
from coseg.inferers import INPUT_MODES
from coseg.io import metaimage_size_problem, png_is_16bit_colour, read_rgb, source_name

__all__ = [
    "CheckedPILReader",
    "LoadCheckedImage",
    "LoadCheckedImaged",
    "CheckRGBd",
    "CheckLabelsd",
    "SAM2Normalized",
    "ResizeLabelsd",
    "for_input_mode",
    "FlattenEngineOutputd",
]

logger = logging.getLogger(__name__)

_HIGH_BIT_DEPTH_MODES = ("scale", "error")


class CheckedPILReader(PILReader):
    """MONAI's ``PILReader`` that does not let Pillow reduce 16-bit colour PNGs to 8 bits silently.

    Pillow decodes a 16-bit RGB(A) PNG by keeping the high byte only (12-bit scanner data becomes near-black) and
    says nothing; the values never exceed 255, so no later check can notice. This reader looks at the PNG header
    (:func:`coseg.io.png_is_16bit_colour`) and, as :func:`coseg.io.read_rgb` does:

    - ``high_bit_depth="scale"`` (default): reads the file with :func:`coseg.io.read_rgb` (full 16-bit values,
      ``round(v * 255 / 65535)``, alpha dropped) and hands the 8-bit RGB image on;
    - ``high_bit_depth="error"``: raises :class:`~coseg.errors.InputFileError` naming the file.

    Other files are read exactly as by ``PILReader`` (16-bit grey label maps keep their values).

    Args:
        converter, reverse_indexing, kwargs: as ``monai.data.PILReader``.
        high_bit_depth: ``"scale"`` or ``"error"``.

    Raises:
        ValueError: an unknown ``high_bit_depth``.
    """

    def __init__(
        self,
        converter: Any = None,
        reverse_indexing: bool = True,
        *,
        high_bit_depth: str = "scale",
        **kwargs: Any,
    ) -> None:
        if high_bit_depth not in _HIGH_BIT_DEPTH_MODES:
            raise ValueError(f"high_bit_depth must be one of {_HIGH_BIT_DEPTH_MODES}, got {high_bit_depth!r}")
        super().__init__(converter=converter, reverse_indexing=reverse_indexing, **kwargs)
        self.high_bit_depth = high_bit_depth

    def read(self, data: Sequence[PathLike] | PathLike | np.ndarray, **kwargs: Any) -> Any:
        """Open the file(s) like ``PILReader.read``; 16-bit colour PNGs as described in the class docstring.

        A file that cannot be opened is not reported here but by :meth:`get_data`: were ``read`` to raise,
        ``LoadImage`` would try its other readers and end with a message about one of them (numpy's "pickled data",
        missing reader libraries) instead of this file's problem.

        Raises:
            InputFileError: a 16-bit colour PNG with ``high_bit_depth="error"``.
        """
        names = ensure_tuple(data)
        images = []
        for name in names:
            if isinstance(name, (str, os.PathLike)) and Path(name).is_file() and png_is_16bit_colour(name):
                if self.high_bit_depth == "error":
                    raise InputFileError(
                        name, "PNG is 16-bit per colour channel; expected 8-bit RGB (high_bit_depth='error')"
                    )
                image = Image.fromarray(read_rgb(name, high_bit_depth="scale"))
                images.append(self.converter(image) if callable(self.converter) else image)
                continue
            try:
                images.append(super().read(name, **kwargs))
            except FileNotFoundError as exc:
                images.append(_Unreadable(InputNotFoundError(name, "image file does not exist"), exc))
            except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError, bad header, ...
                images.append(_Unreadable(InputFileError(name, f"cannot be read as an image ({exc})"), exc))
        return images if len(names) > 1 else images[0]

    def get_data(self, img: Any) -> tuple:
        """Decode the images of :meth:`read` and return ``(array, metadata)`` as ``PILReader.get_data`` does.

        Raises:
            InputNotFoundError: a file does not exist.
            InputFileError: a file cannot be opened or decoded as an image (truncated, corrupt, not an image), or
                is CMYK (its four channels would pass for RGBA).
        """
        for image in ensure_tuple(img):
            if isinstance(image, _Unreadable):
                raise image.error from image.cause
            try:
                image.load()  # PIL decodes lazily: a truncated file fails here, where its name is still known
            except (OSError, SyntaxError, ValueError) as exc:
                name = getattr(image, "filename", None) or "<image>"
                raise InputFileError(name, f"cannot be read as an image ({exc})") from exc
            if getattr(image, "mode", None) == "CMYK":  # its 4 channels would pass for RGBA
                name = getattr(image, "filename", None) or "<image>"
                raise InputFileError(name, "CMYK images are not supported; convert the file to RGB")
        return super().get_data(img)


class _Unreadable:
    """What :class:`CheckedPILReader` reads from a file it cannot open; :meth:`CheckedPILReader.get_data` raises."""

    def __init__(self, error: InputFileError, cause: BaseException) -> None:
        self.error, self.cause = error, cause


class LoadCheckedImage(LoadImage):
    """MONAI's ``LoadImage`` whose failures name the file.

    Readers raise errors such as ``OSError: image file is truncated`` (Pillow) or ``EOFError: Compressed file ended
    before the end-of-stream marker was reached`` (nibabel) that do not say which of thousands of files is broken;
    here any error while reading or decoding becomes :class:`~coseg.errors.InputFileError` naming the file, with
    the reader's message kept (and the original exception chained). Arguments are those of ``LoadImage``.
    """

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None) -> Any:
        """Load as ``LoadImage`` does.

        Raises:
            InputFileError: the file does not exist, or reading it failed.
        """
        names = [os.fspath(n) for n in ensure_tuple(filename) if isinstance(n, (str, os.PathLike))]
        for name in names:  # what the readers report confusingly, if at all ("Could not create IO object")
            path = Path(name).expanduser()
            if path.is_file() and path.stat().st_size == 0:
                raise InputFileError(name, "file is empty (0 bytes)")
            if path.is_file() and path.suffix.lower() in (".mha", ".mhd"):
                problem = metaimage_size_problem(path)
                if problem is not None:
                    raise InputFileError(name, problem)
        try:
            return super().__call__(filename, reader)
        except InputFileError:
            raise
        except Exception as exc:  # readers raise OSError, EOFError, RuntimeError, ValueError, ...
            if not names:
                raise
            missing = [n for n in names if not Path(n).expanduser().exists()]
            if missing:
                raise InputNotFoundError(missing[0], "file does not exist") from exc
            reason = " ".join(str(exc).split()) or "no reason given"  # ITK's messages span several lines
            if isinstance(exc, EOFError):
                reason = f"file is truncated ({reason})"
            raise InputFileError(", ".join(names), f"cannot be read ({type(exc).__name__}: {reason})") from exc


class LoadCheckedImaged(LoadImaged):
    """Dictionary version of :class:`LoadCheckedImage`: MONAI's ``LoadImaged`` whose failures name the file.

    Takes exactly the arguments of ``monai.transforms.LoadImaged``; e.g. in a bundle::

        {"_target_": "coseg.transforms.LoadCheckedImaged", "keys": "image",
         "reader": "coseg.transforms.CheckedPILReader", "image_only": true, "ensure_channel_first": true}
    """

    def __init__(
        self,
        keys: KeysCollection,
        reader: type[ImageReader] | str | None = None,
        dtype: DtypeLike = np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = "meta_dict",
        overwriting: bool = False,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        allow_missing_keys: bool = False,
        expanduser: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            keys,
            reader,
            dtype,
            meta_keys,
            meta_key_postfix,
            overwriting,
            image_only,
            ensure_channel_first,
            simple_keys,
            prune_meta_pattern,
            prune_meta_sep,
            allow_missing_keys,
            expanduser,
            *args,
            **kwargs,
        )
        self._loader = LoadCheckedImage(
            reader,
            image_only,
            dtype,
            ensure_channel_first,
            simple_keys,
            prune_meta_pattern,
            prune_meta_sep,
            expanduser,
            *args,
            **kwargs,
        )


class CheckRGBd(MapTransform):
    """Check (and where documented, repair) loaded RGB images; errors name the file.

    Expects channel-first ``(C, H, W)`` images as loaded by ``LoadImaged(..., ensure_channel_first=True)``.

    - 4 channels (RGBA): the alpha channel is dropped.
    - 1 channel (grey): an error, unless ``allow_grey=True`` which repeats it to 3 channels.
    - values above 255 (16-bit images from readers that keep them, e.g. ITK): an error, unless
      ``rescale_16bit=True`` which maps [0, 65535] to [0, 255]. Pillow reduces 16-bit colour PNGs to 8 bits
      before this check can see them: load with :class:`CheckedPILReader`, which scales or refuses them.
    - any other channel count, an empty image, or NaN/negative values: an error.

    The output is float32 in [0, 255].
    """

    def __init__(self, keys: KeysCollection, *, allow_grey: bool = False, rescale_16bit: bool = False) -> None:
        super().__init__(keys)
        self.allow_grey = allow_grey
        self.rescale_16bit = rescale_16bit

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            name = source_name(img)
            t = torch.as_tensor(img)
            if t.ndim != 3 or t.numel() == 0:
                raise InputFileError(
                    name, f"expected a non-empty 2D colour image, got an array of shape {tuple(t.shape)}"
                )
            c = t.shape[0]
            if c == 4:
                t = t[:3]
            elif c == 1:
                if not self.allow_grey:
                    raise InputFileError(
                        name, "image is grey (1 channel); RGB H&E expected (allow_grey=True repeats it)"
                    )
                t = t.repeat(3, 1, 1)
            elif c != 3:
                raise InputFileError(name, f"image has {c} channels; expected RGB (3) or RGBA (4)")
            t = t.float()
            if not torch.isfinite(t).all() or (t < 0).any():
                raise InputFileError(name, "image has negative or non-finite values")
            if t.max() > 255:
                if not self.rescale_16bit:
                    raise InputFileError(
                        name,
                        f"image values reach {float(t.max()):.0f} (16-bit?); expected 8-bit RGB "
                        "(rescale_16bit=True maps 0..65535 to 0..255)",
                    )
                t = t * (255.0 / 65535.0)
            d[key] = MetaTensor(t, meta=img.meta) if isinstance(img, MetaTensor) else t
        return d


class CheckLabelsd(MapTransform):
    """Check label maps against the image and the class lists; errors name the file.

    Args:
        keys: label keys.
        image_key: the image whose spatial shape every label must share.
        max_values: per key, the largest valid value (e.g. ``num_sem_classes - 1`` for ``label_sem``);
            keys absent from it are only checked for shape and integrality (instance ids are free).
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        image_key: str = "image",
        max_values: Mapping[str, int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.image_key = image_key
        self.max_values = dict(max_values or {})

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        shape = tuple(torch.as_tensor(d[self.image_key]).shape[1:]) if self.image_key in d else None
        for key in self.key_iterator(d):
            lab = d[key]
            name = source_name(lab, default=f"<{key}>")
            t = torch.as_tensor(lab)
            if t.ndim != 3 or t.shape[0] != 1:
                raise InputFileError(name, f"{key}: expected a single-channel label map, got shape {tuple(t.shape)}")
            if shape is not None and tuple(t.shape[1:]) != shape:
                raise InputFileError(name, f"{key}: label size {tuple(t.shape[1:])} differs from the image {shape}")
            if t.is_floating_point() and not torch.equal(t, t.round()):
                raise InputFileError(name, f"{key}: label map has non-integer values")
            if (t < 0).any():
                raise InputFileError(name, f"{key}: label map has negative values")
            limit = self.max_values.get(str(key))
            if limit is not None and t.numel() and int(t.max()) > limit:
                raise InputFileError(name, f"{key}: value {int(t.max())} is beyond the class list (max {limit})")
        return d


class SAM2Normalized(MapTransform):
    """Scale [0, 255] RGB to [0, 1] and normalise with SAM2's (ImageNet) mean and std, per channel
    (:func:`coseg.constants.normalize`; meta data kept)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalize(d[key])
        return d


class ResizeLabelsd(MapTransform):
    """Resize label maps to ``spatial_size`` safely: nearest neighbour for every id map, instances kept whole.

    Every key is resized with MONAI's ``Resize(mode="nearest-exact")`` (pixel centres aligned, as the bilinear
    ``Resized`` of the image with ``align_corners=False``; no anti-aliasing, which would blend ids). The instance
    map is then repaired against the original (:func:`coseg.data.resize.keep_instances_whole`): an instance the
    shrinking lost comes back as one pixel at its centre, a connected instance cut into pieces keeps its largest
    piece, and the type map follows. Instances that cannot be put back (no free pixel near their centre) are
    logged as a warning naming the label file. Compute distance-map targets after this transform.

    Args:
        keys: the label maps, ``(1, H, W)`` each.
        spatial_size: ``(h, w)``.
        inst_key: the instance map among ``keys`` (``None``: no instance repair).
        type_key: the instance-type map among ``keys``, repaired with the instances (``None``: none).

    Raises:
        ValueError: ``inst_key`` or ``type_key`` not among ``keys``, or a bad ``spatial_size``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        *,
        inst_key: str | None = "label_inst",
        type_key: str | None = "label_type",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        size = tuple(int(v) for v in ensure_tuple(spatial_size))
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"spatial_size must be two positive ints (h, w), got {spatial_size!r}")
        for name, key in (("inst_key", inst_key), ("type_key", type_key)):
            if key is not None and key not in self.keys:
                raise ValueError(f"{name} {key!r} is not among keys {list(self.keys)}")
        if type_key is not None and inst_key is None:
            raise ValueError("type_key needs inst_key (types are repaired with their instances)")
        self.spatial_size = size
        self.inst_key, self.type_key = inst_key, type_key
        self.resize = Resize(spatial_size=size, mode="nearest-exact", anti_aliasing=False)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        before = {key: d[key] for key in self.key_iterator(d)}
        for key, value in before.items():
            d[key] = self.resize(value)
        if self.inst_key not in before:
            return d
        typed = self.type_key in before

        def plane(x: Any) -> np.ndarray:
            return np.asarray(torch.as_tensor(x).detach().cpu()[0]).astype(np.int64)

        fixed = keep_instances_whole(
            plane(before[self.inst_key]),
            plane(d[self.inst_key]),
            original_types=plane(before[self.type_key]) if typed else None,
            resized_types=plane(d[self.type_key]) if typed else None,
        )
        for key, value in ((self.inst_key, fixed.inst), (self.type_key, fixed.types)):
            if key is not None and value is not None:
                out = d[key]
                out[0] = torch.as_tensor(value, dtype=out.dtype, device=out.device)
        name = source_name(before[self.inst_key], default=f"<{self.inst_key}>")
        if fixed.restored or fixed.trimmed:
            logger.debug(
                "%s: resizing to %s restored %d lost instances as single pixels and trimmed %d cut into pieces",
                name,
                self.spatial_size,
                len(fixed.restored),
                len(fixed.trimmed),
            )
        if fixed.lost:
            logger.warning(
                "%s: resizing to %s lost %d instances no free pixel could hold (ids %s)",
                name,
                self.spatial_size,
                len(fixed.lost),
                fixed.lost[:10],
            )
        return d


def for_input_mode(input_mode: str, **choices: Any) -> Any:
    """The bundles' choice by ``input_mode``: ``for_input_mode(@input_mode, crop=[...], resize=[...])``.

    Args:
        input_mode: one of :data:`coseg.inferers.INPUT_MODES`.
        choices: one value per mode.

    Returns:
        ``choices[input_mode]``.

    Raises:
        ValueError: an unknown ``input_mode``, or ``choices`` that do not name every mode.
    """
    if set(choices) != set(INPUT_MODES):
        raise ValueError(f"give one choice per input mode {INPUT_MODES}, got {sorted(choices)}")
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    return choices[input_mode]


class FlattenEngineOutputd(MapTransform):
    """Lift the entries of nested dicts (the engine's ``pred`` and ``label`` dicts) to the top level.

    MONAI's engines store ``{"image": ..., "label": {...}, "pred": {...}}`` per decollated item when the
    network returns a dict and ``PrepareBatchCoSeg`` returns a target dict; MONAI's dict transforms and metric
    handlers then read flat keys (``sem_logits``, ``label_sem``, ...). Post-processing sees the batch item merged
    with the output, so the labels appear both at the top level and inside ``label``: nested entries replace
    top-level ones of the same name (they hold the same data).

    Args:
        keys: the nested dicts to flatten (default ``"pred"``; the labels are read from ``label`` by
            :class:`~coseg.postprocess.transforms.CoSegPostProcessd`).
    """

    def __init__(self, keys: KeysCollection = "pred", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            nested = d[key]
            if isinstance(nested, Mapping):
                del d[key]
                d.update(nested)
        return d
