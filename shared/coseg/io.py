"""Reading and writing 2D images and label maps, with checks that name the file and the problem.

Conventions:

- RGB images come back as ``(H, W, 3) uint8``. What is done with other files:

  * RGBA (and palette images with transparency): the alpha channel is DROPPED, not composited; a warning
    is logged when it is not fully opaque. Histology ROIs (e.g. PUMA's TIFFs) carry an all-opaque alpha.
  * Greyscale (1 channel, or grey + alpha): an error by default; ``allow_grey=True`` replicates the grey
    channel into R, G and B.
  * 16-bit RGB (PNG, TIFF): ``high_bit_depth="scale"`` (default) maps the full dtype range to 0..255 with
    rounding (``round(v * 255 / 65535)``), so a dim image stays dim; ``"error"`` refuses such files.
  * Float, CMYK, multi-page stacks with more than 4 channels and zero-sized images are errors.
  * Pixels are returned as stored: EXIF orientation tags are ignored.

- Label maps come back as 2D arrays of the unsigned integer type they were stored with (``uint8``,
  ``uint16`` or ``uint32``). A palette PNG gives its palette INDICES; an RGB file whose three channels are
  equal gives one channel; anything else (colour labels, floats, negative values, 3D stacks) is an error.

- Writers choose a dtype that holds the values (``uint8`` up to 255, ``uint16`` up to 65535, ``uint32``
  beyond, which needs a TIFF file) and write through a temporary name in the same folder followed by a
  rename, so a failed write never leaves a half-written file under the final name.

All reading errors are :class:`coseg.errors.InputFileError` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from coseg.errors import InputFileError

__all__ = [
    "temporary_sibling",
    "write_bytes",
    "write_text",
    "write_json",
    "jsonable",
    "source_name",
    "read_rgb",
    "read_label",
    "write_rgb",
    "write_label",
    "label_dtype",
    "atomic_write_path",
    "temporary_sibling_dir",
    "temporaries_in",
    "StagedDir",
    "png_is_16bit_colour",
    "metaimage_size_problem",
]

logger = logging.getLogger(__name__)

_TIFF_SUFFIXES = (".tif", ".tiff")
_HIGH_BIT_DEPTH_MODES = ("scale", "error")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputFileError(path, "file does not exist")
    if not path.is_file():
        raise InputFileError(path, "is not a regular file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty (0 bytes)")


#: bytes per voxel component of MetaImage element types (MetaIO's ``MET_ValueTypeSize``)
_MET_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def metaimage_size_problem(path: Path) -> str | None:
    """Why a MetaImage file's voxel data cannot be complete, from its header, or ``None`` if it looks complete.

    ITK reports a short file as "File cannot be read ... Reason: No such file or directory" (a leftover
    ``errno``), so the sizes are compared here: the header's ``DimSize`` x ``ElementType`` (x channels), or
    ``CompressedDataSize`` for compressed data, against the bytes after the header (``ElementDataFile = LOCAL``)
    or the size of the separate data file (``.mhd``). Checked before ITK reads the file, which also prints its own
    complaint to stderr.

    Args:
        path: a ``.mha`` / ``.mhd`` file.

    Returns:
        the problem in words (``"file is truncated: ..."``), or ``None`` (complete, or not a MetaImage header).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return None
    fields: dict[str, str] = {}
    offset = 0
    for raw in head.split(b"\n"):
        offset += len(raw) + 1
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            return None
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    else:
        return None
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        component = _MET_SIZES[fields["ElementType"]]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None
    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        available = path.stat().st_size - offset
        where = "after the header"
    else:
        data_path = path.parent / data_file
        if not data_path.is_file():
            return f"its data file {data_file!r} (ElementDataFile) does not exist beside it"
        available = data_path.stat().st_size
        where = f"in {data_file}"
    if fields.get("CompressedData", "False").lower() == "true":
        try:
            needed = int(fields["CompressedDataSize"])
        except (KeyError, ValueError):
            return None
        what = f"CompressedDataSize {needed}"
    else:
        needed = int(np.prod(dims)) * component * channels
        what = f"DimSize {' '.join(map(str, dims))} x {fields['ElementType']}" + (f" x {channels}" * (channels > 1))
    if available >= needed:
        return None
    return f"file is truncated: the header ({what}) needs {needed} bytes of voxel data, {available} are {where}"


def png_is_16bit_colour(path: str | os.PathLike) -> bool:
    """True for a PNG whose IHDR says bit depth 16 and colour type RGB (2) or RGBA (6).

    Pillow decodes such files to 8 bits by dropping the low byte without saying so (12-bit data becomes
    near-black); :func:`read_rgb` reads them with OpenCV instead to keep the 16-bit values and round them properly.
    Files that are not PNGs, or too short to hold an IHDR, give ``False``.

    Args:
        path: any file.

    Returns:
        Whether Pillow would silently reduce the file to 8 bits per channel.
    """
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16 and head[25] in (2, 6)


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            separated = tif.pages.first.photometric == tifffile.PHOTOMETRIC.SEPARATED
            arr = None if separated else tif.asarray()
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, codec errors)
        raise InputFileError(path, f"cannot be read as TIFF ({type(exc).__name__}: {exc})") from exc
    if separated:  # its 4 channels would pass for RGBA (cyan, magenta, yellow read as red, green, blue)
        raise InputFileError(path, "CMYK images are not supported; convert the file to RGB")
    arr = np.asarray(arr)
    if arr.size == 0:
        raise InputFileError(path, "cannot be read as TIFF (no image data found)")
    # planar (channels-first) TIFFs come back as (C, H, W)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _read_with_pil(path: Path, *, as_label: bool) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and not as_label:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "CMYK":
                raise InputFileError(path, "CMYK images are not supported; convert the file to RGB")
            arr = np.array(im)
    except InputFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputFileError(path, f"cannot be read as an image ({type(exc).__name__}: {exc})") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_array(path: str | os.PathLike, *, as_label: bool) -> tuple[Path, np.ndarray]:
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() in _TIFF_SUFFIXES:
        arr = _read_tiff(p)
    elif not as_label and png_is_16bit_colour(p):
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputFileError(p, "cannot be read as a 16-bit PNG")
        arr = arr[..., [2, 1, 0, 3][: arr.shape[-1]]]  # OpenCV gives BGR(A)
    else:
        arr = _read_with_pil(p, as_label=as_label)
    if arr.size == 0:
        raise InputFileError(p, f"image has no pixels (shape {arr.shape})")
    return p, arr


def read_rgb(
    path: str | os.PathLike,
    *,
    allow_grey: bool = False,
    high_bit_depth: str = "scale",
) -> np.ndarray:
    """Read an RGB image (PNG, JPEG, BMP, TIFF, ...) as ``uint8``.

    Args:
        path: the image file.
        allow_grey: replicate a single grey channel into RGB instead of raising.
        high_bit_depth: what to do with 16-bit images: ``"scale"`` (``round(v * 255 / 65535)``) or
            ``"error"``.

    Returns:
        ``(H, W, 3) uint8`` array, channels in R, G, B order; alpha, if any, is dropped.

    Raises:
        ValueError: ``high_bit_depth`` is not one of the two options.
        InputFileError: missing, empty or unreadable file; grey image without ``allow_grey``; wrong channel
            count; float or otherwise unsupported pixel type; 16-bit image with ``high_bit_depth="error"``.
    """
    if high_bit_depth not in _HIGH_BIT_DEPTH_MODES:
        raise ValueError(f"high_bit_depth must be one of {_HIGH_BIT_DEPTH_MODES}, got {high_bit_depth!r}")
    p, arr = _read_array(path, as_label=False)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha
        arr = arr[..., 0]
    if arr.ndim == 2:
        if not allow_grey:
            raise InputFileError(p, f"image is greyscale {arr.shape}, expected RGB (pass allow_grey=True to replicate)")
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputFileError(p, f"expected an (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    if arr.shape[-1] == 4:
        alpha = arr[..., 3]
        if arr.dtype.kind == "u" and alpha.min() < np.iinfo(arr.dtype).max:
            logger.warning("%s: alpha channel is not fully opaque; it is dropped, not composited", p)
        arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        if high_bit_depth == "error":
            raise InputFileError(p, "image is 16-bit per channel; expected 8-bit (high_bit_depth='error')")
        return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise InputFileError(p, f"unsupported pixel type {arr.dtype}; expected 8- or 16-bit unsigned integers")


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read an integer label map (class ids or instance ids).

    Args:
        path: PNG, BMP, TIFF, ... holding one integer per pixel.

    Returns:
        ``(H, W)`` array of the stored unsigned integer type (``uint8``, ``uint16`` or ``uint32``).

    Raises:
        InputFileError: missing, empty or unreadable file; not 2D (colour labels whose channels differ,
            stacks); float or negative values.
    """
    p, arr = _read_array(path, as_label=True)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()):
            raise InputFileError(p, "label map is colour (channels differ); expected one integer per pixel")
        arr = rgb[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputFileError(p, f"label map must be 2D (H, W), got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise InputFileError(p, f"label map has non-integer values (dtype {arr.dtype})")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "ui":
        raise InputFileError(p, f"unsupported label dtype {arr.dtype}")
    if arr.dtype.kind == "i":
        if arr.min() < 0:
            raise InputFileError(p, f"label map has negative values (min {arr.min()})")
        arr = arr.astype(label_dtype(int(arr.max()), allow_uint32=True))
    return np.ascontiguousarray(arr)


def label_dtype(max_value: int, *, allow_uint32: bool = True) -> np.dtype:
    """The smallest unsigned dtype (uint8, uint16, uint32) that holds ``0..max_value``.

    Args:
        max_value: the largest value to store (>= 0).
        allow_uint32: whether ``uint32`` may be returned.

    Returns:
        A numpy dtype.

    Raises:
        ValueError: negative ``max_value``, or too large for the allowed types.
    """
    if max_value < 0:
        raise ValueError(f"label values must be >= 0, got max {max_value}")
    for dt in (np.uint8, np.uint16) + ((np.uint32,) if allow_uint32 else ()):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    limit = np.iinfo(np.uint32 if allow_uint32 else np.uint16).max
    raise ValueError(f"label value {max_value} does not fit in an unsigned integer of at most {limit}")


def _temporary_suffix(path: Path) -> str:
    """The suffixes a writer picks the format by: ``.nii.gz`` (and other compressed doubles) whole, else the last."""
    if path.suffix.lower() in (".gz", ".bz2", ".xz") and len(path.suffixes) >= 2:
        return "".join(path.suffixes[-2:])
    return path.suffix


@contextlib.contextmanager
def temporary_sibling(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``path`` with the same format suffix; remove it on an exception.

    The caller renames it into place (``os.replace``) when it is complete, which lets several files be committed
    together. The file is created with the mode an ordinary ``open()`` gives (``0o666`` less the umask), so
    outputs stay readable by the other users, containers and servers that share a dataset.

    Raises:
        FileExistsError: never in practice (random names are retried).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = _temporary_suffix(final)
    for _ in range(100):
        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"{final.parent}: cannot create a temporary file for {final.name}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same format suffix); rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. Concurrent writers of the same
    file each get their own temporary name; the last rename wins, and no reader ever sees a partial file.

    Args:
        path: the final file name.

    Yields:
        The temporary file name to write to.
    """
    with temporary_sibling(path) as tmp:
        yield tmp
        os.replace(tmp, path)


@contextlib.contextmanager
def temporary_sibling_dir(path: str | os.PathLike, *, tag: str = "tmp") -> Iterator[Path]:
    """Yield a new, empty hidden folder beside ``path`` (``.<name>.<tag>-<random>``); remove it at the end.

    The folder is created with the mode an ordinary ``mkdir`` gives (``0o777`` less the umask, unlike
    :func:`tempfile.mkdtemp`'s ``0o700``), so a folder renamed into place stays readable by the other users,
    containers and servers that share it. Whatever is still at the yielded path when the block ends (normally or
    by an exception) is removed with its content; rename it away inside the block to keep it.

    Args:
        path: the final folder name the temporary folder stands in for.
        tag: a word in the temporary name (e.g. ``"partial"``) saying what it holds.

    Yields:
        The temporary folder.

    Raises:
        ValueError: a ``tag`` that is empty or holds a path separator.
    """
    if not tag or os.sep in tag or (os.altsep and os.altsep in tag):
        raise ValueError(f"tag must be a non-empty word without path separators, got {tag!r}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = final.parent / f".{final.name}.{tag}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o777)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"{final.parent}: cannot create a temporary folder for {final.name}")
    try:
        yield tmp
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


_TEMPORARY_FILE = re.compile(r"^\.(?P<final>.+)\.[0-9a-f]{8}\.tmp(?P<suffix>.*)$")
_TEMPORARY_DIR = re.compile(r"^\.(?P<final>.+)\.[^./\\]+-[0-9a-f]{8}$")


def temporaries_in(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """The temporaries in ``folder`` (:func:`temporary_sibling` files, :func:`temporary_sibling_dir` folders with a
    tag without dots) whose final name matches the ``fnmatch`` ``pattern`` (``glob.escape`` a literal name). Ones
    that exist while no writer runs were left by a process killed before it could rename or remove them.

    Args:
        folder: the folder to look in (a missing folder holds none).
        pattern: of the final names.

    Returns:
        their paths, sorted; nothing else in the folder matches this naming.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.is_dir():
            m = _TEMPORARY_DIR.match(entry.name)
            ours = m is not None
        else:
            m = _TEMPORARY_FILE.match(entry.name)
            ours = m is not None and m["suffix"] == _temporary_suffix(Path(m["final"]))
        if ours and fnmatch.fnmatchcase(m["final"], pattern):
            found.append(entry)
    return sorted(found)


class StagedDir:
    """A folder filled beside its final place and moved there by one rename when it is complete.

    Example::

        with StagedDir(out_dir, overwrite=False) as stage:
            write_json(stage.path / "datalist.json", ...)
            stage.commit()

    Until :meth:`commit`, ``out_dir`` is not touched: an exception leaves no trace, and a process killed
    (even by SIGKILL) leaves only a hidden ``.<name>.partial-<random>`` folder beside ``out_dir``, never a
    partial folder under the final name. Such leftovers are named in a warning when the next run starts. The
    staging folder gets the umask's modes (:func:`temporary_sibling_dir`).

    With ``overwrite``, the previous ``out_dir`` is moved aside, the new one renamed into place and the old
    one deleted; if the rename fails the old one is put back. (A kill between those two renames, a window of
    two system calls, leaves the previous folder in a hidden ``.<name>.old-<random>`` folder.)

    Args:
        path: the final folder.
        overwrite: replace an existing non-empty folder (only once the new one is complete).

    Raises:
        FileExistsError: ``path`` exists and is not a folder, or is a non-empty folder and ``overwrite`` is false
            (raised at construction, before any work).
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.target = Path(path).absolute()
        self.overwrite = bool(overwrite)
        self._check_target()
        self._stack: contextlib.ExitStack | None = None
        self._path: Path | None = None
        self.committed = False

    def _check_target(self) -> None:
        if self.target.exists() or self.target.is_symlink():
            if not self.target.is_dir():
                raise FileExistsError(f"{self.target} exists and is not a folder")
            if any(self.target.iterdir()) and not self.overwrite:
                raise FileExistsError(f"{self.target} exists and is not empty (use overwrite to replace it)")

    @property
    def path(self) -> Path:
        """The staging folder to write into (only inside the ``with`` block, before :meth:`commit`)."""
        if self._path is None:
            raise RuntimeError("StagedDir.path is only available inside its 'with' block, before commit()")
        return self._path

    def __enter__(self) -> StagedDir:
        leftovers = sorted(self.target.parent.glob(f".{self.target.name}.partial-*"))
        if leftovers:
            logger.warning(
                "%s: %d unfinished folder(s) of interrupted runs lie beside it (%s); delete them once no other "
                "run is writing there",
                self.target,
                len(leftovers),
                ", ".join(p.name for p in leftovers[:3]) + (", ..." if len(leftovers) > 3 else ""),
            )
        self._stack = contextlib.ExitStack()
        self._path = self._stack.enter_context(temporary_sibling_dir(self.target, tag="partial"))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack, self._path = self._stack, None, None
        if stack is not None:
            stack.close()

    def commit(self) -> Path:
        """Move the staging folder to its final place.

        Returns:
            The final folder.

        Raises:
            RuntimeError: outside the ``with`` block or called twice.
            FileExistsError: a non-empty folder appeared at the final place meanwhile and ``overwrite`` is false
                (the new folder is discarded when the block ends).
            OSError: the rename failed (a previous folder is put back).
        """
        staged = self.path
        old: contextlib.ExitStack | None = None
        try:
            if self.target.exists() or self.target.is_symlink():
                if not self.target.is_dir():
                    raise FileExistsError(f"{self.target} appeared and is not a folder; the new one was discarded")
                if any(self.target.iterdir()):
                    if not self.overwrite:
                        raise FileExistsError(f"{self.target} appeared and is not empty; the new folder was discarded")
                    old = contextlib.ExitStack()
                    aside = old.enter_context(temporary_sibling_dir(self.target, tag="old")) / "data"
                    os.replace(self.target, aside)
                else:
                    self.target.rmdir()
            try:
                os.replace(staged, self.target)
            except OSError:
                if old is not None:  # put the previous folder back
                    os.replace(aside, self.target)
                raise
        finally:
            if old is not None:
                old.close()
        self._path = None
        self.committed = True
        return self.target


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_path`)."""
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (ITK may switch the process locale to ASCII, so the encoding is explicit)."""
    return write_bytes(path, text.encode("utf-8"))


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers, NaN as ``None`` and infinities as strings (strict JSON)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else (str(float(x)) if math.isinf(float(x)) else float(x))
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(path: str | os.PathLike, content: Any, *, indent: int | None = 2) -> Path:
    """Write ``content`` as UTF-8 JSON atomically, with a final newline."""
    return write_text(path, json.dumps(content, indent=indent, ensure_ascii=False) + "\n")


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an ``(H, W, 3) uint8`` RGB image (format from the suffix: PNG recommended, lossless).

    Args:
        path: output file.
        image: ``(H, W, 3) uint8`` array.

    Raises:
        TypeError: ``image`` is not a ``uint8`` numpy array.
        ValueError: wrong shape.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')}"
        raise TypeError(f"image must be a uint8 numpy array, got {got}")
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W, 3) with H, W > 0, got {image.shape}")
    with atomic_write_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image), mode=None).save(tmp, format=_pil_format(Path(path)))


def _pil_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image file suffix {path.suffix!r}")
    return fmt


def write_label(path: str | os.PathLike, label: np.ndarray, *, dtype: np.dtype | type | str | None = None) -> None:
    """Write a 2D integer label map losslessly.

    Args:
        path: output file; ``.png`` holds up to 16 bits, ``.tif``/``.tiff`` also 32 bits.
        label: ``(H, W)`` array of non-negative integers (any integer or bool dtype).
        dtype: storage type (``uint8``, ``uint16`` or ``uint32``); ``None`` picks the smallest that holds
            the values.

    Raises:
        TypeError: not a numpy integer/bool array.
        ValueError: wrong ndim, negative values, values that do not fit ``dtype``, ``uint32`` to a PNG,
            or an unsupported suffix (only PNG and TIFF are lossless for labels here).
    """
    if not isinstance(label, np.ndarray) or label.dtype.kind not in "uib":
        got = f"{type(label).__name__} {getattr(label, 'dtype', '')}"
        raise TypeError(f"label must be an integer numpy array, got {got}")
    if label.ndim != 2 or label.size == 0:
        raise ValueError(f"label must be a non-empty 2D array (H, W), got shape {label.shape}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".png",) + _TIFF_SUFFIXES:
        raise ValueError(f"{p}: labels are written as .png or .tif(f), got suffix {p.suffix!r}")
    lo = int(label.min())
    hi = int(label.max())
    if lo < 0:
        raise ValueError(f"{p}: label has negative values (min {lo})")
    if dtype is None:
        out_dtype = label_dtype(hi)
    else:
        out_dtype = np.dtype(dtype)
        if out_dtype not in (np.uint8, np.uint16, np.uint32):
            raise ValueError(f"dtype must be uint8, uint16 or uint32, got {out_dtype}")
        if hi > np.iinfo(out_dtype).max:
            raise ValueError(f"{p}: label max {hi} does not fit {out_dtype}")
    if out_dtype == np.uint32 and suffix == ".png":
        raise ValueError(f"{p}: PNG holds at most 16 bits; use a .tif file for values up to {hi}")
    arr = np.ascontiguousarray(label.astype(out_dtype, copy=False))
    with atomic_write_path(p) as tmp:
        if suffix in _TIFF_SUFFIXES:
            tifffile.imwrite(tmp, arr, compression="zlib")
        else:
            Image.fromarray(arr).save(tmp, format="PNG")


def source_name(value: object, default: str = "<in-memory image>") -> str:
    """The file a (Meta)Tensor was loaded from, for error messages."""
    meta = getattr(value, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return default
