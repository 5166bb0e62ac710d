"""Command line: ``python -m coseg.bundle export BUNDLE OUT``, ``python -m coseg.bundle check BUNDLE`` and
``python -m coseg.bundle extract ZIP DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from coseg.bundle.archive import extract_bundle
from coseg.bundle.export import _read_json, export_bundle, parse_override
from coseg.bundle.metadata import check_metadata, config_class_problems
from coseg.errors import InputFileError, UserInputError, install_excepthook


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coseg.bundle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser(
        "export",
        help="write <OUT>/<name>_v<version>.zip: configs, docs, LICENSE, models and a vendored coseg",
    )
    exp.add_argument("bundle", type=Path, help="the bundle folder, e.g. bundles/coseg_histo")
    exp.add_argument("output", type=Path, help="folder for the zip")
    exp.add_argument(
        "--models",
        nargs="*",
        default=None,
        metavar="FILE",
        help="files of models/ to include (default: model.pt when present; give no name for none)",
    )
    exp.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="set a config item in every config that defines it (JSON value), e.g. --set model_preset=tiny "
        "--set patch_size=256 for weights trained with the quickstart preset; repeatable",
    )
    chk = sub.add_parser("check", help="check a bundle's metadata.json (offline: required fields, inputs/outputs)")
    chk.add_argument("bundle", type=Path)
    ext = sub.add_parser(
        "extract",
        help="install a bundle zip as DIR/<name>/ (e.g. a MONAI Label app's model/ folder); a zip with members "
        "that leave the bundle folder (.., absolute paths, links) is refused before anything is written",
    )
    ext.add_argument("zip", type=Path, help="the bundle zip")
    ext.add_argument("destination", type=Path, help="the folder to extract into")
    return parser


def _check(bundle: Path) -> list[str]:
    configs = bundle / "configs"
    meta_path = configs / "metadata.json"
    if not meta_path.is_file():
        raise InputFileError(bundle, "not a MONAI bundle folder: no configs/metadata.json")
    parsed = {"metadata.json": _read_json(meta_path)}
    for name in ("inference.json", "train.json"):
        if (configs / name).is_file():
            parsed[name] = _read_json(configs / name)
    problems = check_metadata(parsed["metadata.json"])
    try:
        found = config_class_problems(parsed)
    except ValueError as err:
        raise InputFileError(configs / "inference.json", str(err)) from err
    for name, issues in found.items():
        problems += [f"configs/{name}: {issue}" for issue in issues]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 problems found, 2 bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "export":
            overrides = dict(parse_override(item) for item in args.overrides)
            path = export_bundle(args.bundle, args.output, models=args.models, overrides=overrides)
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
            return 0
        if args.command == "extract":
            print(extract_bundle(args.zip, args.destination))
            return 0
        problems = _check(args.bundle)
    except (UserInputError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{args.bundle}: {problem}")
    print(f"{args.bundle}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
