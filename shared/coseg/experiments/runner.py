"""Run an experiment: every row × seed trains through the bundle's ``train.json`` and is tested through
``evaluate.json``; then the table, the paired tests and the plot are written.

Output folder layout::

    <output>/experiment.json                  the experiment, the settings and the runs (provenance)
    <output>/runs/<row>/seed<k>/train_args.json     arguments of ``python -m monai.bundle run training --args_file``
    <output>/runs/<row>/seed<k>/evaluate_args.json  arguments of ``python -m monai.bundle run evaluating --args_file``
    <output>/runs/<row>/seed<k>/models/       checkpoints (model.pt = best validation)
    <output>/runs/<row>/seed<k>/eval/         training logs, validation_history.json, evaluation/ (test report)
    <output>/runs/<row>/seed<k>/run.json      status and durations
    <output>/table.csv, table.md, runs.csv, significance.csv, <plot>.png

A finished run (its evaluation report exists) is skipped when the experiment is run again with the same
arguments, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coseg.errors import UserInputError
from coseg.experiments.plot import Panel, Series, draw_line_plot
from coseg.experiments.spec import ExperimentSpec, RowSpec, parse_experiment, spec_to_json
from coseg.experiments.tables import (
    Column,
    Comparison,
    RowSummary,
    RunMetrics,
    compare_rows,
    comparisons_csv,
    csv_text,
    read_per_image,
    run_metrics,
    runs_csv,
    summarize_rows,
    table_columns,
    table_csv,
    table_markdown,
)
from coseg.io import write_json, write_text

__all__ = [
    "CHECKPOINTS",
    "ExperimentResult",
    "ExperimentSettings",
    "RunPlan",
    "check_override_keys",
    "collect_results",
    "evaluate_run",
    "plan_runs",
    "prepare_output",
    "run_experiment",
    "train_run",
]

logger = logging.getLogger(__name__)

#: which checkpoint of a run is tested: the best validation one (``model.pt``) or the last (``checkpoint_final.pt``)
CHECKPOINTS = {"best": "model.pt", "final": "checkpoint_final.pt"}

#: keys the runner sets for every run; an experiment or the command line cannot override them
RESERVED_KEYS = ("seed", "ckpt_dir", "output_dir", "test_dataset_dir", "test_split", "config_file")

EXTERNAL_TEST_CONFIG = os.path.join("configs", "experiments", "evaluate_external.json")


@dataclass
class ExperimentSettings:
    """How to run an experiment.

    Attributes:
        bundle: the bundle root (with ``configs/train.json`` and ``configs/evaluate.json``).
        output_dir: the experiment's output folder.
        seeds: one run per row and seed (``monai.utils.set_determinism(seed)`` through the bundle's ``seed``).
        config_files: extra override config files merged after ``train.json`` (e.g. ``quickstart.json``).
        overrides: bundle overrides applied last (command line: ``--preset``, ``--epochs``, ``--set``).
        test_dataset_dir: a separate prepared dataset to test on (Table 10); default: ``dataset_dir``.
        test_split: the split of the test dataset.
        checkpoint: ``"best"`` or ``"final"`` (see :data:`CHECKPOINTS`).
        force: retrain finished runs (their folders are deleted first).
        logging_file: passed to ``ConfigWorkflow`` (``False``: leave logging as it is).
    """

    bundle: Path
    output_dir: Path
    seeds: tuple[int, ...] = (0,)
    config_files: tuple[Path, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    test_dataset_dir: Path | None = None
    test_split: str = "test"
    checkpoint: str = "best"
    force: bool = False
    logging_file: str | bool = False

    def __post_init__(self) -> None:
        self.bundle = Path(self.bundle).expanduser().resolve()
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        self.config_files = tuple(Path(p).expanduser().resolve() for p in self.config_files)
        if self.test_dataset_dir is not None:
            self.test_dataset_dir = Path(self.test_dataset_dir).expanduser().resolve()
        if isinstance(self.seeds, int) or not self.seeds:
            raise UserInputError(f"seeds must be a non-empty list of integers, got {self.seeds!r}")
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in self.seeds):
            raise TypeError(f"seeds must be integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserInputError(f"seeds must be distinct, got {self.seeds!r}")
        self.seeds = tuple(int(s) for s in self.seeds)
        if self.checkpoint not in CHECKPOINTS:
            raise UserInputError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {self.checkpoint!r}")
        for path in [self.bundle / "configs" / "train.json", self.bundle / "configs" / "evaluate.json"]:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; is {self.bundle} a bundle root?")
        for path in self.config_files:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such config file")
        reserved = sorted(set(self.overrides) & set(RESERVED_KEYS))
        if reserved:
            raise UserInputError(f"{reserved} are set by the experiment runner for each run and cannot be overridden")

    @property
    def train_files(self) -> list[str]:
        """Config files of training, in merge order."""
        return [str(self.bundle / "configs" / "train.json")] + [str(p) for p in self.config_files]

    @property
    def evaluate_files(self) -> list[str]:
        """Config files of testing, in merge order."""
        return self.train_files + [
            str(self.bundle / "configs" / "evaluate.json"),
            str(self.bundle / EXTERNAL_TEST_CONFIG),
        ]

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-ready values (recorded in ``experiment.json``)."""
        return {
            "bundle": str(self.bundle),
            "config_files": [str(p) for p in self.config_files],
            "overrides": dict(self.overrides),
            "seeds": list(self.seeds),
            "test_dataset_dir": None if self.test_dataset_dir is None else str(self.test_dataset_dir),
            "test_split": self.test_split,
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class RunPlan:
    """One run: a row of the experiment with one seed.

    Attributes:
        row: the row.
        seed: the seed.
        run_dir: its folder.
        train_args: the ``--args_file`` content of training (``config_file`` and every override).
        evaluate_args: the same for testing.
    """

    row: RowSpec
    seed: int
    run_dir: Path
    train_args: dict[str, Any]
    evaluate_args: dict[str, Any]

    @property
    def report_dir(self) -> Path:
        """Where ``evaluate.json``'s ``EvaluationReport`` writes (``output_dir/evaluation``)."""
        return self.run_dir / "eval" / "evaluation"

    @property
    def finished(self) -> bool:
        """Whether the run's test report exists."""
        return (self.report_dir / "per_image.csv").is_file() and (self.report_dir / "metrics.json").is_file()


def run_dir_of(output_dir: Path, row: str, seed: int) -> Path:
    """The folder of one run: ``<output>/runs/<row>/seed<seed>``."""
    return Path(output_dir) / "runs" / row / f"seed{seed}"


def plan_runs(spec: ExperimentSpec, settings: ExperimentSettings, rows: Sequence[str] | None = None) -> list[RunPlan]:
    """The runs of ``spec`` under ``settings`` (nothing is written).

    Overrides are merged in this order, later ones winning: the experiment's shared ``overrides``, the row's
    ``overrides``, ``settings.overrides`` (command line), then the run's ``seed``, ``ckpt_dir`` and
    ``output_dir``.

    Args:
        spec: the experiment.
        settings: the settings.
        rows: plan only these rows (default: all).

    Raises:
        KeyError: an unknown row.
        UserInputError: the experiment needs a separate test dataset and none is given, or it overrides a key the
            runner sets.
    """
    if spec.requires_test_dataset and settings.test_dataset_dir is None:
        raise UserInputError(
            f"experiment {spec.name!r} tests on a separate dataset: pass --test_dataset_dir (a prepared dataset)"
        )
    for where, ov in [("overrides", spec.overrides)] + [(f"row {r.id!r}", r.overrides) for r in spec.rows]:
        reserved = sorted(set(ov) & set(RESERVED_KEYS))
        if reserved:
            raise UserInputError(f"experiment {spec.name!r}, {where}: {reserved} are set by the runner for each run")
    plans = []
    for row in spec.select(rows).rows:
        for seed in settings.seeds:
            run_dir = run_dir_of(settings.output_dir, row.id, seed)
            common = {**spec.overrides, **row.overrides, **settings.overrides}
            common.update(seed=seed, ckpt_dir=str(run_dir / "models"), output_dir=str(run_dir / "eval"))
            train_args = {"config_file": settings.train_files, **common}
            evaluate_args = {"config_file": settings.evaluate_files, **common, "test_split": settings.test_split}
            if settings.test_dataset_dir is not None:
                evaluate_args["test_dataset_dir"] = str(settings.test_dataset_dir)
            if settings.checkpoint == "final":
                evaluate_args["validate#handlers#0#load_path"] = "$@ckpt_dir + '/checkpoint_final.pt'"
            plans.append(RunPlan(row, seed, run_dir, train_args, evaluate_args))
    return plans


def check_override_keys(config_files: Sequence[str], overrides: Mapping[str, Any]) -> None:
    """Fail on overrides that would only add an unused entry (a misspelt key): a top-level key must exist in the
    merged configs, a nested ``a#b#c`` key must have an existing parent ``a#b``.

    Raises:
        KeyError: the first unknown key, with the known top-level keys.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=list(config_files))
    missing = object()
    for key in overrides:
        parent = key.rsplit("#", 1)[0] if "#" in key else key
        if parser.get(parent, missing) is missing:
            known = sorted(k for k in parser.get() if isinstance(k, str))
            raise KeyError(
                f"override {key!r}: no {parent!r} in {[os.path.basename(f) for f in config_files]}; keys: {known}"
            )


def prepare_output(spec: ExperimentSpec, settings: ExperimentSettings, plans: Sequence[RunPlan]) -> None:
    """Write ``experiment.json`` and each run's argument files; with ``force`` delete earlier runs first.

    Raises:
        UserInputError: the output folder holds another experiment, or a finished run made with other arguments
            (without ``force``).
    """
    out = settings.output_dir
    record = out / "experiment.json"
    if record.is_file():
        old = json.loads(record.read_text(encoding="utf-8"))
        old_name = old.get("experiment", {}).get("name")
        if old_name != spec.name and not settings.force:
            raise UserInputError(f"{out} holds experiment {old_name!r}, not {spec.name!r}: choose another --output")
    for plan in plans:
        args_file = plan.run_dir / "train_args.json"
        if settings.force and plan.run_dir.exists():
            shutil.rmtree(plan.run_dir)
        elif plan.finished and args_file.is_file():
            before = json.loads(args_file.read_text(encoding="utf-8"))
            if before != json.loads(json.dumps(plan.train_args)):
                changed = sorted(
                    k for k in set(before) | set(plan.train_args) if before.get(k) != plan.train_args.get(k)
                )
                raise UserInputError(
                    f"{plan.run_dir} holds a finished run made with other arguments (differences in {changed}); "
                    "pass --force to retrain it or choose another --output"
                )
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(plan.run_dir / "train_args.json", plan.train_args)
        write_json(plan.run_dir / "evaluate_args.json", plan.evaluate_args)
    runs = {(p.row.id, p.seed): str(p.run_dir.relative_to(out)) for p in plans}
    if record.is_file() and not settings.force:  # rows run earlier into this folder stay listed
        for r in json.loads(record.read_text(encoding="utf-8")).get("runs", []):
            runs.setdefault((r["row"], r["seed"]), r["dir"])
    listed = [{"row": row, "seed": seed, "dir": d} for (row, seed), d in sorted(runs.items())]
    write_json(record, {"experiment": spec_to_json(spec), "settings": settings.to_json(), "runs": listed})


def _check_validation_runs(plan: RunPlan) -> None:
    """Fail before training when no validation would run, so no best checkpoint (``model.pt``) would exist."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=plan.train_args["config_file"])
    parser.update({k: v for k, v in plan.train_args.items() if k != "config_file"})
    epochs, interval = parser.get_parsed_content("epochs"), parser.get_parsed_content("val_interval")
    if int(interval) > int(epochs):
        raise UserInputError(
            f"{plan.row.id} seed {plan.seed}: val_interval {interval} > epochs {epochs}, so no validation and no best "
            "checkpoint: lower val_interval (--set val_interval=N) or test the last weights with --checkpoint final"
        )


def _workflow(args: Mapping[str, Any], settings: ExperimentSettings) -> Any:
    from monai.bundle import ConfigWorkflow

    args = dict(args)
    files = args.pop("config_file")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Not all config files")
        wf = ConfigWorkflow(
            config_file=files,
            meta_file=str(settings.bundle / "configs" / "metadata.json"),
            logging_file=settings.logging_file,
            workflow_type="train",
            **args,
        )
    return wf


def _release(wf: Any) -> None:
    wf.finalize()
    del wf
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_run(plan: RunPlan, settings: ExperimentSettings) -> float:
    """Train one run through ``train.json`` (``ConfigWorkflow``).

    Returns:
        Seconds taken.

    Raises:
        RuntimeError: the bundle's required training properties are missing.
    """
    start = time.perf_counter()
    wf = _workflow(plan.train_args, settings)
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        raise RuntimeError(f"the bundle's training config lacks the properties {missing}")
    wf.run()
    _release(wf)
    return time.perf_counter() - start


def evaluate_run(plan: RunPlan, settings: ExperimentSettings) -> float:
    """Test one trained run through ``evaluate.json`` + ``experiments/evaluate_external.json``.

    Returns:
        Seconds taken.

    Raises:
        FileNotFoundError: the checkpoint to test is missing (no validation ran for ``best``).
        RuntimeError: ``checkpoint="final"`` but ``evaluate.json``'s first handler is not the checkpoint loader.
    """
    ckpt = plan.run_dir / "models" / CHECKPOINTS[settings.checkpoint]
    if not ckpt.is_file():
        hint = (
            "no validation ran (val_interval > epochs?): lower val_interval or test the last weights "
            "with --checkpoint final"
            if settings.checkpoint == "best"
            else "training did not finish"
        )
        raise FileNotFoundError(f"{ckpt}: missing; {hint}")
    start = time.perf_counter()
    wf = _workflow(plan.evaluate_args, settings)
    if settings.checkpoint == "final":
        target = wf.parser.get("validate#handlers#0#_target_")
        if target not in ("CheckpointLoader", "coseg.engines.CheckpointLoader"):
            raise RuntimeError(f"evaluate.json's validate#handlers[0] is {target!r}, expected the CheckpointLoader")
    wf.initialize()
    wf.run()
    _release(wf)
    return time.perf_counter() - start


@dataclass
class ExperimentResult:
    """What an experiment produced.

    Attributes:
        spec: the experiment.
        columns: the table's columns.
        runs: the finished runs' metrics.
        summaries: one row of the table per row with runs.
        comparisons: the paired tests of the experiment's ``compare`` rows.
        files: ``{"table_csv": path, ...}`` written.
    """

    spec: ExperimentSpec
    columns: list[Column]
    runs: list[RunMetrics]
    summaries: list[RowSummary]
    comparisons: list[Comparison]
    files: dict[str, Path]


def run_experiment(
    spec: ExperimentSpec, settings: ExperimentSettings, rows: Sequence[str] | None = None
) -> ExperimentResult:
    """Train and test every run of ``spec`` (finished ones are skipped), then write the table.

    Args:
        spec: the experiment (e.g. from :func:`coseg.experiments.load_experiment`).
        settings: the settings.
        rows: run only these rows (default: all); the table holds every row with finished runs in the folder.

    Returns:
        The :class:`ExperimentResult` (files written in ``settings.output_dir``).

    Raises:
        KeyError: an unknown row, or an override that names no entry of the bundle's configs.
        UserInputError: no validation would run for ``checkpoint="best"``; see also :func:`plan_runs` and
            :func:`prepare_output`.
    """
    plans = plan_runs(spec, settings, rows)
    for plan in plans:
        check_override_keys(settings.train_files, {k: v for k, v in plan.train_args.items() if k != "config_file"})
        if settings.checkpoint == "best":
            _check_validation_runs(plan)
    prepare_output(spec, settings, plans)
    from tqdm import tqdm

    for plan in tqdm(plans, desc=f"{spec.name} runs", unit="run", disable=len(plans) < 2):
        if plan.finished and not settings.force:
            logger.info("%s seed %d: finished earlier, skipped", plan.row.id, plan.seed)
            continue
        logger.info("%s seed %d: training (%s)", plan.row.id, plan.seed, plan.run_dir)
        t_train = train_run(plan, settings)
        logger.info("%s seed %d: testing", plan.row.id, plan.seed)
        t_eval = evaluate_run(plan, settings)
        write_json(
            plan.run_dir / "run.json",
            {"status": "finished", "train_seconds": round(t_train, 2), "evaluate_seconds": round(t_eval, 2)},
        )
    return collect_results(settings.output_dir)


def collect_results(output_dir: str | os.PathLike) -> ExperimentResult:
    """Read the finished runs of an experiment folder and write its table, tests and plot.

    Runs started from the printed commands of ``python -m coseg.experiments plan`` are collected the same way.

    Returns:
        The :class:`ExperimentResult`.

    Raises:
        FileNotFoundError: no ``experiment.json`` or no finished run.
        ValueError: the runs' evaluation reports use different class lists.
    """
    out = Path(output_dir).expanduser().resolve()
    record_path = out / "experiment.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path}: missing; run or plan an experiment into {out} first")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    exp = record["experiment"]
    spec = parse_experiment(
        {k: v for k, v in exp.items() if k not in ("name", "path")}, name=exp["name"], path=exp["path"]
    )
    finished = []
    for row in spec.rows:
        for seed_dir in sorted((out / "runs" / row.id).glob("seed*")):
            report = seed_dir / "eval" / "evaluation"
            if (report / "per_image.csv").is_file() and (report / "metrics.json").is_file():
                finished.append((row.id, int(seed_dir.name[4:]), report))
    if not finished:
        raise FileNotFoundError(f"{out}: no finished run (runs/<row>/seed<k>/eval/evaluation/per_image.csv)")
    classes = None
    for row_id, seed, report in finished:
        names = json.loads((report / "metrics.json").read_text(encoding="utf-8"))["class_names"]
        if classes is None:
            classes = names
        elif names != classes:
            raise ValueError(f"run {row_id}/seed{seed} was tested with other class lists: {names} vs {classes}")
    assert classes is not None
    columns = table_columns(spec.columns, classes["semantic"], classes["instance"])
    runs = [run_metrics(r, s, read_per_image(rep / "per_image.csv"), columns) for r, s, rep in finished]
    summaries = summarize_rows(runs, [(r.id, r.label) for r in spec.rows], columns)
    comparisons = compare_rows(runs, *spec.compare, columns) if spec.compare else []
    files = _write_tables(out, spec, record.get("settings", {}), columns, runs, summaries, comparisons)
    if spec.plot is not None:
        files.update(_write_plot(out, spec, columns, runs, summaries))
    return ExperimentResult(spec, columns, runs, summaries, comparisons, files)


def _notes(spec: ExperimentSpec, settings: Mapping[str, Any]) -> list[str]:
    notes = []
    if spec.paper:
        notes.append(f"Paper: {spec.paper}")
    if settings:
        notes.append(f"Bundle: `{settings.get('bundle')}`; extra configs: {settings.get('config_files') or 'none'}")
        if settings.get("overrides"):
            notes.append(
                "Command-line overrides: " + ", ".join(f"`{k}={v!r}`" for k, v in settings["overrides"].items())
            )
        if settings.get("test_dataset_dir"):
            notes.append(f"Tested on `{settings['test_dataset_dir']}` (split `{settings.get('test_split')}`)")
        ckpt = settings.get("checkpoint", "best")
        notes.append(f"Tested checkpoint: `{CHECKPOINTS.get(ckpt, ckpt)}` ({ckpt})")
    return notes


def _write_tables(
    out: Path,
    spec: ExperimentSpec,
    settings: Mapping[str, Any],
    columns: list[Column],
    runs: list[RunMetrics],
    summaries: list[RowSummary],
    comparisons: list[Comparison],
) -> dict[str, Path]:
    files = {"table_csv": out / "table.csv", "table_md": out / "table.md", "runs_csv": out / "runs.csv"}
    write_text(files["table_csv"], table_csv(summaries, columns))
    write_text(files["runs_csv"], runs_csv(runs, columns))
    md = table_markdown(
        title=spec.title,
        summaries=summaries,
        columns=columns,
        row_overrides={r.id: {**spec.overrides, **r.overrides} for r in spec.rows},
        comparisons=comparisons,
        compare=spec.compare,
        notes=_notes(spec, settings),
    )
    write_text(files["table_md"], md)
    if spec.compare and comparisons:
        files["significance_csv"] = out / "significance.csv"
        write_text(files["significance_csv"], comparisons_csv(comparisons, *spec.compare, columns))
    return files


def _is_fraction(metric: str) -> bool:
    return "hd" not in metric.split("_")[-1] and "loss" not in metric


def _write_plot(
    out: Path, spec: ExperimentSpec, columns: list[Column], runs: list[RunMetrics], summaries: list[RowSummary]
) -> dict[str, Path]:
    from coseg.engines.history import read_validation_history

    plot = spec.plot
    assert plot is not None
    path = out / plot.file
    panels = []
    if plot.kind == "curves":
        curves: dict[str, list[dict[str, list[float]]]] = {}
        lines = []
        for r in runs:
            history = run_dir_of(out, r.row, r.seed) / "eval" / "validation_history.json"
            if history.is_file():
                c = read_validation_history(history)
                curves.setdefault(r.row, []).append(c)
                for metric, values in c.items():
                    if metric != "epoch":
                        lines += [
                            [r.row, r.seed, int(e), metric, _num(v)] for e, v in zip(c["epoch"], values, strict=True)
                        ]
        if not curves:
            logger.warning("no validation_history.json in the runs: no curves plotted")
            return {}
        curves_csv = out / (Path(plot.file).stem + ".csv")
        write_text(curves_csv, csv_text(["row", "seed", "epoch", "metric", "value"], lines))
        labels = {r.id: r.label for r in spec.rows}
        for p in plot.panels:
            metric = p.series[0]
            scale = 100.0 if _is_fraction(metric) else 1.0
            series = []
            for row_id, per_seed in curves.items():
                epochs = sorted({e for c in per_seed for e in c["epoch"]})
                table = np.full((len(per_seed), len(epochs)), np.nan)
                for i, c in enumerate(per_seed):
                    for e, v in zip(c["epoch"], c.get(metric, [math.nan] * len(c["epoch"])), strict=True):
                        table[i, epochs.index(e)] = v
                mean = np.array([_nanstat(col, "mean") for col in table.T]) * scale
                std = np.array([_nanstat(col, "std") for col in table.T]) * scale
                series.append(Series(labels.get(row_id, row_id), epochs, list(mean), list(std)))
            panels.append(Panel(p.title, plot.x_label, "%" if scale == 100.0 else metric, series))
        files = {"plot": path, "curves_csv": curves_csv}
    else:
        by_key = {c.key: c for c in columns}
        xs = {r.id: r.x for r in spec.rows}
        for p in plot.panels:
            series = []
            for key in p.series:
                if key not in by_key:
                    raise KeyError(f"plot series {key!r} is not a column of the table ({sorted(by_key)})")
                col = by_key[key]
                scale = 100.0 if col.percent else 1.0
                pts = [(xs[s.row], s.mean[key] * scale, s.std[key] * scale) for s in summaries]
                series.append(
                    Series(col.header, [a for a, _, _ in pts], [b for _, b, _ in pts], [c for _, _, c in pts])
                )
            panels.append(Panel(p.title, plot.x_label, "%", series))
        files = {"plot": path}
    draw_line_plot(panels, path, title=spec.title)
    return files


def _nanstat(values: np.ndarray, stat: str) -> float:
    v = values[~np.isnan(values)]
    if stat == "mean":
        return float(v.mean()) if v.size else math.nan
    return float(v.std(ddof=1)) if v.size >= 2 else math.nan


def _num(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"
