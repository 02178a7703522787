"""What a sweep compares: a checkpoint measured on the validation split, as eval measures the
test split (COCO AP, the operating point by eval's rule, lesion counts graded by the rule).

The test split is never read here: recipes are chosen on validation, and the test split is
reported once, by ``eval``, for the recipe chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.grading import grade_photos, grading_metrics
from acne_detection.core.inference import evaluation_settings, model_imgsz, predict_boxes
from acne_detection.core.metrics import (
    SWEEP_THRESHOLDS,
    match_detections,
    mean_average_precision,
    pick_operating_point,
    threshold_sweep,
)
from acne_detection.core.params import EvalParams, GradingParams
from acne_detection.datasets import YoloDataset


def validate_checkpoint(
    weights: Path,
    dataset: YoloDataset,
    val_truth: pd.DataFrame,
    true_grades: pd.Series,
    eval_params: EvalParams,
    grading: GradingParams,
    device: str,
    sources: pd.Series | None = None,
) -> dict[str, float]:
    """Detection and grading metrics of one checkpoint on the validation photos.

    Args:
        weights: the checkpoint.
        dataset: the YOLO dataset (its ``val`` split is measured).
        val_truth: the true boxes of the validation photos.
        true_grades: each photo's true grade by ``image_id``.
        eval_params: IoU, confidence floor, NMS and the operating point's rule.
        grading: the grading rule.
        device: where to predict.
        sources: each photo's source photo by ``image_id`` (copies of one source count once in the
            accuracy's interval); ``None``: every photo its own.

    Returns:
        ``val_mAP50``, ``val_mAP50-95``, ``val_threshold`` (the operating point on validation),
        ``val_precision``/``val_recall``/``val_f1`` there, ``val_grade_accuracy`` with its 95 %
        interval and the ceiling, ``val_count_mae``, and lesions per photo, true and predicted.
    """
    from ultralytics import YOLO

    model = YOLO(str(weights))
    settings = evaluation_settings(eval_params, imgsz=model_imgsz(model), device=device)
    photos = dataset.manifest[dataset.manifest.split == "val"]
    predictions = predict_boxes(model, dataset.keyed("val"), settings)
    n_classes = len(dataset.names)
    map50, map50_95 = mean_average_precision(predictions, val_truth, images=list(photos.image), n_classes=n_classes)
    matches = match_detections(predictions, val_truth, iou_threshold=eval_params.iou_threshold)
    n_true = val_truth.groupby("class_id").size().reindex(range(n_classes), fill_value=0)
    sweep = threshold_sweep(matches, n_true, SWEEP_THRESHOLDS)
    rule = eval_params.operating_point
    point = pick_operating_point(sweep[sweep.class_id == -1], rule.rule, rule.recall_target)
    graded = grade_photos(
        predictions,
        val_truth,
        photos,
        true_grades,
        threshold=float(point.threshold),
        thresholds=grading.thresholds,
        count_classes=grading.count_classes,
    )
    if sources is not None:
        graded = graded.assign(source=graded.image_id.map(sources))
    grades, _ = grading_metrics(graded, names=grading.names)
    metrics: dict[str, Any] = {
        "val_mAP50": map50,
        "val_mAP50-95": map50_95,
        "val_threshold": point.threshold,
        "val_precision": point.precision,
        "val_recall": point.recall,
        "val_f1": point.f1,
        "val_true_per_photo": graded.true_count.mean(),
        "val_pred_per_photo": graded.pred_count.mean(),
        "val_photos": len(photos),
    }
    for name in ("grade_accuracy", "grade_accuracy_low", "grade_accuracy_high", "grade_ceiling", "count_mae"):
        if name in grades:
            metrics[f"val_{name}"] = grades[name]
    return {k: float(v) for k, v in metrics.items() if pd.notna(v)}
