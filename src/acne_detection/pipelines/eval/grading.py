"""Severity grading on the test split: lesions counted at the operating threshold, graded by
``acne_detection.grading.severity_grade``, against each photo's true grade."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError
from matplotlib.figure import Figure

from acne_detection.datasets import YoloDataset
from acne_detection.grading import grade_photos, grading_metrics
from acne_detection.params import parse

logger = logging.getLogger(__name__)


def grade_test_photos(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    grading: dict[str, Any],
) -> pd.DataFrame:
    """Count and grade every test photo, from its true boxes and from the detector's.

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (its manifest lists every test photo, lesion-free ones too).
        split_images: the split manifest (each photo's true ``grade``, empty where unknown).
        operating_point: predictions below its threshold are not counted.
        grading: the ``grading`` parameters.

    Returns:
        One row per test photo: ``image``, ``image_id``, ``true_count``, ``pred_count``,
        ``true_grade`` (``<NA>`` where the export gives none), ``count_grade`` (the grade of the
        true count) and ``pred_grade``.

    Raises:
        DatasetError: ``count_classes`` names a class the dataset does not have.
    """
    g = parse("grading", grading)
    unknown = sorted(set(g.count_classes or ()) - set(dataset.names))
    if unknown:
        raise DatasetError(f"grading.count_classes {unknown} are not classes of the dataset {list(dataset.names)}")
    return grade_photos(
        predictions,
        ground_truth[ground_truth.split == "test"],
        dataset.manifest[dataset.manifest.split == "test"],
        split_images.set_index("image_id")["grade"],
        threshold=operating_point["threshold"],
        thresholds=g.thresholds,
        count_classes=g.count_classes,
    )


def evaluate_grading(photos: pd.DataFrame, grading: dict[str, Any]) -> tuple[dict[str, float], pd.DataFrame]:
    """Grading accuracy (with its 95 % interval), recall per grade, counting MAE/RMSE and the
    ceiling (the true counts graded), and the grade confusion matrix.

    Args:
        photos: ``grade_test_photos``'s table.
        grading: the ``grading`` parameters (grade names).

    Returns:
        The metrics (``acne_detection.grading.grading_metrics``) and the confusion matrix with
        a ``true`` column.
    """
    names = parse("grading", grading).names
    metrics, confusion = grading_metrics(photos, names=names)
    if "grade_accuracy" in metrics:
        logger.info(
            "Grading on %d test photos: accuracy %.3f (95%% CI %.3f-%.3f), ceiling from true counts %.3f; "
            "counting MAE %.2f, RMSE %.2f",
            metrics["photos_graded"],
            metrics["grade_accuracy"],
            metrics["grade_accuracy_low"],
            metrics["grade_accuracy_high"],
            metrics["grade_ceiling"],
            metrics["count_mae"],
            metrics["count_rmse"],
        )
    else:
        logger.info(
            "Grading: no test photo has a true grade; counting MAE %.2f, RMSE %.2f",
            metrics.get("count_mae", np.nan),
            metrics.get("count_rmse", np.nan),
        )
    return metrics, confusion.reset_index()


def plot_grade_confusion(confusion: pd.DataFrame, metrics: dict[str, float]) -> Figure:
    """The grade confusion matrix, counts and row-normalised (recall per true grade).

    Args:
        confusion: ``evaluate_grading``'s matrix (a ``true`` column, then one per grade).
        metrics: ``evaluate_grading``'s metrics (accuracy and ceiling in the title).

    Returns:
        The figure.
    """
    counts = confusion.set_index("true")
    rows = counts.to_numpy(float)
    normalised = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(12, 5))
    axes = fig.subplots(1, 2)
    for ax, values, title, fmt in (
        (axes[0], rows, "photos", "{:.0f}"),
        (axes[1], normalised, "recall per true grade", "{:.2f}"),
    ):
        ax.imshow(values, cmap="Purples", vmin=0)
        ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=20, ha="right")
        ax.set_yticks(range(len(counts.index)), counts.index)
        ax.set(xlabel="predicted grade", ylabel="true grade", title=title)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="white" if v > values.max() / 2 else "black")
    if "grade_accuracy" in metrics:
        fig.suptitle(
            f"Severity grading on {metrics['photos_graded']:.0f} test photos: accuracy {metrics['grade_accuracy']:.3f} "
            f"(95% CI {metrics['grade_accuracy_low']:.2f}-{metrics['grade_accuracy_high']:.2f}); "
            f"ceiling (true counts graded) {metrics['grade_ceiling']:.3f}"
        )
    fig.tight_layout()
    return fig
