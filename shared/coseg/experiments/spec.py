"""Experiment definitions: the JSON files in a bundle's ``configs/experiments/`` folder.

An experiment file names the rows of one table or figure of the paper; each row is a set of bundle overrides
(the same ``key`` / ``key#sub`` ids and values as ``python -m monai.bundle run ... --key value``) applied on top of
``train.json``. Layout::

    {
        "title": "Table 7: ablation of ...",
        "paper": "§4.5, Table 7",
        "description": "what the rows mean and how they map to the bundle's switches",
        "columns": ["panoptic"],                      # column groups, see coseg.experiments.tables
        "compare": ["full", "baseline"],              # the two rows of the paired significance test
        "requires_test_dataset": false,               # true: --test_dataset_dir must be given
        "overrides": {"val_interval": 1},             # shared by every row (optional)
        "plot": {...},                                # optional, see PlotSpec
        "rows": [
            {"id": "baseline", "label": "1: encoder-shared baseline", "overrides": {"prompt_mode": "self"}},
            {"id": "lambda_0.1", "label": "λ = 0.1", "x": 0.1, "overrides": {"loss#pass1_weight": 0.1}}
        ]
    }

A JSON file of that folder without ``rows`` is a plain override config (e.g. ``evaluate_external.json``), not an
experiment.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coseg.errors import InputFileError

__all__ = [
    "EXPERIMENTS_FOLDER",
    "ExperimentSpec",
    "PlotPanel",
    "PlotSpec",
    "RowSpec",
    "experiment_path",
    "list_experiments",
    "load_experiment",
    "parse_experiment",
    "spec_to_json",
]

#: where a bundle keeps its experiment files, relative to the bundle root
EXPERIMENTS_FOLDER = os.path.join("configs", "experiments")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLOT_KINDS = ("curves", "metric_vs_x")
_TOP_KEYS = {"title", "paper", "description", "columns", "compare", "requires_test_dataset", "overrides", "plot"}


@dataclass(frozen=True)
class RowSpec:
    """One row of a table (one trained configuration).

    Attributes:
        id: a folder-safe name (letters, digits, ``.``, ``_``, ``-``).
        label: the row's name in the table.
        overrides: bundle overrides of this row.
        x: the row's value on a plot's x axis (``metric_vs_x`` plots), or ``None``.
    """

    id: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    x: float | None = None


@dataclass(frozen=True)
class PlotPanel:
    """One panel of a plot.

    Attributes:
        title: panel title.
        series: for ``curves`` plots one validation metric name (e.g. ``"val_mpq"``), one line per row; for
            ``metric_vs_x`` plots table column keys (e.g. ``"sem_mean_pq"``), one line per column over the rows' x.
    """

    title: str
    series: tuple[str, ...]


@dataclass(frozen=True)
class PlotSpec:
    """A figure drawn from the runs.

    Attributes:
        kind: ``"curves"`` (per-epoch validation metrics from each run's ``validation_history.json``) or
            ``"metric_vs_x"`` (test metrics against each row's ``x``).
        file: PNG file name in the experiment's output folder.
        x_label: label of the x axis.
        panels: the panels, side by side.
    """

    kind: str
    file: str
    x_label: str
    panels: tuple[PlotPanel, ...]


@dataclass(frozen=True)
class ExperimentSpec:
    """A named experiment: rows of bundle overrides, the table's columns, the compared pair, an optional plot."""

    name: str
    title: str
    paper: str
    description: str
    columns: tuple[str, ...]
    rows: tuple[RowSpec, ...]
    compare: tuple[str, str] | None = None
    requires_test_dataset: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    plot: PlotSpec | None = None
    path: str = ""

    def row(self, row_id: str) -> RowSpec:
        """The row called ``row_id``.

        Raises:
            KeyError: no such row (the message lists the rows).
        """
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(f"experiment {self.name!r} has no row {row_id!r}; rows: {[r.id for r in self.rows]}")

    def select(self, row_ids: list[str] | tuple[str, ...] | None) -> ExperimentSpec:
        """A copy with only the rows ``row_ids`` (all when ``None``), in the experiment's order.

        The compared pair is kept only when both of its rows remain.

        Raises:
            KeyError: an unknown row id.
        """
        if not row_ids:
            return self
        wanted = set(row_ids)
        for r in wanted:
            self.row(r)
        rows = tuple(r for r in self.rows if r.id in wanted)
        compare = self.compare if self.compare and set(self.compare) <= wanted else None
        return replace(self, rows=rows, compare=compare)


def spec_to_json(spec: ExperimentSpec) -> dict[str, Any]:
    """The experiment in the file layout of this module (``name`` and ``path`` added), for provenance records."""
    out: dict[str, Any] = {
        "name": spec.name,
        "path": spec.path,
        "title": spec.title,
        "paper": spec.paper,
        "description": spec.description,
        "columns": list(spec.columns),
        "compare": list(spec.compare) if spec.compare else None,
        "requires_test_dataset": spec.requires_test_dataset,
        "overrides": dict(spec.overrides),
        "rows": [
            {"id": r.id, "label": r.label, "overrides": dict(r.overrides), **({"x": r.x} if r.x is not None else {})}
            for r in spec.rows
        ],
    }
    if spec.plot is not None:
        out["plot"] = {
            "kind": spec.plot.kind,
            "file": spec.plot.file,
            "x_label": spec.plot.x_label,
            "panels": [{"title": p.title, "series": list(p.series)} for p in spec.plot.panels],
        }
    return out


def experiment_path(bundle: str | os.PathLike, name: str) -> Path:
    """The file of experiment ``name``: a path to a JSON file, or a name in ``<bundle>/configs/experiments/``.

    Raises:
        FileNotFoundError: no such file (the message lists the bundle's experiments).
    """
    given = Path(name).expanduser()
    if given.suffix == ".json" and given.is_file():
        return given.resolve()
    candidate = Path(bundle) / EXPERIMENTS_FOLDER / f"{name}.json"
    if candidate.is_file():
        return candidate.resolve()
    known = ", ".join(list_experiments(bundle)) or "none"
    raise FileNotFoundError(f"no experiment {name!r} (neither a JSON file nor in {candidate.parent}); known: {known}")


def list_experiments(bundle: str | os.PathLike) -> list[str]:
    """Names of the experiment files (those with ``rows``) in ``<bundle>/configs/experiments/``, sorted."""
    folder = Path(bundle) / EXPERIMENTS_FOLDER
    names = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and "rows" in content:
            names.append(path.stem)
    return names


def load_experiment(bundle: str | os.PathLike, name: str) -> ExperimentSpec:
    """Read and check an experiment file.

    Args:
        bundle: the bundle root (for names without a path).
        name: an experiment name (``table7``) or the path of a JSON file.

    Returns:
        The checked :class:`ExperimentSpec`.

    Raises:
        FileNotFoundError: no such experiment.
        InputFileError: the file is not valid JSON or not a valid experiment (the problem is named).
    """
    path = experiment_path(bundle, name)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputFileError(path, f"not valid JSON ({err})") from err
    return parse_experiment(content, name=path.stem, path=path)


def parse_experiment(content: Any, *, name: str, path: str | os.PathLike = "<memory>") -> ExperimentSpec:
    """Check the content of an experiment file and build the :class:`ExperimentSpec`.

    Raises:
        InputFileError: a missing, unknown or ill-typed entry (named in the message).
    """

    def bad(problem: str) -> InputFileError:
        return InputFileError(path, problem)

    if not isinstance(content, dict):
        raise bad("an experiment file holds a JSON object")
    if "rows" not in content:
        raise bad("no 'rows': this is an override config, not an experiment")
    unknown = set(content) - _TOP_KEYS - {"rows"}
    if unknown:
        raise bad(f"unknown entries {sorted(unknown)}; allowed: {sorted(_TOP_KEYS | {'rows'})}")
    for key in ("title", "paper", "description"):
        if not isinstance(content.get(key, ""), str):
            raise bad(f"{key!r} must be a string")
    if not content.get("title"):
        raise bad("'title' is missing or empty")
    rows_raw = content["rows"]
    if not isinstance(rows_raw, list) or not rows_raw:
        raise bad("'rows' must be a non-empty list")
    rows = tuple(_parse_row(r, i, bad) for i, r in enumerate(rows_raw))
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise bad(f"row ids must be unique, got {ids}")
    columns = content.get("columns", ["panoptic"])
    if isinstance(columns, str) or not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise bad("'columns' must be a list of column-group names")
    from coseg.experiments.tables import COLUMN_GROUPS

    unknown_groups = [c for c in columns if c not in COLUMN_GROUPS]
    if unknown_groups or not columns:
        raise bad(f"unknown column groups {unknown_groups}; choose from {list(COLUMN_GROUPS)}")
    compare = content.get("compare")
    if compare is not None:
        if not (isinstance(compare, list) and len(compare) == 2 and all(c in ids for c in compare)):
            raise bad(f"'compare' must name two of the rows {ids}, got {compare!r}")
        if compare[0] == compare[1]:
            raise bad("'compare' must name two different rows")
        compare = (compare[0], compare[1])
    overrides = content.get("overrides", {})
    if not isinstance(overrides, dict):
        raise bad("'overrides' must be an object of bundle overrides")
    requires = content.get("requires_test_dataset", False)
    if not isinstance(requires, bool):
        raise bad("'requires_test_dataset' must be true or false")
    plot = _parse_plot(content["plot"], rows, bad) if content.get("plot") is not None else None
    return ExperimentSpec(
        name=name,
        title=content["title"],
        paper=content.get("paper", ""),
        description=content.get("description", ""),
        columns=tuple(columns),
        rows=rows,
        compare=compare,
        requires_test_dataset=requires,
        overrides=dict(overrides),
        plot=plot,
        path=os.fspath(path),
    )


def _parse_row(raw: Any, index: int, bad: Any) -> RowSpec:
    if not isinstance(raw, dict):
        raise bad(f"rows[{index}] must be an object with 'id', 'label' and 'overrides'")
    unknown = set(raw) - {"id", "label", "overrides", "x"}
    if unknown:
        raise bad(f"rows[{index}]: unknown entries {sorted(unknown)}")
    row_id = raw.get("id")
    if not isinstance(row_id, str) or not _ID.match(row_id):
        raise bad(f"rows[{index}]: 'id' must be a folder-safe name (letters, digits, '.', '_', '-'), got {row_id!r}")
    label = raw.get("label", row_id)
    if not isinstance(label, str):
        raise bad(f"rows[{index}]: 'label' must be a string")
    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(k, str) and k for k in overrides):
        raise bad(f"rows[{index}]: 'overrides' must be an object of bundle overrides")
    x = raw.get("x")
    if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float))):
        raise bad(f"rows[{index}]: 'x' must be a number")
    return RowSpec(id=row_id, label=label, overrides=dict(overrides), x=None if x is None else float(x))


def _parse_plot(raw: Any, rows: tuple[RowSpec, ...], bad: Any) -> PlotSpec:
    if not isinstance(raw, dict):
        raise bad("'plot' must be an object")
    unknown = set(raw) - {"kind", "file", "x_label", "panels"}
    if unknown:
        raise bad(f"plot: unknown entries {sorted(unknown)}")
    kind = raw.get("kind")
    if kind not in _PLOT_KINDS:
        raise bad(f"plot: 'kind' must be one of {list(_PLOT_KINDS)}, got {kind!r}")
    file = raw.get("file")
    if not isinstance(file, str) or not _ID.match(file) or not file.endswith(".png"):
        raise bad(f"plot: 'file' must be a plain .png file name, got {file!r}")
    if kind == "metric_vs_x" and any(r.x is None for r in rows):
        raise bad("plot: a 'metric_vs_x' plot needs an 'x' in every row")
    panels_raw = raw.get("panels")
    if not isinstance(panels_raw, list) or not panels_raw:
        raise bad("plot: 'panels' must be a non-empty list")
    panels = []
    for i, p in enumerate(panels_raw):
        series = p.get("series") if isinstance(p, dict) else None
        if isinstance(series, str):
            series = [series]
        if not isinstance(series, list) or not series or not all(isinstance(s, str) for s in series):
            raise bad(f"plot: panels[{i}] needs 'series': a metric name or a list of them")
        if kind == "curves" and len(series) != 1:
            raise bad(f"plot: panels[{i}]: a 'curves' panel shows one metric (one line per row)")
        panels.append(PlotPanel(title=str(p.get("title", series[0])), series=tuple(series)))
    x_label = raw.get("x_label", "epoch" if kind == "curves" else "x")
    if not isinstance(x_label, str):
        raise bad("plot: 'x_label' must be a string")
    return PlotSpec(kind=kind, file=file, x_label=x_label, panels=tuple(panels))
