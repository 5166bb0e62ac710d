"""End to end: experiments train and test through the bundle's configs and write their tables, tests and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import astuple

import numpy as np
import pytest
from PIL import Image

from coseg.experiments import (
    ExperimentSettings,
    collect_results,
    evaluate_run,
    load_experiment,
    paired_test,
    parse_experiment,
    plan_runs,
    run_experiment,
)
from coseg.experiments.__main__ import main, parse_set
from coseg.experiments.tables import read_per_image

from .conftest import micro_overrides


def _settings(bundle, out, data, *, seeds=(0,), **kw):
    extra = {"train#trainer#epoch_length": 1, **kw.pop("overrides", {})}  # one iteration per epoch
    return ExperimentSettings(
        bundle=bundle, output_dir=out, seeds=seeds, overrides=micro_overrides(data, **extra), **kw
    )


@pytest.fixture(scope="module")
def table7_run(histo_bundle, histo_dataset, tmp_path_factory):
    """Table 7's first and last rows, two seeds, one epoch each."""
    out = tmp_path_factory.mktemp("table7")
    spec = load_experiment(histo_bundle, "table7")
    settings = _settings(histo_bundle, out, histo_dataset, seeds=(0, 1))
    return spec, settings, run_experiment(spec, settings, ["baseline", "full"])


def test_the_table_has_every_run_and_mean_and_std_over_seeds(table7_run):
    spec, settings, result = table7_run
    out = settings.output_dir
    assert [s.row for s in result.summaries] == ["baseline", "full"]
    assert all(s.seeds == (0, 1) for s in result.summaries)
    keys = [c.key for c in result.columns]
    assert keys[:5] == ["tissue_tumour_pq", "tissue_stroma_pq", "inst_tumour_pq", "inst_til_pq", "inst_other_pq"]
    for run in result.runs:  # each run's value is the mean over its test images of the report's per-image column
        per_image = read_per_image(out / "runs" / run.row / f"seed{run.seed}" / "eval" / "evaluation" / "per_image.csv")
        assert len(per_image) == 2
        col = [v["tissue_tumour_pq"] for v in per_image.values()]
        assert run.values["tissue_tumour_pq"] == pytest.approx(np.nanmean(col), nan_ok=True)
        # and it equals the evaluation report's own per-image mean
        metrics = json.loads(
            (out / "runs" / run.row / f"seed{run.seed}" / "eval" / "evaluation" / "metrics.json").read_text(
                encoding="utf-8"
            )
        )
        pq = metrics["instance"]["per_image_mean"]["per_class"]["1"]["pq"]
        assert run.values["inst_tumour_pq"] == pytest.approx(pq, nan_ok=True)
    full = next(s for s in result.summaries if s.row == "full")
    vals = [r.values["mean_pq"] for r in result.runs if r.row == "full"]
    assert full.mean["mean_pq"] == pytest.approx(np.mean(vals))
    assert full.std["mean_pq"] == pytest.approx(np.std(vals, ddof=1))
    rows = (out / "table.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("row,label,n_seeds,tissue_tumour_pq_mean,tissue_tumour_pq_std")
    assert len(rows) == 3
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "| 8 Co-Seg++ (all three) | 2 |" in md and "±" in md
    assert '`prompt_mode="self"`' in md and "Paired tests" in md
    assert len((out / "runs.csv").read_text(encoding="utf-8").splitlines()) == 5
    record = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    assert record["experiment"]["name"] == "table7" and record["settings"]["seeds"] == [0, 1]


def test_the_significance_tests_pair_images_and_seeds(table7_run):
    _, settings, result = table7_run
    by = {(c.column, c.unit): c.test for c in result.comparisons}
    assert {u for _, u in by} == {"images", "seeds"}
    runs = {(r.row, r.seed): r for r in result.runs}
    images = sorted(runs[("full", 0)].per_image)
    a = [np.nanmean([runs[("full", s)].per_image[i]["mean_pq"] for s in (0, 1)]) for i in images]
    b = [np.nanmean([runs[("baseline", s)].per_image[i]["mean_pq"] for s in (0, 1)]) for i in images]
    assert astuple(by[("mean_pq", "images")]) == pytest.approx(astuple(paired_test(a, b)), nan_ok=True)
    seeds = by[("mean_pq", "seeds")]
    assert seeds.n == 2
    assert seeds.mean_a == pytest.approx(result.summaries[1].mean["mean_pq"])
    lines = (settings.output_dir / "significance.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("row_a,row_b,column,unit,n")
    assert len(lines) == 1 + len(result.comparisons)


def test_finished_runs_are_skipped_and_changed_ones_refused(table7_run, histo_dataset):
    spec, settings, _ = table7_run
    ckpt = settings.output_dir / "runs" / "full" / "seed0" / "models" / "model.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = run_experiment(spec, settings, ["baseline", "full"])
    assert ckpt.stat().st_mtime_ns == stamp  # not retrained
    assert len(again.runs) == 4
    changed = ExperimentSettings(
        bundle=settings.bundle,
        output_dir=settings.output_dir,
        seeds=(0, 1),
        overrides=micro_overrides(histo_dataset, batch_size=1),
    )
    with pytest.raises(ValueError, match="other arguments"):
        run_experiment(spec, changed, ["full"])
    with pytest.raises(ValueError, match="holds experiment 'table7'"):
        run_experiment(load_experiment(settings.bundle, "table8"), settings)
    record = json.loads((settings.output_dir / "experiment.json").read_text(encoding="utf-8"))
    assert len(record["experiment"]["rows"]) == 8  # the whole experiment is recorded, later rows join the table
    assert [(r["row"], r["seed"]) for r in record["runs"]] == [
        ("baseline", 0),
        ("baseline", 1),
        ("full", 0),
        ("full", 1),
    ]


def test_the_table_command_collects_the_runs(table7_run, capsys):
    _, settings, _ = table7_run
    assert main(["table", "--output", str(settings.output_dir)]) == 0
    assert "Table 7" in capsys.readouterr().out


def test_fig9_records_curves_per_epoch_and_plots_them(histo_bundle, histo_dataset, tmp_path):
    spec = load_experiment(histo_bundle, "fig9")
    result = run_experiment(
        spec, _settings(histo_bundle, tmp_path, histo_dataset, overrides={"epochs": 2}), ["without_mtc"]
    )
    history = json.loads(
        (tmp_path / "runs" / "without_mtc" / "seed0" / "eval" / "validation_history.json").read_text(encoding="utf-8")
    )
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert {"val_mpq", "val_mean_dice"} <= set(history["epochs"][0]["metrics"])
    png = np.asarray(Image.open(result.files["plot"]))
    assert png.ndim == 3 and png.shape[1] == 2 * 520  # two panels
    lines = result.files["curves_csv"].read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,seed,epoch,metric,value"
    assert sum(line.startswith("without_mtc,0,") and ",val_mpq," in line for line in lines) == 2


def test_table10_tests_on_the_other_dataset_with_the_last_weights(
    histo_bundle, histo_dataset, second_dataset, tmp_path
):
    spec = load_experiment(histo_bundle, "table10")
    settings = _settings(histo_bundle, tmp_path, histo_dataset, test_dataset_dir=second_dataset, checkpoint="final")
    result = run_experiment(spec, settings, ["coseg"])
    external = json.loads((second_dataset / "datalist.json").read_text(encoding="utf-8"))["test"]
    own = json.loads((histo_dataset / "datalist.json").read_text(encoding="utf-8"))["test"]
    tested = set(result.runs[0].per_image)
    assert tested == {p["image"].split("/")[-1] for p in external} != {p["image"].split("/")[-1] for p in own}
    args = json.loads((tmp_path / "runs" / "coseg" / "seed0" / "evaluate_args.json").read_text(encoding="utf-8"))
    assert args["test_dataset_dir"] == str(second_dataset)
    assert args["validate#handlers#0#load_path"] == "$@ckpt_dir + '/checkpoint_final.pt'"
    keys = [c.key for c in result.columns]
    assert {"sem_tumour_dice", "sem_tumour_hd", "inst_f1", "inst_aji", "inst_til_f1"} <= set(keys)
    assert result.comparisons == []  # one row: nothing to compare


def test_best_checkpoint_missing_is_explained(histo_bundle, histo_dataset, tmp_path):
    spec = load_experiment(histo_bundle, "table8")
    settings = _settings(histo_bundle, tmp_path, histo_dataset, overrides={"val_interval": 5})
    with pytest.raises(ValueError, match="val_interval 5 > epochs 1"):
        run_experiment(spec, settings, ["ours"])
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    plan = plan_runs(spec, settings, ["ours"])[0]
    with pytest.raises(FileNotFoundError, match="no validation ran"):
        evaluate_run(plan, settings)


def test_plan_writes_args_files_that_monai_bundle_runs(histo_bundle, histo_dataset, tmp_path, capsys):
    from monai.bundle.scripts import create_workflow

    out = tmp_path / "planned"
    argv = ["plan", "table8", "--output", str(out), "--seeds", "3", "--preset", "micro"]
    argv += ["--dataset_dir", str(histo_dataset), "--epochs", "1", "--set", "patch_size=64", "num_workers=0"]
    argv += ["allow_random_encoder=true"]  # the micro preset has no SAM2 checkpoint
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("python -m monai.bundle run training --args_file") == 3
    assert printed.count("python -m monai.bundle run evaluating --args_file") == 3
    args_file = out / "runs" / "silu_gate" / "seed3" / "train_args.json"
    args = json.loads(args_file.read_text(encoding="utf-8"))
    assert args["ssm_gate"] is True and args["seed"] == 3 and args["patch_size"] == 64
    wf = create_workflow(args_file=str(args_file), workflow_type="train", logging_file=False)
    assert wf.parser.get_parsed_content("seed") == 3
    net = wf.parser.get_parsed_content("network_def")
    assert {m.ssm_gate for m in net.modules() if hasattr(m, "ssm_gate")} == {True}
    with pytest.raises(FileNotFoundError, match="no finished run"):
        collect_results(out)


def test_parse_set_reads_json_values_and_keeps_text():
    assert parse_set(["a=1", "b#c=true", "d=self", "e=[1, 2]", "f=/x/y.pt"]) == {
        "a": 1,
        "b#c": True,
        "d": "self",
        "e": [1, 2],
        "f": "/x/y.pt",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["novalue"])


def test_settings_are_checked(histo_bundle, tmp_path):
    with pytest.raises(ValueError, match="set by the experiment runner"):
        ExperimentSettings(bundle=histo_bundle, output_dir=tmp_path, overrides={"seed": 1})
    with pytest.raises(ValueError, match="checkpoint"):
        ExperimentSettings(bundle=histo_bundle, output_dir=tmp_path, checkpoint="last")
    with pytest.raises(ValueError, match="distinct"):
        ExperimentSettings(bundle=histo_bundle, output_dir=tmp_path, seeds=(1, 1))
    with pytest.raises(FileNotFoundError, match="bundle root"):
        ExperimentSettings(bundle=tmp_path, output_dir=tmp_path)
    spec = parse_experiment({"title": "t", "rows": [{"id": "a", "overrides": {"ckpt_dir": "/x"}}]}, name="t")
    with pytest.raises(ValueError, match="set by the runner"):
        plan_runs(spec, ExperimentSettings(bundle=histo_bundle, output_dir=tmp_path))
    with pytest.raises(KeyError, match="no row 'z'"):
        plan_runs(
            load_experiment(histo_bundle, "table8"), ExperimentSettings(bundle=histo_bundle, output_dir=tmp_path), ["z"]
        )


def test_module_entry_point_lists_the_experiments():
    res = subprocess.run(
        [sys.executable, "-m", "coseg.experiments", "list"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "table7" in res.stdout and "8 rows" in res.stdout
