"""Nodes of the ``reviewed`` pipeline: what the review changed, and the export kept for training."""

from __future__ import annotations

import logging
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from acne_detection.core.review import review_edits, review_summary, submitted_annotation

logger = logging.getLogger(__name__)


def measure_review(export: list[dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per reviewed photo, the boxes kept, moved, deleted and added against the model's
    pre-annotation, and the model's precision and recall on those photos.

    Args:
        export: Label Studio's JSON export of the project.

    Returns:
        The edits table (``core.review.EDIT_COLUMNS``) and the headline metrics.
    """
    edits = review_edits(export)
    metrics = review_summary(edits)
    waiting = sum(submitted_annotation(t) is None for t in export)
    logger.info(
        "Review: %d photos reviewed (%d waiting or skipped); the model's precision %.3f and recall %.3f on them; "
        "%.1f edits per photo (%d kept, %d moved, %d deleted, %d added); grade changed on %.0f %% of photos",
        len(edits),
        waiting,
        metrics["precision"],
        metrics["recall"],
        metrics["edits_per_photo"],
        metrics["kept"],
        metrics["moved"],
        metrics["deleted"],
        metrics["added"],
        100 * metrics["grade_changed"],
    )
    return edits, metrics


def plot_review(edits: pd.DataFrame) -> Figure:
    """What the reviewers did to the model's boxes, in total and per photo."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    totals = edits[["kept", "moved", "deleted", "added"]].sum()
    left.bar(totals.index, totals.to_numpy(), color=["#3a7", "#e90", "#c33", "#36c"])
    left.set_title(f"Boxes on {len(edits)} reviewed photos")
    per_photo = edits[["moved", "deleted", "added"]].sum(axis=1)
    right.hist(per_photo, bins=range(0, int(per_photo.max() if len(per_photo) else 0) + 2), color="#888")
    right.set_title("Edits per photo")
    right.set_xlabel("moved + deleted + added")
    fig.tight_layout()
    return fig


def keep_reviews(export: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The export as it stands, saved where ``format: label_studio`` reads it for training."""
    return export
