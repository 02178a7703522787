"""The threshold predict uses is the one eval chose for that very model, or a warned default;
a model record made under another grading rule is refused, naming both rules."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from acne_detection.core.files import sha256_of
from acne_detection.core.grade_model import GradeModel, GradeRuleMismatch
from acne_detection.core.grading import GradingRule
from acne_detection.core.params import parse
from acne_detection.datasets import ModelRecordDataset, ModelRecords
from acne_detection.model.predictor import ModelChoice
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.predict.nodes import choose_model

FIVE = GradingRule(rule_thresholds=(2, 5, 20, 50), names=("clear", "mild", "moderate", "severe", "very severe"))


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # an empty registry
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights of one model")
    return path


def _record(sha: str, rule: GradingRule = GradingRule(), **fields) -> ModelRecord:
    return ModelRecord(
        model_sha256=sha, threshold=0.4, threshold_rule="max_f1", grade_model=GradeModel.rule(rule).to_dict(), **fields
    )


def test_eval_threshold_for_this_model_is_used(checkpoint: Path) -> None:
    records = ModelRecords(_record(sha256_of(checkpoint)))
    choice = ModelChoice.model_validate(choose_model(checkpoint, records, parse("predict", {}), parse("grading", {})))
    assert choice.threshold == 0.4 and choice.threshold_source == "eval's operating point (max_f1)"
    assert choice.record == records.local


def test_another_models_threshold_is_never_used(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = ModelRecords(_record("0" * 64))
    with caplog.at_level(logging.WARNING):
        info = choose_model(checkpoint, records, parse("predict", {"default_threshold": 0.3}), parse("grading", {}))
    assert info["threshold"] == 0.3 and info["threshold_source"] == "predict.default_threshold"
    assert info["record"]["model_sha256"] == sha256_of(checkpoint)  # a default record of these weights, not the other's
    assert "No operating point recorded" in caplog.text
    chosen = choose_model(checkpoint, ModelRecords(None), parse("predict", {"threshold": 0.6}), parse("grading", {}))
    assert chosen["threshold_source"] == "predict.threshold" and chosen["threshold"] == 0.6


def test_a_model_graded_under_another_rule_is_refused_naming_both_rules(checkpoint: Path) -> None:
    """eval under a five-grade rule, then predict under the default: a refusal naming both rules."""
    records = ModelRecords(_record(sha256_of(checkpoint), FIVE))
    with pytest.raises(GradeRuleMismatch, match=r"0-2 clear.*0-5 mild"):
        choose_model(checkpoint, records, parse("predict", {}), parse("grading", {}))
    # under its own rule, the model is used with its grade model
    own = parse("grading", {"thresholds": [2, 5, 20, 50], "names": list(FIVE.names)})
    choice = ModelChoice.model_validate(choose_model(checkpoint, records, parse("predict", {}), own))
    assert choice.record.grading_rule().names == FIVE.names and choice.threshold == 0.4


def test_the_record_round_trips_through_its_dataset_and_an_old_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = ModelRecordDataset(filepath=str(tmp_path / "models" / "model_record.json"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model_threshold.json").write_text('{"model_sha256": "ab", "threshold": 0.4}')
    with caplog.at_level(logging.WARNING):
        assert dataset.load().local is None
    assert "model_threshold.json was written by an earlier release" in caplog.text
    record = _record("ab" * 32, FIVE, classes=("papule", "pustule"), imgsz=416)
    dataset.save(record)
    assert dataset.load().local == record
    assert not list((tmp_path / "models").glob("*.part"))
