"""MONAI dictionary transforms the bundles need and MONAI lacks: input checks that name the file (and an image
reader whose errors name it), SAM2's input normalisation, H&E stain jitter, and flattening of the nested engine
outputs."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

from coseg.constants import normalize
from coseg.errors import InputFileError, InputNotFoundError
from coseg.io import source_name

__all__ = ["CheckedPILReader", "CheckRGBd", "CheckLabelsd", "SAM2Normalized", "FlattenEngineOutputd"]


class _Unreadable:
    """What :class:`CheckedPILReader` reads from a file it cannot open; its ``get_data`` raises the error."""

    def __init__(self, error: InputFileError) -> None:
        self.error = error


class CheckedPILReader(PILReader):
    """MONAI's ``PILReader`` whose errors name the file (``LoadImaged(reader="coseg.transforms.CheckedPILReader")``).

    ``PILReader`` only opens the file (reads its header) and decodes the pixels later, where the file name is no
    longer known: a truncated or corrupt image fails with ``OSError: image file is truncated`` and nothing says
    which one. This reader decodes every image in :meth:`get_data` and names the file when that fails. A file that
    cannot even be opened is reported there too: were :meth:`read` to raise, ``LoadImage`` would try its other
    readers and end with a message about missing reader libraries.

    Args: as ``monai.data.PILReader``.
    """

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs):
        """Open ``data`` (a file name or a sequence of them); returns a PIL image or a list of them (a placeholder
        that :meth:`get_data` reports for each file that cannot be opened)."""
        images = []
        names = ensure_tuple(data)
        for name in names:
            try:
                images.append(super().read(name, **kwargs))
            except FileNotFoundError as exc:
                images.append(_Unreadable(InputNotFoundError(name, "image file does not exist")))
                images[-1].error.__cause__ = exc
            except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError, bad header, ...
                images.append(_Unreadable(InputFileError(name, f"cannot be read as an image ({exc})")))
                images[-1].error.__cause__ = exc
        return images if len(names) > 1 else images[0]

    def get_data(self, img) -> tuple:
        """Decode the images of :meth:`read` and return ``(array, metadata)`` as ``PILReader.get_data`` does.

        Raises:
            InputNotFoundError: a file does not exist.
            InputFileError: a file cannot be opened or decoded as an image (truncated, corrupt, not an image).
        """
        for image in ensure_tuple(img):
            if isinstance(image, _Unreadable):
                raise image.error
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as exc:
                name = getattr(image, "filename", None) or "<image>"
                raise InputFileError(name, f"cannot be read as an image ({exc})") from exc
        return super().get_data(img)


class CheckRGBd(MapTransform):
    """Check (and where documented, repair) loaded RGB images; errors name the file.

    Expects channel-first ``(C, H, W)`` images as loaded by ``LoadImaged(..., ensure_channel_first=True)``.

    - 4 channels (RGBA): the alpha channel is dropped.
    - 1 channel (grey): an error, unless ``allow_grey=True`` which repeats it to 3 channels.
    - values above 255 (16-bit images): an error, unless ``rescale_16bit=True`` which maps [0, 65535] to
      [0, 255].
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
