"""Nodes of the ``predict`` pipeline: new photos → lesions → counts and grade per photo →
annotated copies and an HTML report a clinician can scroll.

Prediction goes through ``acne_detection.core.inference.predict_boxes``, the same function
``eval`` and the served model use.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError

from acne_detection.core.accelerator import detect_device
from acne_detection.core.calibration import Calibration
from acne_detection.core.files import progress_bar, sha256_of
from acne_detection.core.grade_classifier import SCORE_PREFIX
from acne_detection.core.grade_model import GradeModel, GradeRuleMismatch
from acne_detection.core.grading import GradingRule, describe_grade_probabilities
from acne_detection.core.image_check import probe_image
from acne_detection.core.inference import (
    PREDICTION_COLUMNS,
    InferenceSettings,
    iter_predictions,
    load_detector,
    needs_slicing,
)
from acne_detection.core.model_card import SYNTHETIC_WARNING
from acne_detection.core.params import GradingParams, PredictParams
from acne_detection.datasets.photo_folder import Photos
from acne_detection.datasets.weights import grade_classifier_checkpoint
from acne_detection.framework.tracking import model_version_tag, resolve_model

logger = logging.getLogger(__name__)
PHOTO_COLUMNS = ["photo", "status", "reason", "detail", "width", "height", "sliced"]


def choose_model(
    weights: Path,
    model_threshold: dict[str, Any],
    params: PredictParams,
    grading: GradingParams,
    grade_classifier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model to predict with, and the confidence threshold ``eval`` chose *for that model*.

    The threshold comes, in order, from ``predict.threshold`` when set; the operating point
    the last ``eval`` recorded, if it evaluated this very checkpoint (same SHA-256); the
    ``operating_threshold`` tag of the registered version (``models:/``) or of the versions
    registered from the run (``runs:/``, the trained model); else ``default_threshold``,
    with a warning. Never another model's threshold.

    Args:
        weights: the checkpoint ``train`` saved.
        model_threshold: ``eval``'s record (``model_sha256``, ``threshold``), ``{}`` if none.
        params: the ``predict`` parameters.
        grading: the ``grading`` parameters: a model whose grades were made under another rule is
            refused here, before any photo is predicted (``deployed_grade_model``).
        grade_classifier: ``train_grade_classifier``'s record (where the last trained classifier is).

    Returns:
        ``checkpoint``, ``source``, ``model_sha256``, ``model_version`` (registry version or
        run, where known), ``threshold`` (a calibrated confidence when the model has a
        calibration), ``threshold_source``, ``calibration`` (eval's, for these weights, or the
        registered version's; the identity when neither), ``grading_thresholds`` (eval's count
        correction for these weights; ``None``: the rule's), ``grade_model`` (what eval chose to
        grade these weights' photos; ``{}``: none), ``grade_classifier`` (the classifier's
        checkpoint when the grade model reads it; ``""`` otherwise) and ``warning`` (the registered
        version was trained on synthetic photos; "" otherwise).
    """
    checkpoint, source = resolve_model(params.model, Path(weights))
    sha = sha256_of(checkpoint)
    version = model_version_tag(params.model, sha)
    if params.threshold is not None:
        threshold, origin = params.threshold, "predict.threshold"
    elif model_threshold.get("model_sha256") == sha:
        threshold, origin = (
            float(model_threshold["threshold"]),
            f"eval's operating point ({model_threshold.get('rule')})",
        )
    elif version.get("operating_threshold"):
        threshold, origin = float(version["operating_threshold"]), f"registered {version['model_version']}"
    else:
        threshold, origin = params.default_threshold, "predict.default_threshold"
        logger.warning(
            "No operating point recorded for %s (eval has not evaluated this model): using "
            "predict.default_threshold %.2f. Run `kedro run --pipeline eval` with the same model to get one.",
            source,
            threshold,
        )
    if model_threshold.get("model_sha256") == sha:  # calibration and grading eval fitted for these very weights
        calibration = Calibration.from_dict(model_threshold.get("calibration"))
        grading_thresholds = model_threshold.get("grading_thresholds")
        grade_model = model_threshold.get("grade_model") or {}
    else:
        calibration = Calibration.from_dict(json.loads(version.get("calibration") or "{}"))
        grading_thresholds = json.loads(version.get("grading_thresholds") or "null")
        grade_model = json.loads(version.get("grade_model") or "{}")
    # a model whose grades were made under another rule is refused now, before any photo is predicted
    deployed_grade_model({"grade_model": grade_model, "grading_thresholds": grading_thresholds}, grading)
    logger.info("Predicting with %s at confidence >= %.2f (%s)", source, threshold, origin)
    if calibration.warning:
        logger.warning("%s: %s", source, calibration.warning)
    warning = SYNTHETIC_WARNING if version.get("trained_on") == "synthetic" else ""
    if warning:
        logger.warning("%s: %s", version.get("model_version", source), warning)
    info = {
        "checkpoint": str(checkpoint),
        "source": source,
        "model_sha256": sha,
        "model_version": version.get("model_version", source),
        "threshold": threshold,
        "threshold_source": origin,
        "calibration": calibration.to_dict(),
        "grading_thresholds": grading_thresholds,  # None: the grading rule's own
        "grade_model": grade_model,  # {}: none chosen for these weights (the count rule grades)
        "warning": warning,
    }
    info["grade_classifier"] = _find_classifier(grade_model, checkpoint, grade_classifier or {})
    return info


def _find_classifier(grade_model: dict[str, Any], checkpoint: Path, record: dict[str, Any]) -> str:
    """The grade classifier's checkpoint the grade model reads (by its SHA-256): the last trained
    one, or one registered beside the weights (``models:/``); ``""`` when it reads none.

    Raises:
        DatasetError: the grade model reads a classifier that is nowhere here.
    """
    places = [Path(record["weights"])] if record.get("weights") else []
    try:
        found = grade_classifier_checkpoint(grade_model, [*places, *sorted(checkpoint.parent.glob("*.pt"))])
    except FileNotFoundError as err:
        raise DatasetError(
            f"{err}: predict with the registered version (predict.model: "
            "models:/acne-detector/<version>), or run `kedro run` to train both again"
        ) from None
    return str(found) if found else ""


def _load_for_runtime(checkpoint: Path, params: PredictParams) -> tuple[Any, int, str]:
    """The model on ``predict.runtime``. An INT8 export is calibrated on the model's training
    photos, so it is made where they are (``register`` makes it, in ``kedro run``); when it was
    never made and cannot be here, prediction runs on OpenVINO fp32 and says so."""
    try:
        model, imgsz = load_detector(checkpoint, runtime=params.runtime, imgsz=params.imgsz)
        return model, imgsz, params.runtime
    except ValueError as err:
        if params.runtime != "openvino-int8":
            raise
        logger.warning("%s. Predicting on OpenVINO fp32 instead.", err)
        model, imgsz = load_detector(checkpoint, runtime="openvino", imgsz=params.imgsz)
        return model, imgsz, "openvino"


def predict_new_photos(
    photos: Photos, model_info: dict[str, Any], params: PredictParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file, predict every good photo (streamed, in batches, sliced when large).

    Args:
        photos: the folder's files (``PhotoFolder``).
        model_info: ``choose_model``'s result.
        params: the ``predict`` parameters.

    Returns:
        The lesions counted (``inference.PREDICTION_COLUMNS``, ``image`` the photo's path in the
        folder, boxes in its own pixels as displayed, calibrated ``confidence`` at or above the
        threshold), and one row per file that is or looks like a photo: ``status``
        ``predicted`` or ``skipped`` with ``reason`` and ``detail``, size, ``sliced`` and, for a
        predicted photo, ``candidates`` (its detections down to the calibration's floor: what
        its grade probabilities come from). Annotation files beside the photos are not listed (the log counts them).
    """
    model, imgsz, runtime = _load_for_runtime(Path(model_info["checkpoint"]), params)
    device, device_name = detect_device(params.device)
    calibration = Calibration.from_dict(model_info.get("calibration"))
    settings = InferenceSettings.from_params(
        params, imgsz=imgsz, conf=calibration.detector_floor(model_info["threshold"]), device=device
    )
    rows, good = [], []
    for f in photos.unsupported:
        rows.append(
            _photo_row(
                photos.root,
                f,
                "unsupported image format",
                f"{f.suffix} photos are not read; export them as JPEG or PNG",
            )
        )
    for f in photos.other:
        rows.append(_photo_row(photos.root, f, "not an image", "a file of no photo or annotation type"))
    for f in photos.photos:
        probe = probe_image(str(f))
        if probe["image_problem"]:
            rows.append(_photo_row(photos.root, f, probe["image_problem"], probe["image_detail"]))
        else:
            good.append((f, probe))
    logger.info(
        "Predicting %d photos on %s (%s, %s) at %d px, slicing %s; %d files skipped",
        len(good),
        device,
        device_name,
        runtime,
        settings.imgsz,
        settings.slicing,
        len(rows),
    )
    lesions, candidates = [], {}
    keyed = [(f.relative_to(photos.root).as_posix(), f) for f, _ in good]
    with progress_bar() as bar:
        task = bar.add_task(f"Predicting {len(good)} photos", total=len(good))
        for key, found in iter_predictions(model, keyed, settings):
            counted, candidate = calibration.split(
                pd.DataFrame(found, columns=PREDICTION_COLUMNS), model_info["threshold"]
            )
            lesions.append(counted)
            candidates[key] = candidate
            bar.advance(task)
    for f, probe in good:
        w, h = int(probe["width"]), int(probe["height"])
        rows.append(
            {
                **_photo_row(photos.root, f, "", ""),
                "status": "predicted",
                "width": w,
                "height": h,
                "sliced": needs_slicing(w, h, settings),
                "candidates": candidates[f.relative_to(photos.root).as_posix()],
            }
        )
    table = pd.DataFrame(rows, columns=[*PHOTO_COLUMNS, "candidates"]).sort_values("photo", ignore_index=True)
    if model_info.get("grade_classifier") and keyed:  # the grade model's second signal, scored on the same photos
        from ultralytics import YOLO

        from acne_detection.core.grade_classifier import grade_scores

        grade_model = model_info["grade_model"]
        scores = grade_scores(
            YOLO(model_info["grade_classifier"], task="classify"),
            keyed,
            n_grades=len(grade_model["names"]),
            imgsz=int(grade_model["classifier"].get("imgsz", 224)),
        )
        table = table.join(scores, on="photo")
    found = pd.concat(lesions, ignore_index=True) if lesions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return found[PREDICTION_COLUMNS], table


def _photo_row(root: Path, f: Path, reason: str, detail: str) -> dict[str, Any]:
    return {
        "photo": f.relative_to(root).as_posix(),
        "status": "skipped",
        "reason": reason,
        "detail": detail,
        "width": 0,
        "height": 0,
        "sliced": False,
    }


def deployed_grade_model(model_info: dict[str, Any], grading: GradingParams) -> GradeModel:
    """What grades this model's photos: the grade model eval chose for it, else the count rule
    (with eval's count correction for it, if any). Never one made under another rule.

    Raises:
        GradeRuleMismatch: the model's grades were made under a rule other than ``grading``'s,
            naming both.
    """
    asked = GradingRule.from_params(grading)
    stored = GradeModel.from_dict(model_info.get("grade_model"))
    if stored is None:
        corrected = model_info.get("grading_thresholds")
        if corrected and len(corrected) != len(asked.rule_thresholds):
            raise GradeRuleMismatch(
                f"this model's count correction {list(corrected)} was made under another grading rule than "
                f"'{asked.legend()}'. Run `kedro run --pipeline eval` under this rule, or predict under the model's."
            )
        stored = GradeModel.rule(GradingRule.from_params(grading, corrected))
    stored.check_rule(asked)
    return stored


def summarise_photos(
    lesions: pd.DataFrame, photo_table: pd.DataFrame, model_info: dict[str, Any], grading: GradingParams
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Lesions per class, total, and severity grade per predicted photo; the skipped files.

    Args:
        lesions: ``predict_new_photos``'s lesions.
        photo_table: ``predict_new_photos``'s files.
        model_info: ``choose_model``'s result (model and threshold, recorded on every row).
        grading: the ``grading`` parameters (the count→grade rule, counted classes).

    Returns:
        The summary (one row per predicted photo: ``photo``, one count column per class,
        ``lesions`` (the counted classes' total), ``grade`` and ``grade_name`` (the most probable
        grade under the model's probabilities), ``p.<grade name>`` and ``grade_probabilities``
        ("moderate 72 %, severe 26 %": the grade model's, from the photo's calibrated
        detections; ``deployed_grade_model``), ``width``,
        ``height``, ``sliced``, ``model``, ``threshold``), the skipped files with their reason,
        and MLflow metrics (photos predicted and skipped, lesions, photos per grade).
    """
    predicted = photo_table[photo_table.status == "predicted"].reset_index(drop=True)
    classes = sorted(lesions["class"].unique()) if len(lesions) else []
    per_class = pd.crosstab(lesions["image"], lesions["class"]) if len(lesions) else pd.DataFrame()
    summary = predicted[["photo"]].copy()
    for cls in classes:
        summary[cls] = summary.photo.map(per_class[cls]).fillna(0).astype(int)
    model = deployed_grade_model(model_info, grading)
    rule = model.grading_rule
    summary["lesions"] = rule.count(lesions, summary.photo)
    empty = pd.DataFrame(columns=PREDICTION_COLUMNS)
    candidates = [c if isinstance(c, pd.DataFrame) else empty for c in predicted.get("candidates", [])]
    sides = pd.Series(
        np.sqrt(predicted.width.astype(float) * predicted.height.astype(float)).to_numpy(), index=predicted.photo
    )
    scored = [c for c in predicted.columns if str(c).startswith(SCORE_PREFIX)]
    scores = predicted.set_index("photo")[scored] if scored else None
    probabilities = model.probabilities(
        pd.concat([empty, *candidates], ignore_index=True), summary.photo, sides, scores
    )
    summary["grade"] = model.grades(probabilities)  # the most probable grade: one answer with its probabilities
    summary["grade_name"] = summary.grade.map(dict(enumerate(rule.names)))
    for k, name in enumerate(rule.names):
        summary[f"p.{name}"] = probabilities[:, k].round(4)
    summary["grade_probabilities"] = [describe_grade_probabilities(row, rule.names) for row in probabilities]
    summary = summary.join(predicted[["width", "height", "sliced"]])
    summary["model"] = model_info["model_version"]
    summary["threshold"] = model_info["threshold"]
    skipped = photo_table[photo_table.status == "skipped"][["photo", "reason", "detail"]].reset_index(drop=True)
    metrics = {
        "photos_predicted": len(summary),
        "photos_skipped": len(skipped),
        "lesions": int(summary.lesions.sum()),
        "threshold": float(model_info["threshold"]),
        **{f"photos_graded.{name}": int((summary.grade == k).sum()) for k, name in enumerate(grading.names)},
    }
    for row in skipped.itertuples():
        logger.warning("Skipped %s: %s (%s)", row.photo, row.reason, row.detail)
    logger.info(
        "Predicted %d photos (%d lesions), skipped %d; grades: %s",
        len(summary),
        metrics["lesions"],
        len(skipped),
        summary.grade_name.value_counts().to_dict(),
    )
    return summary, skipped, metrics
