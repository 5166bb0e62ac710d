"""The README's quickstart commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

from .conftest import REPO_ROOT


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line for line in ci.splitlines() if line.startswith("python3 -m venv")]
    assert len(ci_lines) == 1, ".ci/run must hold exactly one command line starting with 'python3 -m venv'"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert ci_lines[0] in readme.splitlines(), "the README's test command and .ci/run differ"


def test_readme_main_command_uses_existing_configs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    main = [line for line in readme.splitlines() if "monai.bundle run training" in line and line.startswith("python3")]
    assert main, "the README's main command is missing"
    for part in main[0].split("'"):
        if part.endswith(".json"):
            assert (REPO_ROOT / part).is_file(), f"README refers to a missing config {part}"
