"""The threshold predict uses is the one eval chose for that very model, or a warned default."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from acne_detection.core.params import parse
from acne_detection.pipelines.predict.nodes import choose_model


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # an empty registry
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights of one model")
    return path


def test_eval_threshold_for_this_model_is_used(checkpoint: Path) -> None:
    from acne_detection.core.files import sha256_of

    record = {"model_sha256": sha256_of(checkpoint), "threshold": 0.4, "rule": "max_f1"}
    info = choose_model(checkpoint, record, parse("predict", {}), parse("grading", {}))
    assert info["threshold"] == 0.4 and info["threshold_source"] == "eval's operating point (max_f1)"


def test_another_models_threshold_is_never_used(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = {"model_sha256": "0" * 64, "threshold": 0.4, "rule": "max_f1"}
    with caplog.at_level(logging.WARNING):
        info = choose_model(checkpoint, record, parse("predict", {"default_threshold": 0.3}), parse("grading", {}))
    assert info["threshold"] == 0.3 and info["threshold_source"] == "predict.default_threshold"
    assert "No operating point recorded" in caplog.text
    assert (
        choose_model(checkpoint, {}, parse("predict", {"threshold": 0.6}), parse("grading", {}))["threshold_source"]
        == "predict.threshold"
    )


def test_a_model_graded_under_another_rule_is_refused_naming_both_rules(checkpoint: Path) -> None:
    """eval under a five-grade rule, then predict under the default: a refusal naming both rules."""
    from acne_detection.core.files import sha256_of
    from acne_detection.core.grade_model import GradeModel, GradeRuleMismatch
    from acne_detection.core.grading import GradingRule

    five = GradingRule(rule_thresholds=(2, 5, 20, 50), names=("clear", "mild", "moderate", "severe", "very severe"))
    record = {"model_sha256": sha256_of(checkpoint), "threshold": 0.4, "rule": "max_f1"}
    graded = {**record, "grade_model": GradeModel.rule(five).to_dict()}
    with pytest.raises(GradeRuleMismatch, match=r"0-2 clear.*0-5 mild"):
        choose_model(checkpoint, graded, parse("predict", {}), parse("grading", {}))
    # a record of an older release: only the count correction, made for five grades
    corrected = {**record, "grading_thresholds": [2.0, 5.0, 20.0, 50.0]}
    with pytest.raises(GradeRuleMismatch, match="another grading rule than '0-5 mild"):
        choose_model(checkpoint, corrected, parse("predict", {}), parse("grading", {}))
    # under its own rule, the model is used with its grade model
    own = parse("grading", {"thresholds": [2, 5, 20, 50], "names": list(five.names)})
    assert choose_model(checkpoint, graded, parse("predict", {}), own)["grade_model"]["kind"] == "rule"
