"""Helpers the bundle configs call: where the bundle is, which parameters train."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["find_bundle_root", "trainable_parameters"]


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
