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
    from acne_detection.datasets.weights import sha256_of

    record = {"model_sha256": sha256_of(checkpoint), "threshold": 0.4, "rule": "max_f1"}
    info = choose_model(checkpoint, record, parse("predict", {}))
    assert info["threshold"] == 0.4 and info["threshold_source"] == "eval's operating point (max_f1)"


def test_another_models_threshold_is_never_used(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = {"model_sha256": "0" * 64, "threshold": 0.4, "rule": "max_f1"}
    with caplog.at_level(logging.WARNING):
        info = choose_model(checkpoint, record, parse("predict", {"default_threshold": 0.3}))
    assert info["threshold"] == 0.3 and info["threshold_source"] == "predict.default_threshold"
    assert "No operating point recorded" in caplog.text
    assert choose_model(checkpoint, {}, parse("predict", {"threshold": 0.6}))["threshold_source"] == "predict.threshold"
