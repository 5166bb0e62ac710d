"""Training checkpoints you can trust: written atomically, found again after a crash, and resuming exactly.

- Every file is written under a temporary name beside its final one and renamed into place (:func:`save_checkpoint`),
  so a kill at any moment leaves the previous file whole; a file that is replaced is never deleted first.
- A training run has an id, recorded in ``<ckpt_dir>/training_run.json`` once it has trained a step and in each of
  its checkpoints (``"run"``). ``--resume true`` loads the newest complete checkpoint of the run recorded there
  (:func:`find_resume_checkpoint`), never one of an older run and never a half-written file.
- A checkpoint holds, besides the model, optimizer, scheduler and trainer (epoch, iteration), the random state
  (:func:`rng_state`: torch, CUDA, numpy, Python, and every random data transform of the training data), so that a
  run resumed from an epoch checkpoint draws the same data order, augmentations and dropout as one that was never
  interrupted: on CPU with a fixed seed and no data workers the final weights are bit-identical.
- Every file is read with ``torch.load(weights_only=True)``: a checkpoint carrying pickled objects is refused.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
import types
import uuid
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader

from coseg.engines.config import flag
from coseg.errors import InputFileError
from coseg.io import atomic_write_path, write_json

__all__ = [
    "RUN_FILE",
    "BestModelSaver",
    "CheckpointLoader",
    "TrainingCheckpointLoader",
    "TrainingCheckpointSaver",
    "find_resume_checkpoint",
    "load_checkpoint",
    "read_run",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

logger = logging.getLogger(__name__)

#: the file in a checkpoint folder that names the training run writing there
RUN_FILE = "training_run.json"

#: the training checkpoints a run writes into its folder (``checkpoint_final.pt``, ``checkpoint_epoch=N.pt``)
_CHECKPOINT_GLOB = "checkpoint*.pt"
_EPOCH_FILE = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")

#: what each engine's training run is: {"id", "files": [interval checkpoints of the run, oldest first]}
_RUNS: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()


# ---- files --------------------------------------------------------------------------------------------------------


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, renamed into place when complete.

    A kill during the save leaves ``path`` as it was (and a hidden ``.<name>.<random>.tmp.pt`` that the next run's
    :class:`TrainingCheckpointSaver` removes). The file gets the mode the umask gives.
    """
    with atomic_write_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``, with errors that name the file.

    Raises:
        InputFileError: the file does not exist, is cut short, or holds anything but tensors and plain containers
            (a pickled object is refused, never executed).
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "checkpoint not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types: UnpicklingError, RuntimeError, zip errors, ...
        raise InputFileError(p, f"cannot be read with torch.load(weights_only=True): {err}") from err


def read_run(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The training run recorded in ``<ckpt_dir>/training_run.json`` (``{"id", "started", ...}``), or ``None``.

    Raises:
        InputFileError: the file exists but is not a run record.
    """
    import json

    path = Path(ckpt_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"cannot be read as JSON: {err}") from err
    if not isinstance(run, Mapping) or not isinstance(run.get("id"), str):
        raise InputFileError(path, 'not a training run record (expected {"id": ..., "started": ...})')
    return dict(run)


def _write_run(ckpt_dir: Path, run_id: str, *, started: str | None = None) -> None:
    write_json(ckpt_dir / RUN_FILE, {"id": run_id, "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _remove_temporaries(ckpt_dir: Path) -> None:
    """Remove what a killed save left behind: hidden temporary siblings of checkpoints and ``model.pt``."""
    for tmp in ckpt_dir.glob(".*.tmp*"):
        if tmp.name.startswith((".checkpoint", ".model", "." + RUN_FILE)) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            logger.info("removed %s, left by an interrupted save", tmp)


def _run_checkpoints(ckpt_dir: Path, run_id: str) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every readable checkpoint of run ``run_id`` in ``ckpt_dir``, oldest first."""
    found = []
    for path in sorted(ckpt_dir.glob(_CHECKPOINT_GLOB)):
        try:
            ckpt = load_checkpoint(path, mmap=True)
        except InputFileError as err:
            warnings.warn(f"{err} -- skipped", stacklevel=3)
            continue
        run = ckpt.get("run") if isinstance(ckpt, Mapping) else None
        if isinstance(run, Mapping) and run.get("id") == run_id:
            found.append((int(run["iteration"]), path))
        else:
            logger.debug("%s belongs to another run", path)
    return sorted(found)


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> Path:
    """The newest complete checkpoint of the training run recorded in ``ckpt_dir`` (the most iterations).

    Files of other runs (an older training in the same folder) are ignored; unreadable ones (a save cut short by an
    older version that did not write atomically) are skipped with a warning.

    Raises:
        InputFileError: no run is recorded there, or the run has no complete checkpoint yet (killed before its
            first one): the message says how to start afresh.
    """
    folder = Path(ckpt_dir)
    run = read_run(folder)
    if run is None:
        raise InputFileError(
            folder,
            f"no training run recorded here ({RUN_FILE}): nothing to resume. Start with --resume false, or name a "
            "checkpoint with --resume_checkpoint PATH",
        )
    found = _run_checkpoints(folder, run["id"])
    if not found:
        raise InputFileError(
            folder,
            f"training run {run['id']} (started {run.get('started', '?')}) has no complete checkpoint yet: it stopped "
            "before its first one. Start afresh with --resume false",
        )
    return found[-1][1]


# ---- random state ---------------------------------------------------------------------------------------------------


def _random_states(root: Any) -> list[np.random.RandomState]:
    """Every ``numpy.random.RandomState`` reachable from ``root`` through attributes, lists and dicts (each once, in a
    fixed order): the ``R`` of MONAI's random transforms and of the transforms they wrap."""
    out: list[np.random.RandomState] = []
    seen: set[int] = set()
    skip = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool, torch.Tensor, np.ndarray)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.random.RandomState):
            out.append(obj)
            continue
        if isinstance(obj, skip) or isinstance(obj, torch.nn.Module):
            continue
        if isinstance(obj, Mapping):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple)):
            children = list(obj)
        elif hasattr(obj, "__dict__"):
            children = [v for k, v in vars(obj).items() if not k.startswith("__")]
        else:
            continue
        stack.extend(reversed(children))
    return out


def _transform_roots(engine: Engine | None) -> list[Any]:
    """The transforms of the engine's training data (not the cached data itself)."""
    loader = getattr(engine, "data_loader", None) if engine is not None else None
    dataset = getattr(loader, "dataset", None)
    roots = []
    while dataset is not None and len(roots) < 8:
        roots.append(getattr(dataset, "transform", None))
        dataset = getattr(dataset, "dataset", None)
    return [r for r in roots if r is not None]


def _np_state(state: Any) -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = state
    keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {"keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _np_tuple(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].cpu().numpy().astype(np.uint32)
    return ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["gauss"]))


def rng_state(engine: Engine | None = None) -> dict[str, Any]:
    """The random state of this process as tensors and numbers (what ``torch.load(weights_only=True)`` reads):
    torch's (and CUDA's, when initialised), numpy's and Python's global generators, the generator of the engine's
    data loader and sampler when they have one, and every random data transform of its training data.

    Args:
        engine: the trainer (its ``data_loader``); ``None`` for the global generators only.
    """
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(np.random.get_state()),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "transforms": [_np_state(r.get_state()) for root in _transform_roots(engine) for r in _random_states(root)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    loader = getattr(engine, "data_loader", None) if engine is not None else None
    for key, owner in (("loader", loader), ("sampler", getattr(loader, "sampler", None))):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            state[key] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], engine: Engine | None = None) -> None:
    """Restore what :func:`rng_state` recorded.

    The random transforms are matched by position: when the training data's transforms changed since the checkpoint
    (another number of random generators), theirs are not restored, with a warning (the resumed run then differs from
    an uninterrupted one).
    """
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_np_tuple(state["numpy"]))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    transforms = [r for root in _transform_roots(engine) for r in _random_states(root)]
    saved = state.get("transforms", [])
    if len(saved) == len(transforms):
        for generator, s in zip(transforms, saved, strict=True):
            generator.set_state(_np_tuple(s))
    else:
        warnings.warn(
            f"the training data has {len(transforms)} random generators in its transforms, the checkpoint "
            f"{len(saved)}: their states are not restored, and the resumed run will not repeat the uninterrupted "
            "one exactly",
            stacklevel=2,
        )
    loader = getattr(engine, "data_loader", None) if engine is not None else None
    for key, owner in (("loader", loader), ("sampler", getattr(loader, "sampler", None))):
        generator = getattr(owner, "generator", None)
        if key in state and isinstance(generator, torch.Generator):
            generator.set_state(state[key].cpu())


# ---- handlers -------------------------------------------------------------------------------------------------------


def _unwrap(obj: Any) -> Any:
    return obj.module if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else obj


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class CheckpointLoader(_MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` whose failures name the file.

    Same arguments and behaviour; a missing or unreadable file, weights that do not fit the network (missing or
    unexpected keys, other shapes, or other build arguments recorded with them: see
    :meth:`coseg.networks.CoSegPlusPlus.from_saved`) raise :class:`~coseg.errors.InputFileError` with the file's path
    and MONAI's or torch's message.
    """

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise InputFileError(self.load_path, "checkpoint not found (train the bundle first or give its path)")
        try:
            super().__call__(engine)
        except Exception as err:  # torch.load and load_state_dict raise many types
            raise InputFileError(self.load_path, f"cannot be loaded ({type(err).__name__}: {err})") from err


class BestModelSaver:
    """Save the network's weights (``model.pt``, a plain state dict) whenever the evaluator's key metric improves.

    Attach it to the validation evaluator. The file is replaced atomically (never deleted first). The best score is
    part of the training checkpoint (put this object in the ``save_dict`` / ``load_dict`` of
    :class:`TrainingCheckpointSaver` / :class:`TrainingCheckpointLoader`), so a resumed run replaces ``model.pt`` only
    with a better model than the best before the interruption.

    Args:
        save_dir: the folder.
        network: the network (a ``DistributedDataParallel`` wrapper is unwrapped).
        filename: the file name.
        key_metric_name: the metric to compare; default the evaluator's key metric.
        greater_or_equal: also save when the score equals the best.

    Raises:
        ValueError: an empty ``filename``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        *,
        filename: str = "model.pt",
        key_metric_name: str | None = None,
        greater_or_equal: bool = False,
    ) -> None:
        if not filename:
            raise ValueError("filename must not be empty")
        self.save_dir = Path(save_dir)
        self.network = network
        self.filename = filename
        self.key_metric_name = key_metric_name
        self.greater_or_equal = flag(greater_or_equal, "greater_or_equal")
        self.best: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise ValueError(f"BestModelSaver: the evaluator has no key metric {name!r}")
        try:
            score = float(engine.state.metrics[name])
        except (TypeError, ValueError):
            warnings.warn(f"key metric {name} is not a number; {self.filename} is not saved", stacklevel=2)
            return
        if not math.isfinite(score):
            score = -math.inf
        better = self.best is None or score > self.best or (self.greater_or_equal and score == self.best)
        if better:
            save_checkpoint(_unwrap(self.network).state_dict(), self.save_dir / self.filename)
            self.best, self.best_epoch = score, int(engine.state.epoch)
            logger.info("saved %s (%s %.4f, epoch %d)", self.save_dir / self.filename, name, score, self.best_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_epoch = None if state.get("epoch") is None else int(state["epoch"])


class TrainingCheckpointSaver:
    """Save resumable training checkpoints: every ``save_interval`` epochs (``checkpoint_epoch=N.pt``, the newest
    ``n_saved`` kept) and when training completes (``final_filename``).

    Each checkpoint holds ``save_dict``'s state dicts, the trainer's (``"trainer"``: epoch, iteration), the AMP grad
    scaler's when the trainer has one, the random state (``"rng"``, :func:`rng_state`) and the run (``"run"``: id,
    epoch, iteration). Files are written atomically; an older interval checkpoint is removed only once a newer one is
    complete. A fresh run records a new id in ``<save_dir>/training_run.json`` once its first iteration is done (a run
    that fails before writes nothing); a run resumed by :class:`TrainingCheckpointLoader` (attached before this
    handler) keeps its id. Checkpoints are taken at epoch boundaries only, which is where a run can resume exactly;
    nothing is saved when training stops with an error (a half-finished epoch cannot be resumed exactly).

    Args:
        save_dir: the folder.
        save_dict: ``{name: object with state_dict()}``: model, optimizer, scheduler, :class:`BestModelSaver`, ...
        save_final: save ``final_filename`` when training completes.
        final_filename: the final checkpoint's name.
        save_interval: epochs between interval checkpoints (0: none).
        n_saved: interval checkpoints of this run to keep (``None``: all).
        epoch_level: must be ``True`` (kept for MONAI's signature).

    Raises:
        ValueError: an empty ``save_dict``, ``save_interval`` < 0, ``n_saved`` < 1, ``epoch_level`` false, or a
            ``save_dict`` key the handler uses itself.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        *,
        save_final: bool = True,
        final_filename: str = "checkpoint_final.pt",
        save_interval: int = 0,
        n_saved: int | None = None,
        epoch_level: bool = True,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save")
        reserved = {"trainer", "scaler", "rng", "run"} & set(save_dict)
        if reserved:
            raise ValueError(f"save_dict keys {sorted(reserved)} are added by the handler itself")
        if int(save_interval) < 0:
            raise ValueError(f"save_interval must be >= 0, got {save_interval}")
        if n_saved is not None and int(n_saved) < 1:
            raise ValueError(f"n_saved must be >= 1 or None, got {n_saved}")
        if not flag(epoch_level, "epoch_level"):
            raise ValueError("iteration-level checkpoints cannot resume exactly: epoch_level must be true")
        if not final_filename.startswith("checkpoint") or not final_filename.endswith(".pt"):
            raise ValueError(
                f"final_filename must look like checkpoint*.pt (what resuming looks for), got {final_filename!r}"
            )
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_final = flag(save_final, "save_final")
        self.final_filename = final_filename
        self.save_interval = int(save_interval)
        self.n_saved = None if n_saved is None else int(n_saved)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_run)
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save_interval)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self._save_final)

    def _start(self, engine: Engine) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        _remove_temporaries(self.save_dir)
        if engine not in _RUNS:  # a fresh run (a resumed one was registered by the loader)
            _RUNS[engine] = {"id": uuid.uuid4().hex, "files": [], "recorded": False}

    def _record_run(self, engine: Engine) -> None:
        # a fresh run becomes the folder's run once it has trained a step: from then on --resume true never takes an
        # older run's checkpoint; a run that fails before (bad data) leaves the folder as it was
        run = _RUNS[engine]
        if not run["recorded"]:
            _write_run(self.save_dir, run["id"])
            run["recorded"] = True
            logger.info("training run %s: checkpoints in %s", run["id"], self.save_dir)

    def _state(self, engine: Engine) -> dict[str, Any]:
        run = _RUNS[engine]
        state = {k: _unwrap(v).state_dict() for k, v in self.save_dict.items()}
        state["trainer"] = engine.state_dict()
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        state["rng"] = rng_state(engine)
        state["run"] = {"id": run["id"], "epoch": int(engine.state.epoch), "iteration": int(engine.state.iteration)}
        return state

    def _save_interval(self, engine: Engine) -> None:
        path = self.save_dir / f"checkpoint_epoch={engine.state.epoch}.pt"
        save_checkpoint(self._state(engine), path)
        files = _RUNS[engine]["files"]
        files[:] = [f for f in files if f != path] + [path]
        while self.n_saved is not None and len(files) > self.n_saved:
            files.pop(0).unlink(missing_ok=True)
        logger.info("saved checkpoint %s", path)

    def _save_final(self, engine: Engine) -> None:
        path = self.save_dir / self.final_filename
        save_checkpoint(self._state(engine), path)
        logger.info("training completed, saved checkpoint %s", path)


class TrainingCheckpointLoader:
    """Resume a training run: load its newest complete checkpoint when the trainer starts.

    With ``resume`` true and no ``load_path``, the checkpoint is :func:`find_resume_checkpoint` of ``checkpoint_dir``
    (the run recorded in its ``training_run.json``); a ``load_path`` names one explicitly (the run continues under
    that checkpoint's id). ``load_dict``'s objects, the trainer (epoch, iteration), the AMP grad scaler and the random
    state are restored, so training continues exactly where the checkpoint was taken. With ``resume`` false it does
    nothing (:class:`TrainingCheckpointSaver` starts a new run). Attach it before the saver.

    Args:
        load_dict: ``{name: object with load_state_dict()}``, the keys of the saver's ``save_dict``.
        resume: ``True``/``False`` or ``"true"``/``"false"`` (the command line's); anything else is refused.
        checkpoint_dir: where the run's checkpoints are (needed without ``load_path``).
        load_path: a checkpoint to resume from instead of the newest of the run.
        map_location: ``torch.load``'s ``map_location``.
        strict: load module state dicts strictly.

    Raises:
        ValueError: ``resume`` is not a boolean, or neither ``checkpoint_dir`` nor ``load_path`` is given.
    """

    def __init__(
        self,
        load_dict: Mapping[str, Any],
        *,
        resume: bool | str = True,
        checkpoint_dir: str | os.PathLike | None = None,
        load_path: str | os.PathLike | None = None,
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        self.resume = flag(resume, "resume")
        if self.resume and checkpoint_dir is None and load_path is None:
            raise ValueError("resuming needs checkpoint_dir (to find the newest checkpoint) or load_path")
        reserved = {"trainer", "scaler", "rng", "run"} & set(load_dict)
        if reserved:
            raise ValueError(f"load_dict keys {sorted(reserved)} are restored by the handler itself")
        self.load_dict = dict(load_dict)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.load_path = None if load_path is None else Path(load_path)
        self.map_location = map_location
        self.strict = flag(strict, "strict")
        self.loaded_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if engine in _RUNS:
            raise RuntimeError("TrainingCheckpointLoader must be attached before TrainingCheckpointSaver")
        path = self.load_path if self.load_path is not None else find_resume_checkpoint(self.checkpoint_dir)
        ckpt = load_checkpoint(path, map_location=self.map_location)
        if not isinstance(ckpt, Mapping):
            raise InputFileError(path, f"holds a {type(ckpt).__name__}, not a training checkpoint")
        missing = sorted((set(self.load_dict) | {"trainer"}) - set(ckpt))
        if missing:
            raise InputFileError(
                path, f"not a training checkpoint of this config: no {missing} (it has {sorted(ckpt)})"
            )
        to_load = {**self.load_dict, "trainer": engine}
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and "scaler" in ckpt:
            to_load["scaler"] = scaler
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint={k: ckpt[k] for k in to_load}, strict=self.strict)
        except Exception as err:  # load_state_dict raises RuntimeError, KeyError, ValueError, ...
            raise InputFileError(path, f"does not fit this training ({type(err).__name__}: {err})") from err
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise InputFileError(
                path, f"was taken at epoch {engine.state.epoch}, beyond this run's {prior_max_epochs} epochs"
            )
        engine.state.max_epochs = prior_max_epochs
        run = ckpt.get("run")
        if isinstance(run, Mapping) and isinstance(ckpt.get("rng"), Mapping):
            set_rng_state(ckpt["rng"], engine)
            run_id = str(run["id"])
        else:
            warnings.warn(
                f"{path}: a checkpoint without random state (saved by an older version): training continues, but not "
                "exactly as an uninterrupted run would",
                stacklevel=2,
            )
            run_id = uuid.uuid4().hex
        folder = self.checkpoint_dir if self.checkpoint_dir is not None else path.parent
        files = [p for _, p in _run_checkpoints(folder, run_id) if _EPOCH_FILE.match(p.name)] if folder.is_dir() else []
        files.sort(key=lambda p: int(_EPOCH_FILE.match(p.name).group(1)))
        _RUNS[engine] = {"id": run_id, "files": files, "recorded": True}
        if _rank() == 0 and folder.is_dir():
            previous = read_run(folder)
            if previous is None or previous["id"] != run_id:
                _write_run(folder, run_id)
        self.loaded_from = path
        logger.info("resumed training run %s from %s (epoch %d)", run_id, path, engine.state.epoch)
