"""Experiment files: the bundle's files load, row selection, and malformed files are refused naming the problem."""

from __future__ import annotations

import json

import pytest

from coseg.errors import InputFileError
from coseg.experiments import load_experiment, parse_experiment
from coseg.experiments.spec import experiment_path, spec_to_json

GOOD = {
    "title": "T",
    "columns": ["panoptic"],
    "compare": ["a", "b"],
    "rows": [
        {"id": "a", "label": "A", "overrides": {"num_forwards": 1}, "x": 1},
        {"id": "b", "overrides": {"num_forwards": 2}, "x": 2},
    ],
}


def test_the_bundles_experiment_files_load(histo_bundle):
    t7 = load_experiment(histo_bundle, "table7")
    assert len(t7.rows) == 8 and t7.compare == ("full", "baseline")
    assert t7.row("baseline").overrides == {
        "prompt_encoder": "conv",
        "cross_task_attention": False,
        "prompt_mode": "self",
    }
    assert load_experiment(histo_bundle, "fig8_lambda").plot.kind == "metric_vs_x"
    assert [r.x for r in load_experiment(histo_bundle, "fig8_lambda").rows] == pytest.approx(
        [i / 10 for i in range(1, 11)]
    )
    assert load_experiment(histo_bundle, "table10").requires_test_dataset
    # a file path works as well as a name
    path = experiment_path(histo_bundle, "table8")
    assert load_experiment(histo_bundle, str(path)).rows == load_experiment(histo_bundle, "table8").rows


def test_round_trip_through_json():
    spec = parse_experiment(GOOD, name="t")
    again = parse_experiment({k: v for k, v in spec_to_json(spec).items() if k not in ("name", "path")}, name="t")
    assert again.rows == spec.rows and again.compare == spec.compare and again.columns == spec.columns


def test_select_keeps_order_and_drops_a_broken_pair():
    spec = parse_experiment(GOOD, name="t")
    assert [r.id for r in spec.select(["b", "a"]).rows] == ["a", "b"]
    assert spec.select(["b", "a"]).compare == ("a", "b")
    assert spec.select(["b"]).compare is None
    assert spec.select(None) is spec
    with pytest.raises(KeyError, match="no row 'c'"):
        spec.select(["c"])


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"rows": []}, "non-empty list"),
        ({"titel": "x"}, "unknown entries"),
        ({"title": ""}, "'title'"),
        ({"columns": ["tables"]}, "unknown column groups"),
        ({"columns": "panoptic"}, "list of column-group"),
        ({"compare": ["a", "z"]}, "'compare' must name two"),
        ({"compare": ["a", "a"]}, "two different rows"),
        ({"rows": [{"id": "a b"}]}, "folder-safe"),
        ({"rows": [{"id": "a"}, {"id": "a"}]}, "unique"),
        ({"rows": [{"id": "a", "overrides": [1]}]}, "'overrides'"),
        ({"rows": [{"id": "a", "x": "1"}]}, "'x' must be a number"),
        ({"rows": [{"id": "a", "extra": 1}]}, "unknown entries"),
        ({"requires_test_dataset": "yes"}, "true or false"),
        ({"plot": {"kind": "bars", "file": "p.png", "panels": [{"series": "m"}]}}, "'kind'"),
        ({"plot": {"kind": "curves", "file": "p.jpg", "panels": [{"series": "m"}]}}, ".png"),
        ({"plot": {"kind": "curves", "file": "p.png", "panels": [{"series": ["m", "n"]}]}}, "one metric"),
        ({"plot": {"kind": "curves", "file": "p.png", "panels": []}}, "'panels'"),
    ],
)
def test_malformed_experiments_are_refused(change, problem, tmp_path):
    content = {**GOOD, **change}
    if "rows" in change:  # the compared rows a, b may be gone
        content.pop("compare")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(InputFileError, match=problem) as err:
        load_experiment(tmp_path, str(path))
    assert err.value.path.endswith("bad.json")


def test_metric_vs_x_plots_need_x(tmp_path):
    content = {**GOOD, "plot": {"kind": "metric_vs_x", "file": "p.png", "panels": [{"series": ["mean_pq"]}]}}
    content["rows"] = [{"id": "a"}, {"id": "b", "x": 2}]
    content.pop("compare")
    with pytest.raises(InputFileError, match="needs an 'x'"):
        parse_experiment(content, name="t")


def test_override_configs_and_bad_json_are_not_experiments(histo_bundle, tmp_path):
    with pytest.raises(InputFileError, match="override config"):
        load_experiment(histo_bundle, "smoke")
    bad = tmp_path / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputFileError, match="not valid JSON"):
        load_experiment(tmp_path, str(bad))
    with pytest.raises(FileNotFoundError, match="known: fig8_forwards"):
        load_experiment(histo_bundle, "table99")
