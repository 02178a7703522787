"""The training-health verdict on crafted loss histories of each kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from acne_detection.pipelines.train.health import assess_training_health


def _history(train: np.ndarray, val: np.ndarray | None = None) -> pd.DataFrame:
    val = train * 1.1 if val is None else val
    data = {"epoch": np.arange(1, len(train) + 1)}
    for term, share in (("box_loss", 0.5), ("cls_loss", 0.3), ("dfl_loss", 0.2)):
        data[f"train/{term}"] = train * share
        data[f"val/{term}"] = val * share
    return pd.DataFrame(data)


EPOCHS = np.arange(30)
SMOOTH = 3.0 * np.exp(-EPOCHS / 8) + 1.0


@pytest.mark.parametrize(
    ("train", "val", "verdict"),
    [
        (SMOOTH, None, "healthy"),
        (3.0 + 0.08 * EPOCHS, None, "diverging"),
        (SMOOTH * (1 + 0.3 * (EPOCHS % 2)), None, "unstable"),
        (3.0 + 0.01 * np.sin(EPOCHS), None, "stalled"),
        (SMOOTH, 2.0 * np.exp(-EPOCHS / 5) + 1.0 + 0.06 * np.clip(EPOCHS - 10, 0, None), "overfitting"),
    ],
)
def test_each_kind_of_history_gets_its_verdict(train: np.ndarray, val: np.ndarray | None, verdict: str) -> None:
    result = assess_training_health(_history(train, val))
    assert result["verdict"] == verdict, result["evidence"]
    assert result["hint"] and result["evidence"]["epochs"] == 30


def test_diverging_says_learning_rate() -> None:
    result = assess_training_health(_history(3.0 + 0.08 * EPOCHS))
    assert "learning rate is too high" in result["hint"]
    assert result["evidence"]["train_change"] > 0.5


def test_two_epochs_are_too_short_to_judge() -> None:
    assert assess_training_health(_history(SMOOTH[:2]))["verdict"] == "too short"
