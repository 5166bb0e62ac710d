"""Bundle config files parse and are plain ASCII.

MONAI opens config files in the locale's encoding; ITK/SimpleITK may switch the process locale to plain C/ASCII,
after which a non-ASCII character in a config (a name with an umlaut, a Greek letter) fails to decode.
"""

from __future__ import annotations

import json
import re

import pytest

from .conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "bundles").glob("*/configs/**/*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_config_is_ascii_json(path):
    raw = path.read_bytes()
    bad = [i for i, b in enumerate(raw) if b > 127]
    assert not bad, f"{path}: non-ASCII byte at offset {bad[0]} (escape it as \\uXXXX)"
    json.loads(raw.decode("ascii"))


def test_both_bundles_have_the_model_zoo_file_set():
    for bundle in ("coseg_histo", "coseg_cbct"):
        root = REPO_ROOT / "bundles" / bundle
        for rel in (
            "LICENSE",
            "configs/metadata.json",
            "configs/train.json",
            "configs/evaluate.json",
            "configs/inference.json",
            "configs/multi_gpu_train.json",
            "configs/multi_gpu_evaluate.json",
            "configs/logging.conf",
            "configs/quickstart.json",
            "docs/README.md",
            "docs/data_license.txt",
        ):
            assert (root / rel).is_file(), f"{bundle} lacks {rel}"


def _boolean_keys(bundle) -> set[str]:
    """The top-level keys that any config of ``bundle`` sets to ``true``/``false``: the boolean settings."""
    keys = set()
    for path in bundle.glob("configs/**/*.json"):
        config = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(config, dict):
            keys |= {key for key, value in config.items() if isinstance(value, bool) and "#" not in key}
    return keys


@pytest.mark.parametrize("bundle", ["coseg_histo", "coseg_cbct"])
def test_every_boolean_setting_is_read_through_flag(bundle):
    """``--keep_unmarked false`` on the command line hands the config the string ``'false'``, which is true in Python:
    every use of a boolean top-level setting goes through ``coseg.engines.flag``, which parses it once."""
    root = REPO_ROOT / "bundles" / bundle
    keys = _boolean_keys(root)
    assert {"keep_unmarked", "resume", "synthesize_data", "allow_random_encoder", "rank_zero"} <= keys
    unparsed = []
    for path in sorted(root.glob("configs/**/*.json")):
        text = path.read_text(encoding="utf-8")
        for key in keys:
            for match in re.finditer(rf"@{key}(?![\w#])", text):
                if not text[: match.start()].endswith("coseg.engines.flag("):
                    line = text[text.rfind("\n", 0, match.start()) + 1 : text.find("\n", match.end())]
                    unparsed.append(f"{path.relative_to(REPO_ROOT)}: {line.strip()}")
    assert not unparsed, "\n".join(unparsed)


@pytest.mark.parametrize("config", ["coseg_histo/configs/train.json", "coseg_cbct/configs/inference.json"])
def test_keep_unmarked_from_the_command_line_means_what_it_says(config):
    from monai.bundle import ConfigParser

    for text, expected in (("false", False), ("True", True), (False, False)):
        parser = ConfigParser()
        parser.read_config(str(REPO_ROOT / "bundles" / config))
        parser.update({"model_preset": "micro", "keep_unmarked": text})
        assert parser.get_parsed_content("watershed").keep_unmarked is expected, text
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / config))
    parser.update({"model_preset": "micro", "keep_unmarked": "yes"})
    with pytest.raises(Exception, match="keep_unmarked"):
        parser.get_parsed_content("watershed")
