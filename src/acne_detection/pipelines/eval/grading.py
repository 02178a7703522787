"""Severity grading on the test split: the grade model chosen on validation
(``acne_detection.core.grade_model``: the count rule, or a logistic model on the detector's
evidence) grades each test photo, against its true grade; the count rule's grade is kept beside."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError

from acne_detection.core.calibration import Calibration
from acne_detection.core.grade_model import Evidence, GradeModel, choose_grade_model
from acne_detection.core.grading import GradingRule, fit_count_correction, grade_photos, grading_metrics
from acne_detection.core.params import GradingParams
from acne_detection.datasets import YoloDataset

logger = logging.getLogger(__name__)


def _grade_split(
    split: str,
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    g: Any,
) -> pd.DataFrame:
    """``grade_photos`` on one split's photos and true boxes, by the rule, at the operating point."""
    return grade_photos(
        predictions,
        ground_truth[ground_truth.split == split],
        dataset.manifest[dataset.manifest.split == split],
        split_images.set_index("image_id")["grade"],
        threshold=operating_point["threshold"],
        thresholds=g.thresholds,
        count_classes=g.count_classes,
    )


def fit_grading_correction(
    val_predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    grading: GradingParams,
) -> dict[str, Any]:
    """Fit the count correction on the validation photos (``grading.fit_count_correction``):
    their calibrated detections counted at the operating point, against their true counts and
    grades. The test split is not read.

    Args:
        val_predictions: the validation photos' calibrated boxes (``calibrate_predictions``: the
            operating point is on the calibrated scale).
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (every validation photo, lesion-free ones too).
        split_images: the split manifest (true grades).
        operating_point: the threshold the counts are taken at.
        grading: the ``grading`` parameters (``correct_counts: false`` keeps the rule).

    Returns:
        ``fit_count_correction``'s record, with ``thresholds`` the ones to grade the detector's
        count by (the rule's own unless the correction is used).
    """
    if not grading.correct_counts:
        return {"thresholds": list(grading.thresholds), "used": False, "reason": "grading.correct_counts is false"}
    photos = _grade_split("val", val_predictions, ground_truth, dataset, split_images, operating_point, grading)
    record = fit_count_correction(
        photos.pred_count, photos.true_count, photos.true_grade.fillna(-1).astype(int), grading.thresholds
    )
    logger.info(
        "Count correction fitted on %d validation photos: true count ~ %.2f x the detector's; %s",
        record.get("photos", 0),
        record["scale"],
        ("used: " if record["used"] else "") + record["reason"],
    )
    return record


def split_candidates(
    split: str,
    predictions: pd.DataFrame,
    calibration: dict[str, Any],
    dataset: YoloDataset,
    split_images: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """One split's photos (lesion-free ones too), their calibrated candidates (raw confidence at
    or above the calibration's floor: what grade probabilities use) and each photo's side in pixels.

    Returns:
        The candidates, the photos (``image``) and their sides (``sqrt(width * height)``, by image).
    """
    fitted = Calibration.from_dict(calibration)
    raw = predictions.get("raw_confidence", predictions.confidence).to_numpy(float)
    calibrated = predictions if "raw_confidence" in predictions else predictions.assign(confidence=fitted.apply(raw))
    candidates = calibrated[raw >= fitted.min_conf]
    photos = dataset.manifest.loc[dataset.manifest.split == split, ["image", "image_id"]].reset_index(drop=True)
    size = split_images.set_index("image_id").reindex(columns=["width", "height"])  # no sizes: no box-size evidence
    area = pd.to_numeric(photos.image_id.map(size["width"]), errors="coerce") * pd.to_numeric(
        photos.image_id.map(size["height"]), errors="coerce"
    )
    return candidates, photos.image, pd.Series(np.sqrt(area).to_numpy(), index=photos.image.to_numpy())


def score_photos(grade_classifier: dict[str, Any], dataset: YoloDataset, grading: GradingParams) -> pd.DataFrame:
    """Every photo of the dataset scored by the grade classifier (``grade_classifier.grade_scores``).

    Args:
        grade_classifier: ``train_grade_classifier``'s record (``weights``: ``""`` when none was trained).
        dataset: the YOLO dataset (every split's photos).
        grading: the ``grading`` parameters (how many grades).

    Returns:
        One row per photo (indexed by ``image``, its path in the dataset), a ``cls.<k>`` column per
        grade; no rows when there is no classifier.
    """
    from acne_detection.core.grade_classifier import grade_scores, score_columns

    weights = grade_classifier.get("weights") or ""
    if not weights:
        return pd.DataFrame(columns=score_columns(len(grading.names)), index=pd.Index([], name="image"))
    from ultralytics import YOLO

    photos = [(image, dataset.root / image) for image in dataset.manifest.image]
    logger.info("Scoring %d photos with the grade classifier", len(photos))
    return grade_scores(
        YOLO(weights, task="classify"), photos, n_grades=len(grading.names), imgsz=int(grade_classifier["imgsz"])
    )


def _evidence(
    split: str,
    predictions: pd.DataFrame,
    calibration: dict[str, Any],
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    template: GradeModel,
    scores: pd.DataFrame,
) -> tuple[Evidence, pd.DataFrame]:
    """One split's graded photos as ``Evidence`` (features, true grades, source groups), and its candidates."""
    candidates, images, sides = split_candidates(split, predictions, calibration, dataset, split_images)
    features = template.features(candidates, images, sides, scores)
    ids = dataset.manifest.set_index("image")["image_id"]
    meta = split_images.set_index("image_id")
    image_ids = features.index.map(ids)
    grades = pd.Series(pd.to_numeric(image_ids.map(meta["grade"]), errors="coerce"), index=features.index)
    groups = pd.Series(image_ids.map(meta["group"]).astype(str), index=features.index)
    return Evidence.of(features, grades, groups), candidates


def fit_grade_model(
    val_predictions: pd.DataFrame,
    train_predictions: pd.DataFrame,
    scores: pd.DataFrame,
    grade_classifier: dict[str, Any],
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    calibration: dict[str, Any],
    operating_point: dict[str, Any],
    correction: dict[str, Any],
    grading: GradingParams,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Choose what grades this model's photos, on the validation split only
    (``grade_model.choose_grade_model``): the count rule (with eval's count correction, if used),
    or a logistic model on the detector's evidence fitted on the training split (alone, or pooled
    with the grade classifier's probabilities) or cross-fitted on the validation split. The test
    split is not read.

    Args:
        val_predictions: the validation photos' calibrated boxes (``calibrate_predictions``).
        train_predictions: the model's raw boxes on the training photos (empty: not predicted).
        scores: ``score_photos``'s table (empty: no grade classifier).
        grade_classifier: ``train_grade_classifier``'s record.
        dataset: the YOLO dataset (every photo of each split, lesion-free ones too).
        split_images: the split manifest (true ``grade``, source ``group``, ``width``, ``height``).
        calibration: the recalibration (evidence is on calibrated confidences).
        operating_point: the threshold the rule counts at.
        correction: ``fit_grading_correction``'s record (the rule's thresholds on the detector's count).
        grading: the ``grading`` parameters (``model: rule`` keeps the rule without fitting).

    Returns:
        The chosen ``GradeModel`` as a dict, and one row per candidate with its validation scores.
    """
    rule = GradingRule.from_params(grading, correction.get("thresholds"))
    counted_classes = tuple(grading.count_classes or dataset.names)
    classes = counted_classes if len(counted_classes) > 1 else ()  # lesion types each get an expected count
    template = replace(GradeModel.rule(rule), classes=classes)
    val, val_candidates = _evidence("val", val_predictions, calibration, dataset, split_images, template, scores)
    threshold = float(operating_point["threshold"])
    at_threshold = val_candidates[val_candidates.confidence >= threshold]
    rule_grades = rule.grade(rule.count(at_threshold, pd.Series(val.features.index, dtype=object)))
    train = None
    if len(train_predictions) and grading.model == "auto":
        train = _evidence("train", train_predictions, calibration, dataset, split_images, template, scores)[0]
    chosen, table = choose_grade_model(
        rule,
        val,
        rule_grades,
        threshold=threshold,
        train=train,
        classes=classes,
        classifier={k: grade_classifier.get(k) for k in ("sha256", "imgsz")} if len(scores) else None,
        seed=grading.seed,
        learn=grading.model == "auto",
    )
    logger.info("Grade model: %s (%s)", chosen.describe(), chosen.reason)
    for row in table.itertuples():
        logger.info(
            "  %s: %.3f of %d validation photos graded right (log loss %.3f)",
            row.candidate,
            row.accuracy,
            row.photos,
            row.log_loss,
        )
    return chosen.to_dict(), table


def grade_test_photos(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    calibration: dict[str, Any],
    grade_model: dict[str, Any],
    scores: pd.DataFrame,
    grading: GradingParams,
) -> pd.DataFrame:
    """Count and grade every test photo, from its true boxes and from the detector's.

    Args:
        predictions: the test split's calibrated boxes (``calibrate_predictions``).
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (its manifest lists every test photo, lesion-free ones too).
        split_images: the split manifest (each photo's true ``grade``, empty where unknown).
        operating_point: predictions below its threshold are not counted.
        calibration: the recalibration (its floor selects the grade model's candidates).
        grade_model: ``fit_grade_model``'s model: what grades a photo.
        scores: ``score_photos``'s table (what the grade model reads of the grade classifier, if anything).
        grading: the ``grading`` parameters.

    Returns:
        One row per test photo: ``image``, ``image_id``, ``true_count``, ``pred_count``,
        ``true_grade`` (``<NA>`` where the export gives none), ``count_grade`` (the grade of the
        true count), ``pred_grade`` (the grade model's: the most probable grade) and
        ``rule_grade`` (the count rule on the detector's count at the operating point, with
        eval's count correction where it is used), ``source`` (the source photo it is a copy of, where known)
        and, where the grade model estimates a count, ``estimated_count``.

    Raises:
        DatasetError: ``count_classes`` names a class the dataset does not have.
    """
    unknown = sorted(set(grading.count_classes or ()) - set(dataset.names))
    if unknown:
        raise DatasetError(f"grading.count_classes {unknown} are not classes of the dataset {list(dataset.names)}")
    model = GradeModel.from_dict(grade_model) or GradeModel.rule(GradingRule.from_params(grading))
    photos = _grade_split("test", predictions, ground_truth, dataset, split_images, operating_point, grading)
    photos["rule_grade"] = model.grading_rule.grade(photos.pred_count)
    if "group" in split_images:  # the source photo each is a copy of: copies are not independent evidence
        photos["source"] = photos.image_id.map(split_images.set_index("image_id")["group"]).astype(str)
    candidates, _, sides = split_candidates("test", predictions, calibration, dataset, split_images)
    photos["pred_grade"] = model.grades(model.probabilities(candidates, photos.image, sides, scores))
    estimated = model.estimated_counts(candidates, photos.image)  # the count its grade grades, beside those found
    if estimated is not None:
        photos["estimated_count"] = pd.array(estimated, dtype="Int64")
    return photos


def evaluate_grading(photos: pd.DataFrame, grading: GradingParams) -> tuple[dict[str, float], pd.DataFrame]:
    """Grading accuracy (with its 95 % interval), recall per grade, counting MAE/RMSE and the
    ceiling (the true counts graded), and the grade confusion matrix.

    Args:
        photos: ``grade_test_photos``'s table.
        grading: the ``grading`` parameters (grade names).

    Returns:
        The metrics (``acne_detection.core.grading.grading_metrics``) and the confusion matrix with
        a ``true`` column.
    """
    names = grading.names
    metrics, confusion = grading_metrics(photos, names=names)
    graded = photos[photos.true_grade.notna()]
    if "rule_grade" in photos and len(graded):  # the count rule alone, beside the (corrected) grade
        metrics["grade_accuracy_rule"] = float((graded.rule_grade == graded.true_grade.astype(int)).mean())
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
