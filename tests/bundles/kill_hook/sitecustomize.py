"""Fault injection for the resume tests: SIGKILL this process at a chosen moment (imported by Python at start-up when
this folder is on ``PYTHONPATH``; inert unless ``COSEG_TEST_KILL`` is set).

``COSEG_TEST_KILL``:

- ``save:<name>``: during the save of the file ``<name>`` (written directly or through a temporary sibling
  ``.<name>.<random>.tmp.pt``): the file being written is cut to half its size, then the process is killed.
- ``step:<n>``: right after this process's ``n``-th optimizer step (in the middle of an epoch).
"""

import os
import signal

_SPEC = os.environ.get("COSEG_TEST_KILL", "")


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if _SPEC.startswith("save:"):
    import torch

    _target = _SPEC[len("save:") :]
    _save = torch.save

    def _save_and_die(obj, f, *args, **kwargs):
        name = os.path.basename(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else ""
        _save(obj, f, *args, **kwargs)
        if name == _target or name.startswith(f".{_target}."):
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
            _kill()

    torch.save = _save_and_die

elif _SPEC.startswith("step:"):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _limit = int(_SPEC[len("step:") :])
    _steps = [0]

    def _count(optimizer, args, kwargs):
        _steps[0] += 1
        if _steps[0] == _limit:
            _kill()

    register_optimizer_step_post_hook(_count)
