"""Lazy package exports (PEP 562): a package lists its public names and imports each module on first use.

The converters (``python -m coseg.histo.prepare``, ``python -m coseg.dental.prepare``) start without importing
torch or MONAI this way, which takes seconds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["attach"]


def attach(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` whose public ``name`` lives in ``exports[name]``.

    Usage in a package's ``__init__.py``: ``__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)``.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__, sorted(exports)
