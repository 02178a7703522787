"""Nodes of the ``eval`` pipeline: predictions are data; every metric is computed from tables."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from ultralytics import YOLO

from acne_detection.accelerator import detect_device
from acne_detection.datasets import YoloDataset
from acne_detection.metrics import (
    coco_average_precision, confusion_counts, f1_score, match_detections, precision_recall_f1,
)
from acne_detection.params import parse

logger = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["image", "class_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max"]


def predict_test_split(weights: Path, dataset: YoloDataset, params: dict[str, Any]) -> pd.DataFrame:
    """Run the model over the test images once, keeping every box above ``min_conf``.

    Args:
        weights: the trained checkpoint.
        dataset: the YOLO-format dataset.
        params: the ``eval`` parameters.

    Returns:
        One row per predicted box: ``image`` (path within the dataset), ``class_id``,
        ``class``, ``confidence`` and pixel corners.
    """
    p = parse("eval", params)
    device, device_name = detect_device(p.device)
    model = YOLO(str(weights))
    imgsz = model.ckpt.get("train_args", {}).get("imgsz", 640) if isinstance(model.ckpt, dict) else 640
    images = dataset.images("test")
    logger.info("Predicting %d test images on %s (%s) at %d px", len(images), device, device_name, imgsz)
    rows = []
    for path in images:
        result = next(iter(model.predict(str(path), imgsz=imgsz, conf=p.min_conf, iou=p.nms_iou, max_det=p.max_det,
                                         device=device, verbose=False)))
        boxes = result.boxes
        for cls, conf, xyxy in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist()):
            rows.append((path.relative_to(dataset.root).as_posix(), int(cls), dataset.names[int(cls)], conf, *xyxy))
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def evaluate_detections(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, dataset: YoloDataset, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Measure the detector on the test split.

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split (``plan_yolo_dataset``'s table).
        dataset: the YOLO dataset (its manifest lists every test image, backgrounds too).
        params: the ``eval`` parameters.

    Returns:
        Per-class metrics (and an ``all`` row): AP@50, AP@75, AP@50-95, AP by box size,
        precision, recall, F1 and mean IoU at ``conf_threshold``; the confusion matrix
        (rows true, columns predicted, with ``background``); and headline metrics for MLflow.
    """
    p = parse("eval", params)
    names = list(dataset.names)
    test_images = dataset.manifest.loc[dataset.manifest.split == "test", "image"].tolist()
    gt = ground_truth[ground_truth.split == "test"]
    ap = coco_average_precision(predictions, gt, images=test_images, n_classes=len(names))
    kept = predictions[predictions.confidence >= p.conf_threshold]
    prf = precision_recall_f1(match_detections(kept, gt, iou_threshold=p.iou_threshold), n_classes=len(names))
    per_class = ap.merge(prf, on="class_id")
    per_class.insert(1, "class", names)
    per_class.insert(2, "instances", per_class.class_id.map(gt.groupby("class_id").size()).fillna(0).astype(int))
    tp, fp, fn = (int(per_class[c].sum()) for c in ("tp", "fp", "fn"))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    overall = {"class_id": -1, "class": "all", "instances": int(len(gt)), "tp": tp, "fp": fp, "fn": fn,
               "precision": precision, "recall": recall, "f1": f1_score(precision, recall),
               **per_class[["ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large", "mean_iou"]].mean().to_dict()}
    per_class = pd.concat([per_class, pd.DataFrame([overall])], ignore_index=True)
    cm = confusion_counts(match_detections(kept, gt, iou_threshold=p.iou_threshold, class_aware=False), n_classes=len(names))
    labels = [*names, "background"]
    confusion = pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))
    headline = {"mAP50": overall["ap50"], "mAP50-95": overall["ap50_95"], "precision": precision,
                "recall": recall, "f1": overall["f1"]}
    for _, row in per_class.iloc[:-1].iterrows():
        name = row["class"]
        headline.update({f"mAP50.{name}": row.ap50, f"mAP50-95.{name}": row.ap50_95,
                         f"precision.{name}": row.precision, f"recall.{name}": row.recall})
    headline = {k: float(v) for k, v in headline.items() if pd.notna(v)}
    return per_class, confusion.reset_index(), headline


def plot_confusion_matrix(confusion: pd.DataFrame) -> Figure:
    """Draw the confusion matrix, counts and row-normalised side by side.

    Args:
        confusion: ``evaluate_detections``'s matrix (a ``true`` column, then one per class).

    Returns:
        The figure.
    """
    counts = confusion.set_index("true")
    rows = counts.to_numpy(float)
    normalised = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, values, title, fmt in ((axes[0], rows, "counts", "{:.0f}"), (axes[1], normalised, "row-normalised (recall per true class)", "{:.2f}")):
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=35, ha="right")
        ax.set_yticks(range(len(counts.index)), counts.index)
        ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix, {title}")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="white" if v > values.max() / 2 else "black")
    fig.tight_layout()
    return fig


def report_headline(per_class: pd.DataFrame) -> str:
    """The run's headline as Markdown, also logged so the terminal shows it.

    Args:
        per_class: ``evaluate_detections``'s per-class table.

    Returns:
        A Markdown table of the metrics that matter, per class and overall.
    """
    columns = ["class", "instances", "ap50", "ap50_95", "precision", "recall", "f1"]
    table = per_class[columns].rename(columns={"ap50": "mAP@50", "ap50_95": "mAP@50-95"})
    cells = table.map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in cells.to_numpy()]
    text = "## Test-split results\n\n" + "\n".join(lines) + "\n"
    logger.info("\n%s", text)
    return text
