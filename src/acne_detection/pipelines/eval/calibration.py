"""Calibration on the eval pipeline: fitted on the validation split's detections, applied to
the test split's, measured there (D-ECE before and after, per skin tone band), drawn as a
reliability diagram; and each test photo's grade probabilities from its calibrated detections.

The operating point, precision, recall, the grades and every figure downstream are computed
on the calibrated confidences (a monotone map: AP is unchanged, the threshold's meaning is).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from acne_detection.core.calibration import Calibration, dece, fit_platt, reliability_table
from acne_detection.core.grading import GradingRule
from acne_detection.core.metrics import match_detections
from acne_detection.core.params import EvalParams, GradingParams
from acne_detection.datasets import YoloDataset
from acne_detection.pipelines.eval.tones import NOT_MEASURED, image_tone_bands

logger = logging.getLogger(__name__)


def matched_detections(
    predictions: pd.DataFrame, truth: pd.DataFrame, *, iou_threshold: float, min_conf: float
) -> pd.DataFrame:
    """Each detection at or above ``min_conf`` with ``matched``: whether it found a true box of
    its class at the evaluation IoU (COCO's greedy rule, highest confidence first).

    Returns:
        ``image``, ``confidence``, ``matched`` per detection.
    """
    kept = predictions[predictions.confidence >= min_conf]
    matches = match_detections(kept, truth, iou_threshold=iou_threshold)
    detections = matches[matches.pred_class >= 0]
    return pd.DataFrame(
        {
            "image": detections.image.to_numpy(),
            "confidence": detections.confidence.to_numpy(float),
            "matched": (detections.true_class >= 0).to_numpy(),
        }
    )


def fit_calibration(val_predictions: pd.DataFrame, ground_truth: pd.DataFrame, params: EvalParams) -> dict[str, Any]:
    """Fit the recalibration on the validation split's detections.

    Args:
        val_predictions: the model's boxes on the validation photos (raw confidences).
        ground_truth: the true boxes of every split.
        params: the ``eval`` parameters (``calibration``, ``iou_threshold``).

    Returns:
        The ``Calibration`` as a dict, with ``val_dece_before`` and ``val_dece_after``.
    """
    c = params.calibration
    found = matched_detections(
        val_predictions,
        ground_truth[ground_truth.split == "val"],
        iou_threshold=params.iou_threshold,
        min_conf=c.min_conf,
    )
    if c.method == "none":
        fitted = Calibration(min_conf=c.min_conf, reason="eval.calibration.method is none")
    else:
        fitted = fit_platt(found.confidence.to_numpy(), found.matched.to_numpy(), min_conf=c.min_conf)
    record = fitted.to_dict()
    if len(found):
        record["val_dece_before"] = dece(found.confidence, found.matched, bins=c.bins)
        record["val_dece_after"] = dece(fitted.apply(found.confidence), found.matched, bins=c.bins)
    if fitted.method == "identity":
        logger.warning("Confidence not recalibrated: %s", fitted.reason)
    else:
        logger.info(
            "Calibration fitted on %d validation detections: p = sigmoid(%.3f * logit(c) %+.3f); D-ECE %.3f -> %.3f",
            fitted.detections,
            fitted.a,
            fitted.b,
            record["val_dece_before"],
            record["val_dece_after"],
        )
    return record


def calibrate_predictions(predictions: pd.DataFrame, calibration: dict[str, Any]) -> pd.DataFrame:
    """The predictions with calibrated ``confidence`` (the raw one kept as ``raw_confidence``)."""
    fitted = Calibration.from_dict(calibration)
    return predictions.assign(raw_confidence=predictions.confidence, confidence=fitted.apply(predictions.confidence))


def measure_calibration(
    test_predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    calibration: dict[str, Any],
    params: EvalParams,
) -> tuple[dict[str, float], pd.DataFrame]:
    """D-ECE on the test split before and after recalibration, overall and per skin tone band,
    and the reliability table.

    Args:
        test_predictions: the model's raw boxes on the test photos.
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (maps test images to their ``image_id``).
        split_images: the split manifest (each photo's ``tone_band``).
        calibration: ``fit_calibration``'s record.
        params: the ``eval`` parameters.

    Returns:
        MLflow metrics (``dece_before``, ``dece_after``, ``dece_after.<band>``, ``detections``,
        ``slope``, ``offset``), and per bin and stage (``raw``/``calibrated``) the detections,
        mean confidence and precision.
    """
    c = params.calibration
    fitted = Calibration.from_dict(calibration)
    found = matched_detections(
        test_predictions,
        ground_truth[ground_truth.split == "test"],
        iou_threshold=params.iou_threshold,
        min_conf=c.min_conf,
    )
    calibrated = fitted.apply(found.confidence)
    metrics: dict[str, float] = {
        "detections": float(len(found)),
        "slope": fitted.a,
        "offset": fitted.b,
        "dece_before": dece(found.confidence, found.matched, bins=c.bins),
        "dece_after": dece(calibrated, found.matched, bins=c.bins),
    }
    for key in ("val_dece_before", "val_dece_after"):
        if key in calibration:
            metrics[key] = float(calibration[key])
    bands = found.image.map(image_tone_bands(dataset, split_images))
    for band in sorted(b for b in bands.dropna().unique() if b != NOT_MEASURED):
        inside = (bands == band).to_numpy()
        metrics[f"dece_after.{band}"] = dece(calibrated[inside], found.matched[inside], bins=c.bins)
        metrics[f"detections.{band}"] = float(inside.sum())
    table = pd.concat(
        [
            reliability_table(found.confidence, found.matched, bins=c.bins).assign(stage="raw"),
            reliability_table(calibrated, found.matched, bins=c.bins).assign(stage="calibrated"),
        ],
        ignore_index=True,
    )
    logger.info(
        "Calibration on %d test detections: D-ECE %.3f raw, %.3f calibrated (%s)",
        len(found),
        metrics["dece_before"],
        metrics["dece_after"],
        fitted.method if fitted.method != "identity" else f"identity: {fitted.reason}",
    )
    return {k: float(v) for k, v in metrics.items() if pd.notna(v)}, table


def plot_reliability(table: pd.DataFrame, metrics: dict[str, float]) -> Figure:
    """The reliability diagram: precision against mean confidence per bin, raw and calibrated,
    the diagonal (perfect calibration), and detections per bin below.

    Args:
        table: ``measure_calibration``'s reliability table.
        metrics: ``measure_calibration``'s metrics (D-ECE in the legend).

    Returns:
        The figure.
    """
    fig = Figure(figsize=(6.5, 6.5))
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    width = float((table.high - table.low).iloc[0]) if len(table) else 0.1
    for stage, style, key, shift in (("raw", "-o", "dece_before", -0.2), ("calibrated", "-s", "dece_after", 0.2)):
        rows = table[(table.stage == stage) & (table.detections > 0)]
        label = f"{stage} (D-ECE {metrics.get(key, float('nan')):.3f})"
        top.plot(rows.confidence, rows.precision, style, ms=4, label=label)
        centres = (rows.low + rows.high) / 2 + shift * width
        bottom.bar(centres, rows.detections, width * 0.4, label=stage)
    top.set(
        ylabel="precision (share matched)",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"Reliability on {metrics.get('detections', 0):.0f} test detections",
    )
    top.legend(fontsize=8)
    # log counts where there are any: a model that detected nothing in a bin anywhere (a tiny or failed
    # training) has no positive count, and matplotlib refuses to log-scale that, failing the run
    bottom.set(xlabel="confidence", ylabel="detections", yscale="log" if (table.detections > 0).any() else "linear")
    fig.tight_layout()
    return fig


def estimate_grade_probabilities(
    calibrated_predictions: pd.DataFrame,
    test_grades: pd.DataFrame,
    calibration: dict[str, Any],
    grade_model: dict[str, Any],
    scores: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    grading: GradingParams,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Each test photo's probability of each grade, from the grade model chosen on validation
    (``grade_model.GradeModel``: the count's Poisson-binomial distribution graded by the rule, or a
    logistic model on the detector's evidence), and how good those probabilities are against
    the true grades. The grade eval reports is their argmax: one answer.

    Args:
        calibrated_predictions: ``calibrate_predictions``'s test boxes.
        test_grades: ``grade_test_photos``'s table (true, model and count-rule grades per photo).
        calibration: the calibration record (its ``min_conf`` selects the detections).
        grade_model: ``fit_grade_model``'s model.
        scores: ``score_photos``'s table (the grade classifier's, empty when none).
        dataset: the YOLO dataset (the test photos).
        split_images: the split manifest (photo sizes, skin tone bands).
        grading: the ``grading`` parameters.

    Returns:
        One row per test photo (``image``, ``expected_count``, ``p.<grade name>``,
        ``most_probable``, ``true_grade``, ``pred_grade``), and metrics: ``brier`` (multi-class
        Brier score against the true grade) overall and per skin tone band (``brier.<band>``),
        ``accuracy`` (most probable grade against the true grade), ``agreement`` (most probable
        grade against the count rule's grade) and ``top_dece`` (calibration of the most probable
        grade's probability), on photos with a true grade; ``photos``.
    """
    from acne_detection.core.grade_model import GradeModel
    from acne_detection.pipelines.eval.grading import split_candidates

    model = GradeModel.from_dict(grade_model) or GradeModel.rule(GradingRule.from_params(grading))
    candidates, _, sides = split_candidates("test", calibrated_predictions, calibration, dataset, split_images)
    probabilities = model.probabilities(candidates, test_grades.image, sides, scores)
    expected = model.grading_rule.counted(candidates).groupby("image").confidence.sum()  # the count's mean
    rows = [
        {
            "image": photo.image,
            "expected_count": float(expected.get(photo.image, 0.0)),
            **{f"p.{name}": float(v) for name, v in zip(grading.names, grades, strict=True)},
            "most_probable": int(np.argmax(grades)),
            "true_grade": photo.true_grade,
            "pred_grade": int(photo.rule_grade),
        }
        for photo, grades in zip(test_grades.itertuples(), probabilities, strict=True)
    ]
    table = pd.DataFrame(rows)
    metrics: dict[str, float] = {"photos": float(len(table))}
    graded = table[table.true_grade.notna()] if len(table) else table
    if len(graded):
        probs = graded[[f"p.{name}" for name in grading.names]].to_numpy(float)
        truth = graded.true_grade.astype(int).to_numpy()
        onehot = np.eye(len(grading.names))[truth]
        top = probs.max(axis=1)
        correct = graded.most_probable.to_numpy() == truth
        metrics.update(
            brier=float(((probs - onehot) ** 2).sum(axis=1).mean()),
            accuracy=float(correct.mean()),
            agreement=float((graded.most_probable == graded.pred_grade).mean()),
            top_dece=dece(top, correct, bins=10),
            photos_graded=float(len(graded)),
        )
        bands = graded.image.map(image_tone_bands(dataset, split_images))
        for band in sorted(b for b in bands.dropna().unique() if b != NOT_MEASURED):
            inside = (bands == band).to_numpy()
            metrics[f"brier.{band}"] = float(((probs[inside] - onehot[inside]) ** 2).sum(axis=1).mean())
            metrics[f"photos.{band}"] = float(inside.sum())
        logger.info(
            "Grade probabilities on %d test photos: Brier %.3f, most probable grade right %.3f, "
            "agrees with the count rule %.3f",
            len(graded),
            metrics["brier"],
            metrics["accuracy"],
            metrics["agreement"],
        )
    return table, metrics
