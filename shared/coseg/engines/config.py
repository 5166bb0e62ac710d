"""Helpers the bundle configs call: where the bundle is, which parameters train, what a boolean setting says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["find_bundle_root", "flag", "trainable_parameters"]


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


def trainable_parameters(network: Any) -> list[Any]:
    """The parameters that require gradients (the frozen SAM2 trunk is left out of the optimizer)."""
    return [p for p in network.parameters() if p.requires_grad]


def flag(value: Any, name: str, *, allow_none: bool = False) -> bool | None:
    """A boolean setting as it means: ``True``/``False``, or the strings ``"true"``/``"false"`` in any case.

    ``python -m monai.bundle run ... --resume false`` hands the config the *string* ``'false'``, which Python reads as
    true (``not 'false'`` is ``False``). Configs pass every boolean setting through this function once, where it is
    used, so that the command line means what it says.

    Args:
        value: the setting's value.
        name: the setting's name, for the error message.
        allow_none: accept ``None`` (and ``"null"`` / ``"none"``) and return ``None`` ("not set").

    Returns:
        The boolean (or ``None``).

    Raises:
        ValueError: anything else (``1``, ``"yes"``, ``"False "`` is fine but ``"f"`` is not).
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
        if allow_none and text in ("null", "none"):
            return None
    elif value is None and allow_none:
        return None
    allowed = "true, false or null" if allow_none else "true or false"
    raise ValueError(f"{name} must be {allowed}, got {value!r}")
