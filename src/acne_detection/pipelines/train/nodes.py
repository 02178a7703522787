"""Nodes of the ``train`` pipeline: chart the loss history and report the training's health.

The fine-tuning node itself, ``train_detector``, lives in ``acne_detection.training.detector``
(the sweep trains each recipe with it too); ``pipeline.py`` wires it here as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def plot_training_curves(history: pd.DataFrame) -> Figure:
    """Chart the three loss terms (train and val) and mAP per epoch.

    Args:
        history: per-epoch rows with Ultralytics' ``results.csv`` columns.

    Returns:
        A figure with one panel per loss term and one for mAP@50 and mAP@50-95.
    """
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    for ax, term in zip(axes, ("box", "cls", "dfl")):
        for split, style in (("train", "-o"), ("val", "--s")):
            ax.plot(history["epoch"], history[f"{split}/{term}_loss"], style, ms=3, label=split)
        ax.set(title=f"{term} loss", xlabel="epoch")
        ax.legend()
    for column, label in (("metrics/mAP50(B)", "mAP@50"), ("metrics/mAP50-95(B)", "mAP@50-95")):
        axes[3].plot(history["epoch"], history[column], "-o", ms=3, label=label)
    axes[3].set(title="validation mAP", xlabel="epoch", ylim=(0, 1))
    axes[3].legend()
    fig.tight_layout()
    return fig


def report_training_health(health: dict[str, Any]) -> dict[str, str]:
    """Say the training-health verdict in the log, and shape it as MLflow tags.

    Args:
        health: ``assess_training_health``'s result.

    Returns:
        ``{"health": verdict, "health_hint": hint}``.
    """
    log = logger.info if health["verdict"] == "healthy" else logger.warning
    log("Training health: %s (%s). Evidence: %s", health["verdict"], health["hint"], health["evidence"])
    return {"health": health["verdict"], "health_hint": health["hint"]}
