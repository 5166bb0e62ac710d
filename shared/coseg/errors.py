"""The one exception type for bad input files."""

from __future__ import annotations

import os

__all__ = ["InputFileError"]


class InputFileError(ValueError):
    """A file (or folder) given as input cannot be used.

    The message always names the file and the problem, e.g.
    ``InputFileError("/data/a.png", "image is 2D grey, expected RGB")`` prints
    ``/data/a.png: image is 2D grey, expected RGB``.

    Args:
        path: the offending file or folder.
        problem: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep the two-argument signature picklable (DataLoader workers re-raise it)
        return (self.__class__, (self.path, self.problem))
