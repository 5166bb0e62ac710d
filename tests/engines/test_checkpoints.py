"""Checkpoints: atomic files, the run they belong to, the newest complete one, the random state, weights-only loading,
command-line booleans. The end-to-end kill-and-resume test is ``tests/bundles/test_resume.py``."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandAffined, RandFlipd

from coseg.engines import (
    BestModelSaver,
    CheckpointLoader,
    TrainingCheckpointLoader,
    TrainingCheckpointSaver,
    find_resume_checkpoint,
    flag,
)
from coseg.engines.checkpoints import RUN_FILE, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from coseg.errors import InputFileError

REPO = Path(__file__).resolve().parents[2]


# ---- command-line booleans ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), ("False", False), (" TRUE ", True)],
)
def test_flag_reads_what_the_command_line_says(value, expected):
    assert flag(value, "resume") is expected


@pytest.mark.parametrize("value", ["yes", "f", "0", 0, 1, None, "", [True]])
def test_flag_refuses_anything_else(value):
    with pytest.raises(ValueError, match="resume must be true or false"):
        flag(value, "resume")


def test_flag_may_allow_null():
    assert flag(None, "ssm_silu", allow_none=True) is None and flag("null", "ssm_silu", allow_none=True) is None
    with pytest.raises(ValueError, match="ssm_silu must be true, false or null, got 'no'"):
        flag("no", "ssm_silu", allow_none=True)


def test_the_training_loader_parses_resume():
    assert TrainingCheckpointLoader({}, resume="false", checkpoint_dir="x").resume is False
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        TrainingCheckpointLoader({}, resume="maybe", checkpoint_dir="x")


# ---- atomic files and weights-only loading ---------------------------------------------------------------------------


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_final.pt"
    save_checkpoint({"w": torch.ones(3)}, path)
    real_save = torch.save

    def broken(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(Path(f).read_bytes()[:20])  # cut short, then the "kill"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_final.pt"]


class _Payload:
    """Unpickling this would create a file: the proof that a loader executed pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def pickled_checkpoint(tmp_path):
    from coseg.networks import CoSegPlusPlus

    torch.manual_seed(0)
    net = CoSegPlusPlus.from_preset("micro", freeze_encoder=False)
    marker = tmp_path / "executed"
    path = tmp_path / "model.pt"
    torch.save({"model": net.state_dict(), "payload": _Payload(str(marker))}, path)
    return net, path, marker


def _load_with_every_loader(net, path):
    """Every way the package reads a checkpoint, each expected to raise."""
    from coseg.bundle.export import _check_weights
    from coseg.networks import CoSegPlusPlus, read_build_args
    from coseg.wsi.run import load_network_weights

    engine = Engine(lambda e, b: None)
    yield lambda: load_checkpoint(path)
    yield lambda: read_build_args(path)
    yield lambda: CoSegPlusPlus.from_saved(path)
    yield lambda: load_network_weights(net, path, device="cpu")
    yield lambda: CheckpointLoader(load_path=str(path), load_dict={"model": net})(engine)
    yield lambda: TrainingCheckpointLoader({"model": net}, load_path=path)(engine)
    yield lambda: _check_weights(path, None)


def test_a_checkpoint_carrying_a_pickled_object_is_refused_everywhere(pickled_checkpoint):
    net, path, marker = pickled_checkpoint
    for load in _load_with_every_loader(net, path):
        with pytest.raises((InputFileError, Exception)) as err:
            load()
        assert "weights_only" in str(err.value) or "Weights only" in str(err.value), err.value
        assert not marker.exists(), "a loader executed pickled code"


def test_every_torch_load_of_the_package_is_weights_only():
    """Keep it so: a source check over shared/coseg (the behaviour is checked above)."""
    offenders = []
    for path in sorted((REPO / "shared" / "coseg").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[match.start() : end + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(REPO)}: {call[:80]}")
    assert not offenders, offenders


# ---- random state ---------------------------------------------------------------------------------------------------


class _FakeTrainer:
    def __init__(self, loader):
        self.data_loader = loader


def _augmented_loader():
    transform = Compose(
        [
            RandFlipd(keys="x", prob=0.5, spatial_axis=0),
            RandAffined(keys="x", prob=1.0, rotate_range=0.3, padding_mode="zeros"),
        ]
    )
    data = [{"x": np.arange(64, dtype=np.float32).reshape(1, 8, 8) * (i + 1)} for i in range(6)]
    return DataLoader(Dataset(data, transform), batch_size=2, shuffle=True, num_workers=0)


def _draws(loader) -> list:
    return [
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        [batch["x"].clone() for batch in loader],  # data order and augmentations
    ]


def test_the_random_state_restores_data_order_augmentations_and_global_generators(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    loader = _augmented_loader()
    trainer = _FakeTrainer(loader)
    _draws(loader)  # an epoch
    state = rng_state(trainer)
    assert len(state["transforms"]) >= 3  # the flip's, the affine's and the affine's inner transforms' generators
    first = _draws(loader)
    set_rng_state(state, trainer)
    again = _draws(loader)
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert all(torch.equal(a, b) for a, b in zip(first[3], again[3], strict=True))

    # a fresh process: other transform objects built from the same config, the state read back from a file
    path = tmp_path / "rng.pt"
    save_checkpoint(state, path)
    other = _FakeTrainer(_augmented_loader())
    set_rng_state(load_checkpoint(path), other)
    assert all(torch.equal(a, b) for a, b in zip(_draws(other.data_loader)[3], first[3], strict=True))


def test_changed_transforms_restore_the_global_state_with_a_warning():
    trainer = _FakeTrainer(_augmented_loader())
    state = rng_state(trainer)
    state["transforms"] = state["transforms"][:1]
    with pytest.warns(UserWarning, match="random generators"):
        set_rng_state(state, trainer)


# ---- runs, the newest complete checkpoint, retention ---------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))


def _trainer(epochs_data=4):
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        (net.w * torch.tensor(batch)).sum().backward()
        opt.step()

    return Engine(step), net, opt


def _train(tmp_path, *, epochs, resume=False, n_saved=2, load_path=None):
    engine, net, opt = _trainer()
    if resume or load_path is not None:
        TrainingCheckpointLoader(
            {"model": net, "optimizer": opt}, resume=True, checkpoint_dir=tmp_path, load_path=load_path
        ).attach(engine)
    TrainingCheckpointSaver(
        tmp_path,
        {"model": net, "optimizer": opt},
        save_interval=1,
        n_saved=n_saved,
        final_filename="checkpoint_final.pt",
    ).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=epochs)
    return engine, net


def test_a_run_records_itself_and_keeps_its_newest_checkpoints(tmp_path):
    engine, net = _train(tmp_path, epochs=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "checkpoint_final.pt", RUN_FILE]
    final = load_checkpoint(tmp_path / "checkpoint_final.pt")
    assert final["run"]["epoch"] == 3 and final["run"]["iteration"] == 9 and "rng" in final
    assert find_resume_checkpoint(tmp_path).name in ("checkpoint_final.pt", "checkpoint_epoch=3.pt")
    # resumed with more epochs: continues the run, and its older interval checkpoints are pruned too
    engine, resumed = _train(tmp_path, epochs=5, resume=True)
    assert engine.state.epoch == 5 and engine.state.iteration == 15
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=4.pt", "checkpoint_epoch=5.pt", "checkpoint_final.pt", RUN_FILE]
    assert load_checkpoint(tmp_path / "checkpoint_final.pt")["run"]["id"] == final["run"]["id"]


def test_resume_takes_the_newest_complete_checkpoint_of_this_run_only(tmp_path):
    _train(tmp_path, epochs=2, n_saved=None)
    older = load_checkpoint(tmp_path / "checkpoint_final.pt")["run"]["id"]
    # a new run in the same folder, stopped after epoch 1: older files with more iterations must not be taken
    (tmp_path / "checkpoint_final.pt").rename(tmp_path / "checkpoint_older_final.pt")
    engine, net, opt = _trainer()
    TrainingCheckpointSaver(tmp_path, {"model": net}, save_interval=1, save_final=False).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=1)
    newer = load_checkpoint(tmp_path / "checkpoint_epoch=1.pt")["run"]["id"]
    assert newer != older
    (tmp_path / "checkpoint_epoch=9.pt").write_bytes(b"half a checkpoint")  # a save cut short by an older version
    with pytest.warns(UserWarning, match="checkpoint_epoch=9.pt"):
        assert find_resume_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch=1.pt"


def test_resume_without_a_run_or_without_a_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(InputFileError, match="no training run recorded here"):
        find_resume_checkpoint(tmp_path)
    (tmp_path / RUN_FILE).write_text('{"id": "abc", "started": "today"}', encoding="utf-8")
    with pytest.raises(InputFileError, match="run abc .* has no complete checkpoint yet.*--resume false"):
        find_resume_checkpoint(tmp_path)


def test_a_run_that_fails_before_its_first_step_writes_nothing(tmp_path):
    engine, net, opt = _trainer()
    TrainingCheckpointSaver(tmp_path, {"model": net}, save_interval=1).attach(engine)
    with pytest.raises(TypeError):
        engine.run(["not a number"], max_epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_the_loader_must_come_before_the_saver(tmp_path):
    _train(tmp_path, epochs=1)
    engine, net, opt = _trainer()
    TrainingCheckpointSaver(tmp_path, {"model": net}).attach(engine)
    TrainingCheckpointLoader({"model": net}, checkpoint_dir=tmp_path).attach(engine)
    with pytest.raises(RuntimeError, match="before TrainingCheckpointSaver"):
        engine.run([1.0], max_epochs=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_dict": {}}, "at least one"),
        ({"save_dict": {"rng": 1}}, "added by the handler"),
        ({"epoch_level": False}, "epoch_level"),
        ({"n_saved": 0}, "n_saved"),
        ({"final_filename": "last.pt"}, "checkpoint"),
    ],
)
def test_the_saver_checks_its_arguments(tmp_path, kwargs, match):
    args = {"save_dir": tmp_path, "save_dict": {"model": _Net()}, **kwargs}
    with pytest.raises(ValueError, match=match):
        TrainingCheckpointSaver(**args)


# ---- model.pt --------------------------------------------------------------------------------------------------------


def _evaluator_with(scores):
    evaluator = Engine(lambda e, b: None)
    evaluator.state.key_metric_name = "val_mpq"
    values = iter(scores)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_mpq"] = next(values)

    return evaluator


def test_the_best_model_is_replaced_only_by_a_better_one_even_after_a_resume(tmp_path, monkeypatch):
    net = _Net()
    saver = BestModelSaver(tmp_path, net)
    evaluator = _evaluator_with([0.2, 0.5, 0.4])
    saver.attach(evaluator)
    with torch.no_grad():
        for value in (1.0, 2.0, 3.0):
            net.w.fill_(value)
            evaluator.run([0], max_epochs=evaluator.state.epoch + 1)
    assert torch.equal(load_checkpoint(tmp_path / "model.pt")["w"], torch.full((2,), 2.0))
    assert saver.state_dict() == {"best": 0.5, "epoch": 2}
    # a resumed run: its first validation (0.3) is worse than the best before the interruption
    resumed = BestModelSaver(tmp_path, net)
    resumed.load_state_dict(saver.state_dict())
    evaluator = _evaluator_with([0.3])
    resumed.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert torch.equal(load_checkpoint(tmp_path / "model.pt")["w"], torch.full((2,), 2.0))
    # a save cut short leaves the best model whole (never deleted first)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    evaluator = _evaluator_with([0.9])
    resumed.attach(evaluator)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator.run([0], max_epochs=1)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path / "model.pt")["w"], torch.full((2,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
