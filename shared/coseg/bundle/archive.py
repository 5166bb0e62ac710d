"""Reading bundle zips that come from elsewhere: every member is checked before anything is written.

A bundle zip (as :func:`coseg.bundle.export_bundle` writes it, and as ``monai.bundle.download`` expects it) holds one
top folder ``<name>/``. A zip from an untrusted source may instead hold members that climb out of the destination
(``<name>/../../.bashrc``), absolute paths (``/etc/cron.d/x``, ``C:\\x``) or symbolic links; :func:`extract_bundle`
refuses such a zip as a whole, naming the member, before it writes a byte.

``monai.bundle.download`` (MONAI 1.6.1) extracts with its own code, ``monai.apps.utils.extractall``: it refuses a
member with an absolute path or one that leaves the download folder after normalisation
(``monai.apps.utils.safe_extract_member``), but only when it reaches it, so the members before it are written
already; a member that leaves the bundle folder but not the download folder (``<name>/../x``) is written beside the
bundle; and the extraction is skipped altogether when the bundle folder exists and is not empty. Use
:func:`extract_bundle` (``python -m coseg.bundle extract``) to install a zip by hand, e.g. into a MONAI Label app's
``model/`` folder: it checks every member first.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from coseg.errors import InputFileError, InputNotFoundError

__all__ = ["check_bundle_zip", "extract_bundle"]

_DRIVE = re.compile(r"^[A-Za-z]:")


def _member_problem(name: str, info: zipfile.ZipInfo) -> str | None:
    if name.startswith("/") or "\\" in name or _DRIVE.match(name):
        return "has an absolute or Windows path"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "climbs out of the bundle folder (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if not info.is_dir() and len(parts) < 2:
        return "lies outside the bundle's top folder"
    return None


def check_bundle_zip(archive: str | os.PathLike) -> str:
    """Check a bundle zip's members without extracting anything.

    Args:
        archive: the zip file.

    Returns:
        The bundle's name: the one top folder every member lies in.

    Raises:
        InputNotFoundError: no such file.
        InputFileError: not a zip; a member with an absolute path, a ``..`` component or a symbolic link; members
            in several top folders (or none); the same member twice.
    """
    path = Path(archive)
    if not path.is_file():
        raise InputNotFoundError(path, "no such bundle zip")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InputFileError(path, f"cannot be read as a zip ({err})") from err
    tops, seen = set(), set()
    for info in infos:
        problem = _member_problem(info.filename, info)
        if problem:
            raise InputFileError(path, f"refused: member {info.filename!r} {problem}")
        normal = PurePosixPath(info.filename).as_posix()
        if normal in seen:
            raise InputFileError(path, f"refused: member {info.filename!r} appears twice")
        seen.add(normal)
        tops.add(PurePosixPath(info.filename).parts[0])
    if len(tops) != 1:
        raise InputFileError(path, f"a bundle zip holds one top folder <name>/, found {sorted(tops) or 'none'}")
    return tops.pop()


def extract_bundle(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Extract a bundle zip into ``destination/<name>/`` after checking every member (:func:`check_bundle_zip`).

    The bundle is written into a hidden temporary folder beside its final place and renamed at the end: a failed
    extraction leaves nothing behind. Files get the modes the umask gives; nothing is executable.

    Args:
        archive: the bundle zip.
        destination: the folder to extract into (created if needed), e.g. a MONAI Label app's ``model/``.

    Returns:
        The bundle folder, ``destination/<name>``.

    Raises:
        InputNotFoundError, InputFileError: see :func:`check_bundle_zip`.
        InputFileError: ``destination/<name>`` exists already.
    """
    path = Path(archive)
    name = check_bundle_zip(path)
    dest = Path(destination).expanduser().resolve()
    target = dest / name
    if target.exists():
        raise InputFileError(target, "exists already; remove it (or extract elsewhere) to install this bundle")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{name}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                relative = PurePosixPath(info.filename).relative_to(name)
                out = tmp.joinpath(*relative.parts) if relative.parts else tmp
                if not out.resolve().is_relative_to(tmp.resolve()):  # checked above; kept as a second guard
                    raise InputFileError(path, f"refused: member {info.filename!r} leaves the bundle folder")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
