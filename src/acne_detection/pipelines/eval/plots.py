"""Figures of the ``eval`` pipeline: the detection and grade confusion matrices, threshold curves,
and galleries of test photos with their true (green) and predicted (red) boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from acne_detection.core.grading import interval_words
from acne_detection.core.metrics import match_detections
from acne_detection.core.params import EvalParams
from acne_detection.datasets import YoloDataset
from acne_detection.pipelines.eval.nodes import test_split_truth


def plot_confusion_matrix(confusion: pd.DataFrame) -> Figure:
    """Draw the detection confusion matrix, counts and row-normalised side by side.

    Args:
        confusion: ``evaluate_detections``'s matrix (a ``true`` column, then one per class and
            ``background``).

    Returns:
        The figure.
    """
    return _confusion_figure(confusion, what="class", counted="boxes", cmap="Blues")


def plot_grade_confusion(confusion: pd.DataFrame, metrics: dict[str, float]) -> Figure:
    """The grade confusion matrix, counts and row-normalised (recall per true grade).

    Args:
        confusion: ``evaluate_grading``'s matrix (a ``true`` column, then one per grade).
        metrics: ``evaluate_grading``'s metrics (accuracy and ceiling in the title).

    Returns:
        The figure.
    """
    title = ""
    if "grade_accuracy" in metrics:
        title = (
            f"Severity grading on {metrics['photos_graded']:.0f} test photos: accuracy {metrics['grade_accuracy']:.3f} "
            f"({interval_words(metrics)}: {metrics['grade_accuracy_low']:.2f}-{metrics['grade_accuracy_high']:.2f}); "
            f"ceiling (true counts graded) {metrics['grade_ceiling']:.3f}"
        )
    return _confusion_figure(confusion, what="grade", counted="photos", cmap="Purples", title=title)


def _confusion_figure(confusion: pd.DataFrame, *, what: str, counted: str, cmap: str, title: str = "") -> Figure:
    """A confusion matrix drawn twice side by side: its counts, and each row normalised to sum to
    one (the recall of each true label), every cell written out.

    Args:
        confusion: a ``true`` column (the row labels), then one column per predicted label.
        what: what the labels are (``class``, ``grade``), for the axes and titles.
        counted: what the counts count (``boxes``, ``photos``).
        cmap: the Matplotlib colour map.
        title: the figure's title over both panels; none when empty.

    Returns:
        The figure.
    """
    counts = confusion.set_index("true")
    rows = counts.to_numpy(float)
    normalised = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(13, 5.5))
    for ax, values, panel, fmt in (
        (fig.add_subplot(1, 2, 1), rows, counted, "{:.0f}"),
        (fig.add_subplot(1, 2, 2), normalised, f"row-normalised (recall per true {what})", "{:.2f}"),
    ):
        ax.imshow(values, cmap=cmap, vmin=0)
        ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=30, ha="right")
        ax.set_yticks(range(len(counts.index)), counts.index)
        ax.set(xlabel=f"predicted {what}", ylabel=f"true {what}", title=f"Confusion matrix, {panel}")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="white" if v > values.max() / 2 else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_threshold_curves(sweep: pd.DataFrame, operating_point: dict[str, Any]) -> Figure:
    """Precision, recall and F1 against the threshold, overall and per class, and PR curves.

    Args:
        sweep: ``sweep_thresholds``'s table.
        operating_point: ``choose_operating_point``'s result (drawn as a vertical line).

    Returns:
        A figure: one panel per metric against threshold, one of precision against recall.
    """
    fig = Figure(figsize=(18, 4))
    axes = fig.subplots(1, 4)
    for name, g in sweep.groupby("class", sort=False):
        style = {"lw": 2.5, "color": "k"} if name == "all" else {"lw": 1}
        for ax, metric in zip(axes[:3], ("precision", "recall", "f1")):
            ax.plot(g.threshold, g[metric], label=name, **style)
        axes[3].plot(g.recall, g.precision, "-o", ms=2, label=name, **style)
    for ax, metric in zip(axes[:3], ("precision", "recall", "F1")):
        ax.axvline(operating_point["threshold"], color="r", ls="--", lw=1)
        ax.set(title=f"{metric} vs confidence threshold", xlabel="threshold", ylim=(0, 1.02))
    axes[3].set(
        title="precision-recall (thresholds 0.05-0.95)",
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
    )
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _draw_boxes(ax: Axes, dataset: YoloDataset, image: str, truth: pd.DataFrame, kept: pd.DataFrame) -> None:
    """One test photo with its true boxes (green) and kept predictions (red, class and confidence)."""
    ax.imshow(Image.open(dataset.root / image).convert("RGB"))
    for r in truth[truth.image == image].itertuples():
        ax.add_patch(
            Rectangle((r.x_min, r.y_min), r.x_max - r.x_min, r.y_max - r.y_min, fill=False, ec="#00ff66", lw=1)
        )
    for r in kept[kept.image == image].itertuples():
        ax.add_patch(
            Rectangle((r.x_min, r.y_min), r.x_max - r.x_min, r.y_max - r.y_min, fill=False, ec="#ff3030", lw=1)
        )
        ax.text(r.x_min, r.y_min - 2, f"{dataset.names[r.class_id]} {r.confidence:.2f}", color="#ff3030", fontsize=5)


def rank_test_photos(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    operating_point: dict[str, Any],
    params: EvalParams,
) -> pd.DataFrame:
    """Every test photo's lesions, hits, misses and false alarms at the operating point, best first.

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (its manifest lists every test photo, lesion-free ones too).
        operating_point: predictions below its threshold do not count.
        params: the ``eval`` parameters (``iou_threshold``).

    Returns:
        One row per test photo: ``image``, ``lesions``, ``found``, ``missed``, ``false_alarms``,
        ``errors`` (missed + false alarms), sorted by errors, then by more lesions first.
    """
    truth = test_split_truth(ground_truth)
    kept = predictions[predictions.confidence >= operating_point["threshold"]]
    matches = match_detections(kept, truth, iou_threshold=params.iou_threshold)
    photos = pd.DataFrame({"image": dataset.manifest.loc[dataset.manifest.split == "test", "image"].to_numpy()})
    count = lambda rows: photos["image"].map(rows.groupby("image").size()).fillna(0).astype(int)  # noqa: E731
    photos["lesions"] = count(truth)
    photos["found"] = count(matches[(matches.true_class >= 0) & (matches.pred_class >= 0)])
    photos["missed"] = count(matches[matches.pred_class < 0])
    photos["false_alarms"] = count(matches[matches.true_class < 0])
    photos["errors"] = photos.missed + photos.false_alarms
    return photos.sort_values(["errors", "lesions", "image"], ascending=[True, False, True], ignore_index=True)


def plot_best_and_worst(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    operating_point: dict[str, Any],
    params: EvalParams,
    n: int = 4,
) -> Figure:
    """The ``n`` test photos the detector got most right (top row) and most wrong (bottom row),
    as ``rank_test_photos`` ranks them, true boxes green and predictions red.

    Returns:
        The figure.
    """
    ranked = rank_test_photos(predictions, ground_truth, dataset, operating_point, params)
    truth = test_split_truth(ground_truth)
    kept = predictions[predictions.confidence >= operating_point["threshold"]]
    fig = Figure(figsize=(3.4 * n, 7.2))
    axes = fig.subplots(2, n, squeeze=False)
    for row, (label, rows) in enumerate((("best", ranked.head(n)), ("worst", ranked.iloc[::-1].head(n)))):
        for ax, photo in zip(axes[row], [*rows.itertuples(), *[None] * n][:n]):
            ax.axis("off")
            if photo is None:
                continue
            _draw_boxes(ax, dataset, photo.image, truth, kept)
            ax.set_title(
                f"{label}: {Path(photo.image).name[:22]}\n{photo.lesions} lesion{'' if photo.lesions == 1 else 's'}, "
                f"{photo.missed} missed, "
                f"{photo.false_alarms} false alarms",
                fontsize=7,
            )
    fig.suptitle(
        "Test photos at the operating point: best (top) and worst (bottom); truth green, predictions red", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_error_gallery(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    operating_point: dict[str, Any],
    params: EvalParams,
) -> Figure:
    """The test images with the most missed lesions (top row) and the most false alarms
    (bottom row), ground truth in green and predictions in red with class and confidence.

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (image files).
        operating_point: predictions below its threshold are not drawn.
        params: the ``eval`` parameters (``gallery_size``, ``iou_threshold``).

    Returns:
        The figure.
    """
    gt = test_split_truth(ground_truth)
    kept = predictions[predictions.confidence >= operating_point["threshold"]]
    matches = match_detections(kept, gt, iou_threshold=params.iou_threshold)
    missed = matches[matches.pred_class < 0].groupby("image").size().sort_values(ascending=False, kind="stable")
    alarms = matches[matches.true_class < 0].groupby("image").size().sort_values(ascending=False, kind="stable")
    n = params.gallery_size
    fig = Figure(figsize=(3.4 * n, 7.2))
    axes = fig.subplots(2, n, squeeze=False)
    for row, (title, ranking) in enumerate((("missed lesions", missed), ("false alarms", alarms))):
        for ax, image in zip(axes[row], [*ranking.index[:n], *[None] * n][:n]):
            ax.axis("off")
            if image is None:
                continue
            _draw_boxes(ax, dataset, image, gt, kept)
            ax.set_title(f"{Path(image).name[:26]}: {ranking[image]} {title}", fontsize=7)
    fig.suptitle("Errors at the operating point: ground truth green, predictions red", fontsize=10)
    fig.tight_layout()
    return fig


def plot_skin_tone_metrics(table: pd.DataFrame, params: EvalParams) -> Figure:
    """Recall, AP@50 and grading accuracy per tone band, with their 95 % intervals, the overall
    recall and the margin below it, and the photos behind each bar.

    Args:
        table: ``evaluate_by_skin_tone``'s table.
        params: the ``eval`` parameters (the margin and ``min_photos``).

    Returns:
        A three-panel figure (a note when no tone was measured).
    """
    cfg = params.skin_tone
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    bands = table[table.tone_band != "all"].reset_index(drop=True)
    if bands.empty:
        for ax in axes:
            ax.set_axis_off()
        axes[1].text(0.5, 0.5, "skin tone not measured", ha="center", va="center")
        return fig
    overall = table[table.tone_band == "all"].iloc[0]
    x = np.arange(len(bands))
    labels = [f"{b}\n{n} photos" for b, n in zip(bands.tone_band, bands.photos)]
    for ax, metric, title in zip(
        axes, ("recall", "ap50", "grade_accuracy"), ("recall at the operating point", "AP@50", "grading accuracy")
    ):
        values = bands[metric].astype(float)
        low = (values - bands[f"{metric}_low"].astype(float)).clip(lower=0).fillna(0)
        high = (bands[f"{metric}_high"].astype(float) - values).clip(lower=0).fillna(0)
        colors = ["#d03030" if f else ("#4070b0" if j else "#a0a0a0") for f, j in zip(bands.flagged, bands.judged)]
        ax.bar(x, values.fillna(0), yerr=[low, high], color=colors, capsize=4)
        if pd.notna(overall[metric]):
            ax.axhline(overall[metric], color="k", lw=1, label=f"all photos {overall[metric]:.3f}")
        if metric == "recall":
            ax.axhline(
                overall[metric] - cfg.recall_margin, color="k", lw=1, ls="--", label=f"margin -{cfg.recall_margin:.2f}"
            )
        ax.set_xticks(x, labels, fontsize=8)
        ax.set(title=title, ylim=(0, 1.05))
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"By skin tone (ITA band), 95 % bootstrap intervals over source photos; grey: fewer than {cfg.min_photos} "
        "photos (not judged), red: flagged",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
