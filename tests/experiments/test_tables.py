"""Table columns, per-run values, mean ± std over seeds, paired comparisons, CSV and Markdown, on hand-made numbers."""

from __future__ import annotations

import math
from dataclasses import astuple

import pytest

from coseg.errors import InputFileError
from coseg.experiments import paired_test, table_columns
from coseg.experiments.tables import (
    compare_rows,
    read_per_image,
    run_metrics,
    summarize_rows,
    table_csv,
    table_markdown,
)

SEM = {"0": "background", "1": "tumour", "2": "stroma"}
TYPES = {"0": "background", "1": "tumour", "2": "TIL"}


def test_columns_follow_the_classes():
    cols = table_columns(["panoptic"], SEM, TYPES)
    assert [c.key for c in cols] == [
        "tissue_tumour_pq",
        "tissue_stroma_pq",
        "inst_tumour_pq",
        "inst_til_pq",
        "sem_mean_pq",
        "inst_mean_pq",
        "mean_pq",
    ]
    assert cols[-1].parts == ("tissue_tumour_pq", "tissue_stroma_pq", "inst_tumour_pq", "inst_til_pq")
    sem = {c.key: c for c in table_columns(["semantic"], SEM, TYPES)}
    assert not sem["sem_tumour_hd"].percent and not sem["sem_tumour_hd"].higher_is_better
    both = table_columns(["panoptic", "summary"], SEM, TYPES)
    assert len({c.key for c in both}) == len(both)  # sem_mean_pq / inst_mean_pq once
    with pytest.raises(ValueError, match="unknown column group"):
        table_columns(["pq"], SEM, TYPES)


def _per_image(a1, a2, b1, b2):
    """Two images; tumour and stroma region PQ and tumour / TIL object PQ."""
    return {
        "img1": {"tissue_tumour_pq": a1, "tissue_stroma_pq": b1, "inst_tumour_pq": 0.5, "inst_til_pq": math.nan},
        "img2": {"tissue_tumour_pq": a2, "tissue_stroma_pq": b2, "inst_tumour_pq": 0.7, "inst_til_pq": 0.1},
    }


def test_run_values_and_derived_means_by_hand():
    cols = table_columns(["panoptic"], SEM, TYPES)
    run = run_metrics("r", 0, _per_image(0.2, 0.4, math.nan, 0.6), cols)
    v = run.values
    assert v["tissue_tumour_pq"] == pytest.approx(0.3)
    assert v["tissue_stroma_pq"] == pytest.approx(0.6)  # the NaN image is skipped
    assert v["inst_til_pq"] == pytest.approx(0.1)
    # per image first: img1 regions mean = 0.2 (stroma NaN), img2 = 0.5; then over images
    assert v["sem_mean_pq"] == pytest.approx(0.35)
    # img1: mean(0.2, 0.5) = 0.35; img2: mean(0.4, 0.6, 0.7, 0.1) = 0.45
    assert v["mean_pq"] == pytest.approx(0.4)
    with pytest.raises(KeyError, match="no column"):
        run_metrics("r", 0, {"img": {"tissue_tumour_pq": 1.0}}, cols[:2])


def test_mean_std_over_seeds_and_comparisons():
    cols = table_columns(["panoptic"], SEM, TYPES)
    runs = [
        run_metrics("a", 0, _per_image(0.2, 0.4, 0.5, 0.6), cols),
        run_metrics("a", 1, _per_image(0.4, 0.6, 0.5, 0.6), cols),
        run_metrics("b", 0, _per_image(0.1, 0.3, 0.5, 0.6), cols),
        run_metrics("b", 1, _per_image(0.2, 0.2, 0.5, 0.6), cols),
        run_metrics("c", 0, _per_image(0.2, 0.2, 0.5, 0.6), cols),
    ]
    summaries = summarize_rows(runs, [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")], cols)
    assert [s.row for s in summaries] == ["a", "b", "c"]  # no run, no row
    a = summaries[0]
    assert a.mean["tissue_tumour_pq"] == pytest.approx(0.4)  # seeds: 0.3, 0.5
    assert a.std["tissue_tumour_pq"] == pytest.approx(math.sqrt(0.02))  # sample std
    assert math.isnan(summaries[2].std["tissue_tumour_pq"])  # one seed
    cmp = {(c.column, c.unit): c.test for c in compare_rows(runs, "a", "b", cols)}
    # images: img1 a = (0.2 + 0.4) / 2, b = (0.1 + 0.2) / 2; img2 a = 0.5, b = 0.25
    assert astuple(cmp[("tissue_tumour_pq", "images")]) == pytest.approx(astuple(paired_test([0.3, 0.5], [0.15, 0.25])))
    assert astuple(cmp[("tissue_tumour_pq", "seeds")]) == pytest.approx(astuple(paired_test([0.3, 0.5], [0.2, 0.2])))
    assert ("tissue_tumour_pq", "seeds") not in {(c.column, c.unit) for c in compare_rows(runs, "a", "c", cols)}
    assert compare_rows(runs, "a", "d", cols) == []

    csv_text = table_csv(summaries, cols)
    header, first = csv_text.splitlines()[:2]
    assert header.startswith("row,label,n_seeds,tissue_tumour_pq_mean,tissue_tumour_pq_std")
    assert first.startswith("a,A,2,40,14.1421")
    md = table_markdown(
        title="T",
        summaries=summaries,
        columns=cols,
        row_overrides={"a": {"num_forwards": 2}, "b": {}, "c": {"prompt_mode": "self"}},
        comparisons=compare_rows(runs, "a", "b", cols),
        compare=("a", "b"),
    )
    assert "| A | 2 | 40.00 ± 14.14 |" in md
    assert "| C | 1 | 20.00 |" in md  # one seed: no std
    assert "`num_forwards=2`" in md and "(none: the bundle's defaults)" in md and '`prompt_mode="self"`' in md
    assert "### Paired tests: A vs B" in md


def test_read_per_image_parses_empty_and_nan_and_refuses_bad_files(tmp_path):
    good = tmp_path / "per_image.csv"
    good.write_text("image,a,b\nx.png,0.5,\ny.png,nan,1\n", encoding="utf-8")
    got = read_per_image(good)
    assert got["x.png"]["a"] == 0.5 and math.isnan(got["x.png"]["b"]) and math.isnan(got["y.png"]["a"])
    for text, problem in (
        ("a,b\n1,2\n", "no 'image' column"),
        ("image,a\nx,1\nx,2\n", "twice"),
        ("image,a\nx,abc\n", "not a number"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(InputFileError, match=problem):
            read_per_image(bad)
    with pytest.raises(InputFileError, match="did the evaluation"):
        read_per_image(tmp_path / "missing.csv")
