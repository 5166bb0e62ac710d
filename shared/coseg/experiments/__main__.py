"""Command line of the experiments: ``python -m coseg.experiments {list,run,plan,table,attention} ...``.

Examples::

    python -m coseg.experiments list
    # CPU smoke version: tiny model, 128 px synthetic data, 2 epochs
    python -m coseg.experiments run table7 --config smoke --output /tmp/table7_smoke
    # the paper's setting (GPU): 300 epochs, three seeds
    python -m coseg.experiments run table7 --dataset_dir /data/puma --seeds 0 1 2 --output runs/table7 \\
        --set sam2_checkpoint=/weights/sam2.1_hiera_large.pt
    # the commands of every run, for a cluster; then collect the table
    python -m coseg.experiments plan table7 ... --output runs/table7
    python -m coseg.experiments table --output runs/table7
    # Fig. 10 from a finished run
    python -m coseg.experiments attention --run runs/table7/runs/full/seed0 --image img.png --output figs/
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from coseg.errors import UserInputError, install_excepthook

__all__ = ["main", "parse_set"]

logger = logging.getLogger("coseg.experiments")


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["a=1", "b#c=true", "d=text"]`` -> ``{"a": 1, "b#c": True, "d": "text"}`` (values read as JSON when
    they are JSON, else kept as strings).

    Raises:
        UserInputError: an item without ``=`` or with an empty key (a ``ValueError``).
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--set takes KEY=VALUE items, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _bundle(path: str | None) -> Path:
    if path:
        root = Path(path).expanduser().resolve()
        if not (root / "configs" / "train.json").is_file():
            raise FileNotFoundError(f"{root}: not a bundle (no configs/train.json)")
        return root
    from coseg.engines.config import find_bundle_root

    return Path(find_bundle_root("coseg_histo"))


def _config_path(bundle: Path, name: str) -> Path:
    """A config file given as a path, or by name in ``configs/experiments/`` or ``configs/``."""
    given = Path(name).expanduser()
    if given.is_file():
        return given.resolve()
    stem = name[:-5] if name.endswith(".json") else name
    for folder in (bundle / "configs" / "experiments", bundle / "configs"):
        candidate = folder / f"{stem}.json"
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"config {name!r}: no such file, nor {stem}.json in {bundle / 'configs'}[/experiments]")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "preset", None):
        out["model_preset"] = args.preset
    if getattr(args, "dataset_dir", None):
        out["dataset_dir"] = str(Path(args.dataset_dir).expanduser().resolve())
    if getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        out["epochs"] = args.epochs
    out.update(parse_set([i for group in (args.set or []) for i in group]))
    return out


def _settings(args: argparse.Namespace, bundle: Path) -> Any:
    from coseg.experiments.runner import ExperimentSettings

    logging_conf = bundle / "configs" / "logging.conf"
    return ExperimentSettings(
        bundle=bundle,
        output_dir=Path(args.output),
        seeds=tuple(args.seeds),
        config_files=tuple(_config_path(bundle, c) for group in (args.config or []) for c in group),
        overrides=_overrides(args),
        test_dataset_dir=args.test_dataset_dir,
        test_split=args.test_split,
        checkpoint=args.checkpoint,
        force=args.force,
        logging_file=str(logging_conf) if logging_conf.is_file() else False,
    )


def _cmd_list(args: argparse.Namespace) -> int:
    from coseg.experiments.spec import list_experiments, load_experiment

    bundle = _bundle(args.bundle)
    for name in list_experiments(bundle):
        spec = load_experiment(bundle, name)
        print(f"{name:16s} {len(spec.rows):2d} rows  {spec.title}")
    return 0


def _cmd_run(args: argparse.Namespace, *, plan_only: bool) -> int:
    from coseg.experiments.runner import check_override_keys, plan_runs, prepare_output, run_experiment
    from coseg.experiments.spec import load_experiment

    bundle = _bundle(args.bundle)
    spec = load_experiment(bundle, args.experiment)
    settings = _settings(args, bundle)
    if not plan_only:
        result = run_experiment(spec, settings, args.rows)
        print(result.files["table_md"].read_text(encoding="utf-8"))
        print("written: " + ", ".join(str(p) for p in result.files.values()))
        return 0
    plans = plan_runs(spec, settings, args.rows)
    for plan in plans:
        check_override_keys(settings.train_files, {k: v for k, v in plan.train_args.items() if k != "config_file"})
    prepare_output(spec, settings, plans)
    for plan in plans:
        print(f"# {plan.row.id} seed {plan.seed}")
        for run_id, name in (("training", "train_args.json"), ("evaluating", "evaluate_args.json")):
            print(f"python -m monai.bundle run {run_id} --args_file {shlex.quote(str(plan.run_dir / name))}")
    print(f"# then: python -m coseg.experiments table --output {shlex.quote(str(settings.output_dir))}")
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from coseg.experiments.runner import collect_results

    result = collect_results(args.output)
    print(result.files["table_md"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in result.files.values()))
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from coseg.experiments.attention import load_network, run_attention

    overrides = _overrides(args)
    if args.run:
        run = Path(args.run).expanduser().resolve()
        train_args_file = run / "train_args.json"
        if not train_args_file.is_file():
            raise FileNotFoundError(f"{run}: not a run folder of coseg.experiments (no train_args.json)")
        train_args = json.loads(train_args_file.read_text(encoding="utf-8"))
        files = train_args.pop("config_file")
        bundle = Path(files[0]).parents[1]
        extra = files[1:] + [str(_config_path(bundle, c)) for group in (args.config or []) for c in group]
        run_overrides = {k: v for k, v in train_args.items() if k not in ("seed", "ckpt_dir", "output_dir")}
        overrides = {**run_overrides, **overrides}
        checkpoint = Path(args.checkpoint) if args.checkpoint else run / "models" / "model.pt"
    else:
        if not args.checkpoint:
            raise UserInputError("give --run (a run folder) or --checkpoint (with the configs it was trained with)")
        bundle = _bundle(args.bundle)
        extra = [str(_config_path(bundle, c)) for group in (args.config or []) for c in group]
        checkpoint = Path(args.checkpoint)
    network = load_network(bundle, checkpoint, config_files=extra, overrides=overrides, device=args.device)
    token: int | str = "mean" if args.token == "mean" else int(args.token)
    written = run_attention(network, args.image, args.output, token=token, device=args.device)
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle root (default: the coseg_histo bundle of this repository)")
    p.add_argument(
        "--config",
        nargs="+",
        action="append",
        metavar="FILE",
        help="extra override configs after train.json: paths or names in configs/experiments or configs "
        "(e.g. smoke, quickstart)",
    )
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        metavar="KEY=VALUE",
        help="bundle overrides, e.g. patch_size=256 sam2_checkpoint=/w/sam2.1_hiera_large.pt",
    )
    p.add_argument("--preset", help="model preset (model_preset): paper, tiny, cpu or micro")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line (sub-commands list, run, plan, table, attention)."""
    parser = argparse.ArgumentParser(prog="python -m coseg.experiments", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the experiments of the bundle")
    p.add_argument("--bundle")

    for name, text in (
        ("run", "train and test every run, write the table"),
        ("plan", "write every run's --args_file and print the monai.bundle commands"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("experiment", help="experiment name (e.g. table7) or path of an experiment JSON file")
        p.add_argument("--output", required=True, help="the experiment's output folder")
        _add_common(p)
        p.add_argument("--dataset_dir", help="prepared training dataset (dataset_dir)")
        p.add_argument("--test_dataset_dir", help="a separate prepared dataset to test on (Table 10)")
        p.add_argument("--test_split", default="test", help="split of the test dataset (default: test)")
        p.add_argument("--epochs", type=int, help="training epochs (epochs)")
        p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per row and seed (default: 0)")
        p.add_argument("--rows", nargs="+", help="only these rows")
        p.add_argument(
            "--checkpoint",
            choices=["best", "final"],
            default="best",
            help="test the best validation checkpoint (model.pt, default) or the last weights",
        )
        p.add_argument("--force", action="store_true", help="retrain finished runs")

    p = sub.add_parser("table", help="collect the finished runs of an output folder into the table")
    p.add_argument("--output", required=True)

    p = sub.add_parser("attention", help="Fig. 10: prompt and cross-attention heat maps of images")
    p.add_argument("--image", nargs="+", required=True, help="RGB image files")
    p.add_argument("--output", required=True, help="folder of the PNGs")
    p.add_argument("--run", help="a run folder of `run` (its configs, overrides and models/model.pt)")
    p.add_argument("--checkpoint", help="weights (default with --run: <run>/models/model.pt)")
    _add_common(p)
    p.add_argument("--token", default="mean", help="'mean' over the queries (default) or one query index")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if args.command == "list":
        return _cmd_list(args)
    if args.command in ("run", "plan"):
        return _cmd_run(args, plan_only=args.command == "plan")
    if args.command == "table":
        return _cmd_table(args)
    return _cmd_attention(args)


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
