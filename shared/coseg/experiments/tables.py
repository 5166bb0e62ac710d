"""Tables of an experiment: columns from the evaluation reports, mean ± std over seeds, paired tests, CSV and
Markdown.

Every number comes from the ``per_image.csv`` that :class:`coseg.histo.EvaluationReport` writes for the test split
of each run. A column's value for one run is the mean over the test images where it is defined (NaN images, e.g. a
class present on neither side, are skipped: the report's ``per_image_mean`` reduction). The ``mean`` columns are the
mean over a group's classes of each image, then over images. A row's cell is the mean over seeds ± the sample
standard deviation (``ddof=1``; none with one seed). Fractions are shown in %, Hausdorff distances in pixels.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coseg.engines.metrics import metric_slug
from coseg.errors import InputFileError
from coseg.experiments.stats import PairedTest, paired_test

__all__ = [
    "COLUMN_GROUPS",
    "Column",
    "RunMetrics",
    "RowSummary",
    "Comparison",
    "table_columns",
    "read_per_image",
    "run_metrics",
    "summarize_rows",
    "compare_rows",
    "table_csv",
    "runs_csv",
    "comparisons_csv",
    "csv_text",
    "table_markdown",
]

#: names of the column groups an experiment may ask for
COLUMN_GROUPS = ("panoptic", "semantic", "instance", "summary")


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Attributes:
        key: the ``per_image.csv`` column, or the name of a derived column.
        header: the column's title.
        percent: shown ×100.
        higher_is_better: ``False`` for distances.
        parts: for a derived column, the per-image columns averaged (NaN skipped) into it.
    """

    key: str
    header: str
    percent: bool = True
    higher_is_better: bool = True
    parts: tuple[str, ...] = ()


def _names(classes: Mapping[Any, str]) -> list[tuple[str, str]]:
    """``[(slug, name), ...]`` of the foreground classes, in index order."""
    items = sorted(((int(k), str(v)) for k, v in classes.items()), key=lambda kv: kv[0])
    return [(metric_slug(v), v) for k, v in items if k != 0]


def table_columns(groups: Sequence[str], sem_classes: Mapping[Any, str], inst_types: Mapping[Any, str]) -> list[Column]:
    """The columns of the groups, in order, without duplicates.

    Groups: ``panoptic`` (PQ of each region class and object type, as Tables 7, 8 and 11, and their means),
    ``semantic`` (Dice, IoU and HD of each region class, as Table 10), ``instance`` (F1 and AJI of each object type
    and of all objects regardless of type, as Table 10), ``summary`` (mean Dice / PQ of the regions, mean F1 / AJI /
    PQ of the object types: one line per configuration, as Fig. 8).

    Args:
        groups: group names of :data:`COLUMN_GROUPS`.
        sem_classes: ``{0: "background", 1: ..., ...}`` region classes.
        inst_types: ``{0: "background", 1: ..., ...}`` object types.

    Returns:
        The columns.

    Raises:
        ValueError: an unknown group.
    """
    sem, typ = _names(sem_classes), _names(inst_types)
    sem_pq = tuple(f"tissue_{s}_pq" for s, _ in sem)
    inst_pq = tuple(f"inst_{s}_pq" for s, _ in typ)
    sem_dice = tuple(f"sem_{s}_dice" for s, _ in sem)
    sem_iou = tuple(f"sem_{s}_iou" for s, _ in sem)
    inst_f1 = tuple(f"inst_{s}_f1" for s, _ in typ)
    inst_aji = tuple(f"inst_{s}_aji" for s, _ in typ)
    out: list[Column] = []
    for group in groups:
        if group == "panoptic":
            out += [Column(f"tissue_{s}_pq", f"Region {n} PQ") for s, n in sem]
            out += [Column(f"inst_{s}_pq", f"Object {n} PQ") for s, n in typ]
            out += [
                Column("sem_mean_pq", "Regions mean PQ", parts=sem_pq),
                Column("inst_mean_pq", "Objects mean PQ", parts=inst_pq),
                Column("mean_pq", "Mean PQ", parts=sem_pq + inst_pq),
            ]
        elif group == "semantic":
            for s, n in sem:
                out += [
                    Column(f"sem_{s}_dice", f"{n} Dice"),
                    Column(f"sem_{s}_iou", f"{n} IoU"),
                    Column(f"sem_{s}_hd", f"{n} HD", percent=False, higher_is_better=False),
                ]
            out += [Column("sem_mean_dice", "Regions mean Dice", parts=sem_dice)]
        elif group == "instance":
            for s, n in typ:
                out += [Column(f"inst_{s}_f1", f"{n} F1"), Column(f"inst_{s}_aji", f"{n} AJI")]
            out += [Column("inst_f1", "All objects F1"), Column("inst_aji", "All objects AJI")]
        elif group == "summary":
            out += [
                Column("sem_mean_dice", "Regions mean Dice", parts=sem_dice),
                Column("sem_mean_iou", "Regions mean IoU", parts=sem_iou),
                Column("sem_mean_pq", "Regions mean PQ", parts=sem_pq),
                Column("inst_mean_f1", "Objects mean F1", parts=inst_f1),
                Column("inst_mean_aji", "Objects mean AJI", parts=inst_aji),
                Column("inst_mean_pq", "Objects mean PQ", parts=inst_pq),
            ]
        else:
            raise ValueError(f"unknown column group {group!r}; choose from {list(COLUMN_GROUPS)}")
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.key not in seen:
            seen.add(c.key)
            unique.append(c)
    return unique


def _number(text: str) -> float:
    text = text.strip()
    if text in ("", "None", "nan", "NaN", "null"):
        return math.nan
    return float(text)


def read_per_image(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read an evaluation report's ``per_image.csv``.

    Returns:
        ``{image name: {column: value}}`` (undefined values are NaN).

    Raises:
        InputFileError: missing file, no ``image`` column, a repeated image or a value that is not a number.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such per-image metrics file (did the evaluation of this run finish?)")
    rows: dict[str, dict[str, float]] = {}
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise InputFileError(p, f"no 'image' column (columns: {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            name = row.pop("image")
            if name in rows:
                raise InputFileError(p, f"line {line}: image {name!r} appears twice")
            try:
                rows[name] = {k: _number(v) for k, v in row.items() if k is not None}
            except (TypeError, ValueError) as err:
                raise InputFileError(p, f"line {line}: a value is not a number ({err})") from err
    return rows


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


@dataclass
class RunMetrics:
    """The test metrics of one run (one row, one seed).

    Attributes:
        row: the row id.
        seed: the seed.
        per_image: ``{image: {column key: value}}`` for the table's columns (fractions, not %).
        values: ``{column key: mean over images}``.
    """

    row: str
    seed: int
    per_image: dict[str, dict[str, float]]
    values: dict[str, float] = field(default_factory=dict)


def run_metrics(
    row: str, seed: int, per_image: Mapping[str, Mapping[str, float]], columns: Sequence[Column]
) -> RunMetrics:
    """The table's columns for one run from its per-image metrics.

    Raises:
        KeyError: a column the report does not have (the class names of the experiment and the report differ).
    """
    table: dict[str, dict[str, float]] = {}
    for image, metrics in per_image.items():
        values = {}
        for c in columns:
            if c.parts:
                missing = [p for p in c.parts if p not in metrics]
                if missing:
                    raise KeyError(f"run {row}/seed{seed}: the evaluation report has no columns {missing}")
                values[c.key] = _nanmean([metrics[p] for p in c.parts])
            else:
                if c.key not in metrics:
                    raise KeyError(f"run {row}/seed{seed}: the evaluation report has no column {c.key!r}")
                values[c.key] = float(metrics[c.key])
        table[image] = values
    run = RunMetrics(row=row, seed=seed, per_image=table)
    run.values = {c.key: _nanmean([v[c.key] for v in table.values()]) for c in columns}
    return run


@dataclass(frozen=True)
class RowSummary:
    """Mean and sample standard deviation over seeds of each column of one row.

    Attributes:
        row: the row id.
        label: the row's label.
        seeds: the seeds that finished.
        mean, std: ``{column key: value}`` (fractions; ``std`` NaN with one seed).
    """

    row: str
    label: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]


def summarize_rows(
    runs: Sequence[RunMetrics], rows: Sequence[tuple[str, str]], columns: Sequence[Column]
) -> list[RowSummary]:
    """Mean ± std over the seeds of each row.

    Args:
        runs: the finished runs.
        rows: ``[(row id, label), ...]`` in table order; rows without runs are left out.
        columns: the table's columns.

    Returns:
        One :class:`RowSummary` per row with at least one run.
    """
    out = []
    for row_id, label in rows:
        mine = sorted((r for r in runs if r.row == row_id), key=lambda r: r.seed)
        if not mine:
            continue
        mean, std = {}, {}
        for c in columns:
            vals = np.asarray([r.values[c.key] for r in mine], dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            mean[c.key] = float(vals.mean()) if vals.size else math.nan
            std[c.key] = float(vals.std(ddof=1)) if vals.size >= 2 else math.nan
        out.append(RowSummary(row=row_id, label=label, seeds=tuple(r.seed for r in mine), mean=mean, std=std))
    return out


@dataclass(frozen=True)
class Comparison:
    """A paired test of one column between two rows.

    Attributes:
        column: the column key.
        unit: ``"images"`` (pairs are test images, each averaged over the seeds both rows finished) or ``"seeds"``
            (pairs are seeds, each the run's mean over images).
        test: the :class:`~coseg.experiments.stats.PairedTest` (fractions, not %).
    """

    column: str
    unit: str
    test: PairedTest


def compare_rows(runs: Sequence[RunMetrics], a: str, b: str, columns: Sequence[Column]) -> list[Comparison]:
    """Paired tests of row ``a`` against row ``b`` for every column, over test images and (with ≥ 2 common seeds)
    over seeds.

    Over images, each image's value is its mean over the seeds that both rows finished, so every pair compares
    the same image under the same seeds. Over seeds, a pair is the two runs of one seed.

    Returns:
        The comparisons (empty when one of the rows has no run).
    """
    runs_a = {r.seed: r for r in runs if r.row == a}
    runs_b = {r.seed: r for r in runs if r.row == b}
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return []
    images = sorted(set.intersection(*(set(runs_a[s].per_image) & set(runs_b[s].per_image) for s in seeds)))
    out = []
    for c in columns:
        va = [_nanmean([runs_a[s].per_image[i][c.key] for s in seeds]) for i in images]
        vb = [_nanmean([runs_b[s].per_image[i][c.key] for s in seeds]) for i in images]
        out.append(Comparison(c.key, "images", paired_test(va, vb)))
        if len(seeds) >= 2:
            sa = [runs_a[s].values[c.key] for s in seeds]
            sb = [runs_b[s].values[c.key] for s in seeds]
            out.append(Comparison(c.key, "seeds", paired_test(sa, sb)))
    return out


# --- formatting -------------------------------------------------------------------------------------------------


def _scaled(v: float, column: Column) -> float:
    return v * 100.0 if column.percent else v


def _fmt(v: float, column: Column, digits: int = 2) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{_scaled(v, column):.{digits}f}"


def _cell(summary: RowSummary, column: Column) -> str:
    m, s = summary.mean[column.key], summary.std[column.key]
    text = _fmt(m, column)
    if len(summary.seeds) >= 2 and not math.isnan(s):
        text += f" ± {_fmt(s, column)}"
    return text


def _p(v: float) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """CSV text of a header and rows (``\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _csv_number(v: float, column: Column | None = None) -> str:
    if v is None or math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{(_scaled(v, column) if column else v):.6g}"


def table_csv(summaries: Sequence[RowSummary], columns: Sequence[Column]) -> str:
    """The table as CSV: ``row, label, n_seeds`` then ``<key>_mean, <key>_std`` per column (%, HD in pixels)."""
    header = ["row", "label", "n_seeds"] + [f"{c.key}_{s}" for c in columns for s in ("mean", "std")]
    rows = [
        [r.row, r.label, len(r.seeds)] + [_csv_number(v, c) for c in columns for v in (r.mean[c.key], r.std[c.key])]
        for r in summaries
    ]
    return csv_text(header, rows)


def runs_csv(runs: Sequence[RunMetrics], columns: Sequence[Column]) -> str:
    """One line per run (row, seed, number of test images, every column; %, HD in pixels)."""
    header = ["row", "seed", "n_images"] + [c.key for c in columns]
    rows = [
        [r.row, r.seed, len(r.per_image)] + [_csv_number(r.values[c.key], c) for c in columns]
        for r in sorted(runs, key=lambda r: (r.row, r.seed))
    ]
    return csv_text(header, rows)


def comparisons_csv(comparisons: Sequence[Comparison], a: str, b: str, columns: Sequence[Column]) -> str:
    """The paired tests as CSV (means and mean difference in %, HD in pixels)."""
    by_key = {c.key: c for c in columns}
    header = ["row_a", "row_b", "column", "unit", "n", "mean_a", "mean_b", "mean_difference"]
    header += ["t_statistic", "t_pvalue", "wilcoxon_statistic", "wilcoxon_pvalue"]
    rows = []
    for cmp in comparisons:
        col, t = by_key[cmp.column], cmp.test
        rows.append(
            [a, b, cmp.column, cmp.unit, t.n]
            + [_csv_number(v, col) for v in (t.mean_a, t.mean_b, t.mean_difference)]
            + [_csv_number(v) for v in (t.t_statistic, t.t_pvalue, t.wilcoxon_statistic, t.wilcoxon_pvalue)]
        )
    return csv_text(header, rows)


def table_markdown(
    *,
    title: str,
    summaries: Sequence[RowSummary],
    columns: Sequence[Column],
    row_overrides: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Comparison] = (),
    compare: tuple[str, str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The table, the rows' overrides and the paired tests as Markdown.

    Args:
        title: heading.
        summaries: the rows.
        columns: the columns.
        row_overrides: ``{row id: bundle overrides}`` listed under the table.
        comparisons: paired tests of ``compare[0]`` against ``compare[1]``.
        compare: the compared rows.
        notes: lines written under the heading (settings of the runs).

    Returns:
        The Markdown text.
    """
    out = [f"## {title}", ""]
    out += [f"- {n}" for n in notes]
    out += [
        "- Cells: mean over seeds ± sample std (one value with one seed); fractions in %, HD in pixels. Each run's "
        "value is the mean over the test images where the metric is defined; *mean* columns average each image's "
        "classes first.",
        "",
    ]
    header = ["Row", "Seeds"] + [c.header + ("" if c.higher_is_better else " ↓") for c in columns]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for r in summaries:
        out.append("| " + " | ".join([r.label, str(len(r.seeds))] + [_cell(r, c) for c in columns]) + " |")
    out += ["", "### Rows (bundle overrides on top of train.json)", ""]
    labels = {r.row: r.label for r in summaries}
    for row_id, ov in row_overrides.items():
        if row_id in labels:
            text = ", ".join(f"`{k}={_json(v)}`" for k, v in ov.items()) or "(none: the bundle's defaults)"
            out.append(f"- **{labels[row_id]}** (`{row_id}`): {text}")
    if compare and comparisons:
        a, b = compare
        by_key = {c.key: c for c in columns}
        out += [
            "",
            f"### Paired tests: {labels.get(a, a)} vs {labels.get(b, b)}",
            "",
            "Two-sided paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank test (scipy.stats.wilcoxon). "
            "*images*: pairs are the test images (each averaged over the seeds both rows finished); *seeds*: pairs "
            "are the runs of one seed (each the mean over the test images).",
            "",
            "| Column | Pairs | n | Mean A | Mean B | A − B | t | P (t-test) | P (Wilcoxon) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for cmp in comparisons:
            col, t = by_key[cmp.column], cmp.test
            out.append(
                "| "
                + " | ".join(
                    [
                        col.header,
                        cmp.unit,
                        str(t.n),
                        _fmt(t.mean_a, col),
                        _fmt(t.mean_b, col),
                        _fmt(t.mean_difference, col),
                        "–" if math.isnan(t.t_statistic) else f"{t.t_statistic:.3f}",
                        _p(t.t_pvalue),
                        _p(t.wilcoxon_pvalue),
                    ]
                )
                + " |"
            )
    out.append("")
    return "\n".join(out)


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)
