"""A training-health verdict read off the loss history, as a practitioner reads loss curves.

A healthy run shows box, cls and dfl losses falling smoothly. Losses that rise mean the
learning rate is too high (diverging); losses that jump around mean it is unstable; losses
flat from early on mean nothing is being learnt (stalled); validation loss rising while
training loss falls means the model memorises the training set (overfitting).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LOSS_TERMS = ("box_loss", "cls_loss", "dfl_loss")
HINTS = {
    "healthy": "losses fall smoothly; more epochs may still help if they have not flattened",
    "diverging": "losses rise: the learning rate is too high (lower lr0, e.g. by 10x) or the labels are inconsistent",
    "unstable": "losses jump between epochs: lower lr0, raise batch, or check for a few corrupt labels",
    "stalled": "losses barely move: raise lr0, unfreeze layers (lower freeze), or check that labels match images",
    "overfitting": "validation loss rises while training loss falls: add data or augmentation, "
    "or stop earlier (patience)",
    "too short": "fewer than 3 epochs: train longer to judge",
}


def _total(history: pd.DataFrame, split: str) -> np.ndarray:
    return history[[f"{split}/{t}" for t in LOSS_TERMS]].sum(axis=1).to_numpy(float)


def _slope(values: np.ndarray) -> float:
    """Least-squares slope per epoch, relative to the series' first value."""
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), values / values[0], 1)[0])


def assess_training_health(history: pd.DataFrame) -> dict[str, Any]:
    """Classify a loss history as healthy, diverging, unstable, stalled or overfitting.

    Args:
        history: per-epoch rows with Ultralytics' ``results.csv`` columns
            (``train/box_loss`` ... ``val/dfl_loss``).

    Returns:
        ``verdict``, ``hint`` and ``evidence`` (epochs, relative slopes per epoch of the summed
        train and val losses, the largest epoch-to-epoch rise, the total change).
    """
    train, val = _total(history, "train"), _total(history, "val")
    n = len(train)
    if n < 3:
        return {"verdict": "too short", "hint": HINTS["too short"], "evidence": {"epochs": n}}
    rel = train / train[0]
    steps = np.diff(rel)
    late = slice(n // 2, n)
    evidence = {
        "epochs": n,
        "train_change": float(rel[-1] - 1),
        "train_slope_late": _slope(train[late]),
        "val_slope_late": _slope(val[late]),
        "largest_rise": float(steps.max()),
        "rises_over_5pct": int((steps > 0.05).sum()),
        "val_above_its_min": float(val[-1] / val.min() - 1),
    }
    if evidence["train_change"] > 0.05 or (evidence["train_slope_late"] > 0.01 and rel[-1] > rel.min() * 1.1):
        verdict = "diverging"
    elif evidence["rises_over_5pct"] >= max(2, n // 5) or evidence["largest_rise"] > 0.25:
        verdict = "unstable"
    elif (
        evidence["train_slope_late"] < 0 and evidence["val_slope_late"] > 0.005 and evidence["val_above_its_min"] > 0.1
    ):
        verdict = "overfitting"
    elif abs(evidence["train_change"]) < 0.05:
        verdict = "stalled"
    else:
        verdict = "healthy"
    return {"verdict": verdict, "hint": HINTS[verdict], "evidence": evidence}
