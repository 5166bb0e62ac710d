"""EvaluationReport records how the images met the network (input_mode) in metrics.json and tables.md."""

from __future__ import annotations

import pytest

from coseg.histo import EvaluationReport

CLASSES = {"sem_classes": {0: "background", 1: "tumour"}, "inst_types": {0: "background", 1: "nucleus"}}


@pytest.mark.parametrize("mode, words", [("resize", "resized to the network's input size"), ("crop", "sliding window")])
def test_the_input_mode_is_described(tmp_path, mode, words):
    report = EvaluationReport(tmp_path, input_mode=mode, patch_size=1024, **CLASSES)
    given = report.input_description()
    assert given["input_mode"] == mode and given["patch_size"] == 1024 and words in given["description"]
    assert report.summarize([])["input"] == given


def test_no_input_mode_records_none(tmp_path):
    assert EvaluationReport(tmp_path, **CLASSES).summarize([])["input"] is None


def test_an_unknown_input_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="input_mode must be one of \\('crop', 'resize'\\) or None, got 'tiles'"):
        EvaluationReport(tmp_path, input_mode="tiles", **CLASSES)
