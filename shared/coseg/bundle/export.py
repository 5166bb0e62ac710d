"""Package a bundle folder as a self-contained MONAI bundle zip that carries its own copy of ``coseg``.

The zip holds one top folder ``<name>/`` (what ``monai.bundle.download`` expects) with::

    <name>/configs/        every config, sub-folders included (with the requested overrides applied), metadata.json,
                           logging.conf
    <name>/docs/           README.md, data_license.txt, ...
    <name>/LICENSE
    <name>/models/         the chosen weight files (default: model.pt when present)
    <name>/coseg/          the coseg package the configs import (vendored), with VENDORED.json (version, digest)

How the vendored package is found: the configs import ``coseg`` by name, so the bundle folder must be on
``sys.path`` when they are parsed. MONAI Label puts it there itself, as does ``ConfigWorkflow.run()`` -- but only
after ``initialize()``, whose expressions already import ``coseg``; ``monai.bundle.load`` never does. So a user puts
the folder on the path (``PYTHONPATH=<bundle>`` or ``sys.path.insert(0, <bundle>)``), as for any model-zoo bundle
with code of its own; ``docs/README.md`` says how. Two bundles exported from the same revision carry the same package
(same ``sha256`` in ``coseg/VENDORED.json``): whichever is imported first serves both, and each bundle's
``bundle_root`` still points to its own folder (:func:`coseg.engines.find_bundle_root` looks beside the package for
sibling bundles, and MONAI Label passes ``bundle_root`` explicitly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coseg.bundle.metadata import check_metadata, config_class_problems
from coseg.errors import InputFileError, InputNotFoundError, UserInputError

__all__ = [
    "VENDORED_FILE",
    "export_bundle",
    "package_files",
    "code_digest",
    "apply_overrides",
    "parse_override",
]

logger = logging.getLogger(__name__)

#: provenance of the vendored package, written inside it
VENDORED_FILE = "VENDORED.json"

#: config files MONAI Label writes into a bundle's configs/ at run time: never packaged
_GENERATED_CONFIGS = frozenset({"monailabel_train.json"})

#: a fixed timestamp for every zip entry, so that the same inputs give the same zip
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _visible(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return not any(p.startswith(".") or p == "__pycache__" for p in parts) and path.suffix not in (".pyc", ".pyo")


def package_files(package_dir: str | os.PathLike) -> list[Path]:
    """The files of a Python package that a bundle vendors: sources and data, no caches, no hidden files.

    Args:
        package_dir: the package folder (holding ``__init__.py``).

    Returns:
        Paths relative to ``package_dir``, sorted; ``VENDORED.json`` of an earlier export is left out.

    Raises:
        InputFileError: ``package_dir`` is not a package folder.
    """
    root = Path(package_dir)
    if not (root / "__init__.py").is_file():
        raise InputFileError(root, "not a Python package folder (no __init__.py)")
    files = [p.relative_to(root) for p in root.rglob("*") if p.is_file() and _visible(p, root)]
    return sorted(f for f in files if f.as_posix() != VENDORED_FILE)


def code_digest(package_dir: str | os.PathLike) -> str:
    """SHA-256 over the vendored files of a package (their relative paths and bytes), as hex.

    Two bundles whose vendored packages have the same digest can share one imported copy.

    Raises:
        InputFileError: ``package_dir`` is not a package folder.
    """
    root = Path(package_dir)
    digest = hashlib.sha256()
    for rel in package_files(root):
        data = (root / rel).read_bytes()
        digest.update(rel.as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def _package_version(package_dir: Path) -> str:
    match = re.search(
        r"""^__version__\s*=\s*["']([^"']+)["']""", (package_dir / "__init__.py").read_text(encoding="utf-8"), re.M
    )
    return match.group(1) if match else "unknown"


def parse_override(text: str) -> tuple[str, Any]:
    """``"ID=VALUE"`` -> ``(ID, value)``: the value is read as JSON (numbers, booleans, lists, quoted strings,
    ``null``), and kept as a plain string when it is not valid JSON (``model_preset=tiny``).

    Raises:
        UserInputError: no ``=`` or an empty id (a ``ValueError``).
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserInputError(f"an override must look like ID=VALUE (e.g. model_preset=tiny), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _set_existing(config: Any, parts: list[str], value: Any) -> bool:
    node = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, Mapping):
            if part not in node:
                return False
            if last:
                node[part] = value  # type: ignore[index]
                return True
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return False
            if last:
                node[int(part)] = value
                return True
            node = node[int(part)]
        else:
            return False
    return False


def apply_overrides(configs: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, list[str]]:
    """Set config items in place, MONAI style (``"train#trainer#max_epochs"``), in every config that has them.

    Only items that already exist are replaced (a typo must not add a dead key).

    Args:
        configs: ``{file name: parsed JSON content}``; modified in place.
        overrides: ``{id: value}``; ids use ``#`` between levels and list indices as numbers.

    Returns:
        ``{id: [file names changed]}``.

    Raises:
        UserInputError: an empty id, or one that no config defines (a ``ValueError``).
    """
    changed: dict[str, list[str]] = {}
    for key, value in overrides.items():
        parts = [p for p in str(key).replace("::", "#").split("#") if p]
        if not parts:
            raise UserInputError(f"empty override id {key!r}")
        changed[key] = [name for name, content in configs.items() if _set_existing(content, parts, value)]
        if not changed[key]:
            raise UserInputError(
                f"override {key!r} matches no item of {sorted(configs)}; only existing items can be set"
            )
    return changed


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"cannot be read as JSON: {err}") from err


#: model files that must load with ``torch.load(weights_only=True)``
_TORCH_SUFFIXES = (".pt", ".pth")


def _load_weights(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for unreadable files (and UnpicklingError for code)
        problem = " ".join(str(err).split())[:300]
        raise InputFileError(path, f"cannot be loaded with torch.load(weights_only=True): {problem}") from err


def _check_weights(path: Path, inference: Any) -> None:
    import torch

    state = _load_weights(path)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:5] if isinstance(state, Mapping) else type(state).__name__
        raise InputFileError(
            path,
            f"not a plain state dict of tensors (found {keys}); monai.bundle.load and MONAI Label read models/"
            "model.pt as the network's state dict (a training checkpoint belongs in checkpoint_*.pt)",
        )
    _check_build_args(path, state, inference)


def _check_build_args(path: Path, state: Mapping[str, Any], inference: Any) -> None:
    """The network settings ``inference.json`` states outright (literal values, not expressions) must agree with the
    build arguments ``model.pt`` records: the packaged inference would refuse them."""
    from coseg.networks import ARCHITECTURE_ARGS, build_args_conflicts, recorded_build_args

    recorded = recorded_build_args(state)
    if recorded is None:
        logger.warning(
            "%s records no network build arguments (saved before they were recorded): the packaged inference builds "
            "the network from inference.json's settings, which must then be the ones it was trained with",
            path,
        )
        return
    network_def = inference.get("network_def") if isinstance(inference, Mapping) else None
    if not isinstance(network_def, Mapping):
        return
    stated = {}
    for arg, ref in network_def.items():
        value = ref
        if isinstance(ref, str) and ref[:1] in "$@":
            # "@item", or one call on it ("$coseg.engines.flag(@item, 'item')"): the item's literal value
            refs = re.findall(r"@(\w+)", ref)
            value = inference.get(refs[0]) if len(refs) == 1 else None
        if value is not None and not (isinstance(value, str) and value[:1] in "$@%"):
            stated[arg] = value
    conflicts = build_args_conflicts(stated, recorded, keys=ARCHITECTURE_ARGS, labels=("inference.json", "model.pt"))
    if conflicts:
        raise InputFileError(
            path,
            "was trained as another network than configs/inference.json states: "
            + "; ".join(conflicts)
            + " (leave those settings null, or --set them to the recorded values)",
        )


def _check_classes(configs: Mapping[str, Any], meta_path: Path) -> None:
    try:
        found = config_class_problems(configs)
    except ValueError as err:
        raise InputFileError(meta_path.parent / "inference.json", str(err)) from err
    if found:
        name, problems = next(iter(found.items()))
        raise InputFileError(meta_path, f"disagrees with configs/{name}: " + "; ".join(problems))


def _model_files(root: Path, models: Sequence[str] | None, inference: Any) -> list[tuple[Path, str]]:
    """The requested files of ``root/models/``, checked (``model.pt`` also against ``inference``, the parsed
    ``inference.json``): ``[(path, name relative to models/)]``."""
    models_dir = (root / "models").resolve()
    if models is None:
        models = ["model.pt"] if (models_dir / "model.pt").is_file() else []
    found: dict[str, Path] = {}
    for name in models:
        if not str(name).strip() or Path(name).is_absolute():
            raise InputFileError(name, f"give model files by their name under {models_dir}, not an absolute path")
        path = (models_dir / name).resolve()  # symbolic links followed: a link out of models/ is refused too
        if not path.is_relative_to(models_dir):
            raise InputFileError(name, f"is not inside the bundle's models folder {models_dir}; refused")
        if not path.exists():
            raise InputNotFoundError(path, "requested model file does not exist")
        if not path.is_file():
            raise InputFileError(path, "requested model file is not a regular file")
        rel = path.relative_to(models_dir).as_posix()
        if rel == "model.pt":
            _check_weights(path, inference)
        elif path.suffix.lower() in _TORCH_SUFFIXES:
            _load_weights(path)
        found.setdefault(rel, path)
    return [(path, rel) for rel, path in found.items()]


def _zip_entry(zf: zipfile.ZipFile, arcname: str, data: bytes, *, compress: bool = True) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    zf.writestr(info, data)


def _tree(root: Path, sub: str) -> list[Path]:
    folder = root / sub
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, root))


def export_bundle(
    bundle_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    models: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    package_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``<output_dir>/<name>_v<version>.zip``, a bundle that needs nothing from this repository.

    The bundle is checked first (nothing is written when a check fails): its metadata
    (:func:`~coseg.bundle.metadata.check_metadata`), that ``pred``'s ``channel_def`` matches the configs' class lists,
    that every config parses, that ``LICENSE`` exists and that ``models/model.pt`` is a plain state dict that
    ``monai.bundle.load`` and MONAI Label can read, whose recorded build arguments agree with the network settings
    ``inference.json`` states (a warning when it records none). The zip is written under a temporary name and
    renamed, and its entries carry a fixed timestamp, so the same inputs give the same bytes.

    Args:
        bundle_dir: the bundle folder (``configs/metadata.json`` inside).
        output_dir: where the zip goes (created if needed).
        models: file names under ``models/`` to include (relative paths; a name that leads out of ``models/``, by
            ``..``, an absolute path or a symbolic link, is refused); ``None`` takes ``model.pt`` when it exists,
            ``[]`` none. Every ``.pt`` / ``.pth`` file must load with ``torch.load(weights_only=True)`` (tensors
            and plain containers, no pickled code) and ``model.pt`` must be a plain state dict. Resumable training
            checkpoints (``checkpoint_*.pt``) are large and rarely wanted.
        overrides: ``{config id: value}`` set in every config file that defines the id (metadata.json included:
            ``name`` or ``version`` can be changed this way), e.g. ``{"patch_size": 256}`` for weights trained on the
            quickstart's patches (the network itself is built as ``model.pt`` records). Only existing items can be set.
        package_dir: the package to vendor; default: the ``coseg`` package this function belongs to.

    Returns:
        The path of the zip.

    Raises:
        InputFileError: a missing or unreadable bundle file, failed metadata checks, unusable weights, weights of
            another network than ``inference.json`` states, a model file outside ``models/``.
        InputNotFoundError: a requested model file does not exist (a ``FileNotFoundError``).
        UserInputError: an override that matches nothing (a ``ValueError``).
    """
    root = Path(bundle_dir).expanduser().resolve()
    configs_dir = root / "configs"
    meta_path = configs_dir / "metadata.json"
    if not meta_path.is_file():
        raise InputFileError(root, "not a MONAI bundle folder: no configs/metadata.json")
    config_files = [p for p in _tree(root, "configs") if p.name not in _GENERATED_CONFIGS]
    names = {p: p.relative_to(configs_dir).as_posix() for p in config_files}  # "train.json", "experiments/a.json"
    parsed = {names[p]: _read_json(p) for p in config_files if p.suffix == ".json"}
    rewritten: set[str] = set()
    if overrides:
        for key, files in apply_overrides(parsed, overrides).items():
            logger.info("override %s -> %s", key, ", ".join(files))
            rewritten.update(files)
    meta = parsed["metadata.json"]
    problems = check_metadata(meta)
    if problems:
        raise InputFileError(meta_path, "; ".join(problems))
    _check_classes(parsed, meta_path)
    license_path = root / "LICENSE"
    if not license_path.is_file():
        raise InputFileError(root, "no LICENSE file; a packaged bundle must carry its licence")

    model_files = _model_files(root, models, parsed.get("inference.json"))

    package = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parents[1]
    vendored = package_files(package)
    provenance = {
        "package": package.name,
        "version": _package_version(package),
        "sha256": code_digest(package),
        "exported_with": f"coseg.bundle.export of {meta['name']} v{meta['version']}",
    }

    name, version = meta["name"], meta["version"]
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}_v{version}.zip"
    tmp = out_dir / f".{target.name}.{os.getpid()}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for path in config_files:
                if names[path] in rewritten:
                    # written as ASCII (other characters escaped): MONAI opens configs in the locale encoding
                    data = (json.dumps(parsed[names[path]], indent=4) + "\n").encode()
                else:
                    data = path.read_bytes()
                _zip_entry(zf, f"{name}/configs/{names[path]}", data)
            for sub in ("docs", "scripts"):
                for path in _tree(root, sub):
                    _zip_entry(zf, f"{name}/{path.relative_to(root).as_posix()}", path.read_bytes())
            _zip_entry(zf, f"{name}/LICENSE", license_path.read_bytes())
            for extra in ("large_files.yml", "large_files.yaml", "large_files.json"):
                if (root / extra).is_file():
                    _zip_entry(zf, f"{name}/{extra}", (root / extra).read_bytes())
            for path, rel in model_files:
                # weights compress poorly: stored, and streamed so that large files need no memory
                info = zipfile.ZipInfo(f"{name}/models/{rel}", date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as dst, path.open("rb") as src:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
            for rel in vendored:
                _zip_entry(zf, f"{name}/{package.name}/{rel.as_posix()}", (package / rel).read_bytes())
            _zip_entry(zf, f"{name}/{package.name}/{VENDORED_FILE}", (json.dumps(provenance, indent=2) + "\n").encode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote %s (%d vendored files, models: %s)", target, len(vendored), [rel for _, rel in model_files])
    return target
