"""Errors about what the user gave us, and how a command line reports them.

:class:`UserInputError` is the family of errors caused by the user's input (a file, a folder, an option value)
rather than by a bug: its message is complete on its own, so a command line prints it as ONE line,
``error: <message>``, instead of a traceback. :class:`InputFileError` (a bad file) and
:class:`InputNotFoundError` (a missing one) belong to it.

:func:`install_excepthook` makes a process report such errors that way however deeply they are wrapped: by MONAI's
config parser and transforms (``RuntimeError("applying transform ...") from err``), by ignite engines, by a thread
pool, or re-raised as text from a DataLoader worker process. Our command lines and the bundles' ``initialize``
steps install it; ``COSEG_DEBUG=1`` in the environment brings the full traceback back.
"""

from __future__ import annotations

import logging
import multiprocessing.pool
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = [
    "UserInputError",
    "InputFileError",
    "InputNotFoundError",
    "DEBUG_ENV",
    "find_user_error",
    "install_excepthook",
]

DEBUG_ENV = "COSEG_DEBUG"
"""Environment variable: set to ``1`` to get full tracebacks instead of one-line reports of user errors."""

# OS errors that name what the user gave (``open("/data/x.png")`` -> "[Errno 2] No such file or directory: ...").
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
# a user error re-raised as text by ``torch.utils.data`` from a worker process: its line of the formatted traceback
_FORMATTED_ERROR = re.compile(r"^(?P<name>[A-Za-z_][\w.]*): (?P<message>.+)$", re.MULTILINE)
_POOL_JOIN_TIMEOUT_S = 30.0


class UserInputError(ValueError):
    """The user's input (a file, a folder, an option value) cannot be used.

    The message says what is wrong in words a user can act on; :func:`install_excepthook` prints it as one line.
    A ``ValueError``, so code that catches ``ValueError`` keeps working.
    """


class InputFileError(UserInputError):
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


class InputNotFoundError(InputFileError, FileNotFoundError):
    """A file or folder the user named (or that an input refers to) does not exist.

    Both an :class:`InputFileError` and a ``FileNotFoundError``.

    Args:
        path: the missing file or folder.
        problem: what was expected there (default ``"no such file or directory"``).
    """

    def __init__(self, path: str | os.PathLike, problem: str = "no such file or directory") -> None:
        super().__init__(path, problem)


def _user_error_classes() -> dict[str, type[UserInputError]]:
    """Every :class:`UserInputError` subclass defined so far, by the name a formatted traceback gives it."""
    found: dict[str, type[UserInputError]] = {}
    todo: list[type[UserInputError]] = [UserInputError]
    while todo:
        cls = todo.pop()
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo.extend(cls.__subclasses__())
    return found


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first (each once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__


def _from_worker_text(text: str) -> UserInputError | None:
    """A user error that a DataLoader worker process raised, recovered from the text it was re-raised with
    (``torch.utils.data`` sends the formatted traceback, "Caught ... in DataLoader worker process N. Original
    Traceback ...")."""
    if "Original Traceback" not in text:
        return None
    known = _user_error_classes()
    for match in _FORMATTED_ERROR.finditer(text):  # the innermost error of the chain is formatted first
        if match.group("name") in known:
            return UserInputError(match.group("message").strip())
    return None


def find_user_error(exc: BaseException) -> BaseException | None:
    """The error to report to the user in place of ``exc``'s traceback, if ``exc`` was caused by the user's input.

    Walks ``exc``'s chain (``__cause__`` / ``__context__``) and returns the innermost :class:`UserInputError`, or a
    user error re-raised as text from a DataLoader worker process, or else the innermost ``FileNotFoundError``,
    ``FileExistsError``, ``PermissionError``, ``IsADirectoryError`` or ``NotADirectoryError`` (errors that name the
    path the user gave).

    Args:
        exc: the exception that ended the program.

    Returns:
        The user error, or ``None`` when ``exc`` looks like a bug (its traceback is then worth showing).
    """
    chain = list(_chain(exc))
    for candidate in reversed(chain):
        if isinstance(candidate, UserInputError):
            return candidate
    for candidate in reversed(chain):
        recovered = _from_worker_text(str(candidate))
        if recovered is not None:
            return recovered
    for candidate in reversed(chain):
        if isinstance(candidate, _USER_OS_ERRORS):
            return candidate
    return None


def _finish_pool_threads(timeout_s: float = _POOL_JOIN_TIMEOUT_S) -> None:
    """Wait (bounded) for thread-pool workers still running a task, e.g. MONAI ``CacheDataset`` filling its cache.

    When a task fails, ``multiprocessing.pool.ThreadPool.terminate()`` does not join its daemon threads: they finish
    their current item while the interpreter shuts down, and a thread caught inside C++ code (PIL, torch) at
    finalisation aborts the process ("terminate called without an active exception", exit status 134). The
    workers stop after their current item, so this wait is short.
    """
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is threading.current_thread() or not thread.daemon:
            continue
        if getattr(thread, "_target", None) is not multiprocessing.pool.worker:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))


def _close_progress_bars() -> None:
    """Close the progress bars left open by the failed run, so that the report stays the last line printed."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar whose stream is gone: nothing to tidy
            pass


def _quiet_record_factory(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A log record factory that keeps records about a user error to one line.

    When an engine stops, ignite logs the exception (``"... terminating due to exception: {e}"``) and MONAI's
    ``StatsHandler`` logs it with its traceback (``logger.exception``); an error from a DataLoader worker process
    even carries the worker's whole traceback in its message. For a user error such a record keeps the first line
    of its message, followed by the user error's message, and no traceback.
    """

    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.levelno < logging.ERROR or _debug_requested():
            return record
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's business
            return record
        exc = record.exc_info[1] if record.exc_info else None
        user_error = find_user_error(exc) if exc is not None else None
        if user_error is None:
            user_error = _from_worker_text(message)
        if user_error is None:
            return record
        record.exc_info = None
        record.exc_text = None
        lines = message.splitlines()
        if len(lines) > 1:
            record.msg = f"{lines[0]} ({' '.join(str(user_error).split())})"
            record.args = None
        return record

    make._coseg_factory = True  # type: ignore[attr-defined]
    return make


def _debug_requested() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _report(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
    *,
    fallback: Callable[[type[BaseException], BaseException, TracebackType | None], None],
) -> None:
    _finish_pool_threads()
    user_error = None if _debug_requested() else find_user_error(exc)
    if user_error is None:
        fallback(exc_type, exc, tb)
        return
    _close_progress_bars()
    message = " ".join(str(user_error).split()) or type(user_error).__name__
    sys.stderr.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Report uncaught user errors as one line, ``error: <message>`` on stderr, instead of a traceback.

    Replaces ``sys.excepthook``: when the uncaught exception was caused by the user's input (see
    :func:`find_user_error`) only its message is printed; any other exception goes to the hook that was installed
    before, with its full traceback. The process ends with status 1 either way. Before reporting, thread-pool
    workers still busy (MONAI ``CacheDataset``) are given up to 30 s to finish, so that the interpreter does not
    abort at shutdown, and open progress bars are closed. Records logged with a user error's traceback (ignite
    handlers log the exception that stops an engine) keep their message but lose the traceback. With
    ``COSEG_DEBUG=1`` in the environment every exception keeps its traceback.

    Calling it again changes nothing. Command lines call it in their ``__main__`` block; the bundles' configs as
    the first step of ``initialize``.
    """
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "_coseg_factory", False):
        logging.setLogRecordFactory(_quiet_record_factory(factory))
    current = sys.excepthook
    if getattr(current, "_coseg_hook", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _report(exc_type, exc, tb, fallback=current)

    hook._coseg_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
