"""Nodes of the ``register`` pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.files import sha256_of
from acne_detection.core.grading import GradingRule
from acne_detection.core.inference import DEFAULT_THRESHOLD, model_imgsz
from acne_detection.core.model_card import SYNTHETIC_WARNING, trained_on
from acne_detection.core.params import SERVED_PREDICT_SETTINGS, GradingParams, PredictParams
from acne_detection.core.runtimes import export_runtime, runtime_entry
from acne_detection.datasets import ModelRecords, YoloDataset
from acne_detection.datasets.weights import grade_classifier_checkpoint
from acne_detection.framework.tracking import current_run_id
from acne_detection.model.record import ModelRecord

logger = logging.getLogger(__name__)


def describe_for_registry(
    weights: Path,
    health: dict[str, Any],
    dataset: YoloDataset,
    grading: GradingParams,
    predict: PredictParams,
    records: ModelRecords,
    card: str,
    manifest: pd.DataFrame,
    grade_classifier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the registered model version carries: its weights and their model record, completed
    with how the model is served and where it came from.

    Args:
        weights: the trained checkpoint.
        health: ``assess_training_health``'s result.
        dataset: the YOLO dataset it was trained on (its manifest is hashed; INT8 calibrates on it).
        grading: the ``grading`` parameters: the rule of a record made here, when eval saw
            other weights (``eval.model`` may name another model).
        predict: the ``predict`` parameters: the served model slices, merges and runs as ``predict`` does.
        records: the ``model_record`` dataset: eval's record, used only when it is for these weights.
        card: eval's model card, the version's description (only when eval saw these weights).
        manifest: the split manifest (is the training data synthetic?).
        grade_classifier: ``train_grade_classifier``'s record: its checkpoint travels with the
            version when the record's grade model reads it.

    Returns:
        ``{"weights", "record", "runtime_model", "grade_classifier", "description"}``:
        ``runtime_model`` is the weights exported for ``predict.runtime`` (``None`` on PyTorch;
        INT8 calibrated on this training split), so the served model runs where it was measured.
    """
    sha = sha256_of(Path(weights))
    evaluated = records.local if records.local is not None and records.local.model_sha256 == sha else None
    if evaluated is None:
        logger.warning(
            "eval chose no operating point for these weights (run eval on the trained model first): the "
            "registered model answers at confidence %.2f unless a request says otherwise",
            DEFAULT_THRESHOLD,
        )
        evaluated = ModelRecord.default(sha, GradingRule.from_params(grading), model_source="trained_weights")
    if warning := nms_override_warning(predict.nms_iou, evaluated):
        logger.warning(warning)
    kind = trained_on(manifest)
    record = ModelRecord.model_validate(
        {
            **evaluated.model_dump(),
            "predict": predict.model_dump(include=SERVED_PREDICT_SETTINGS),
            "run_id": current_run_id() or "",
            "dataset_manifest_sha256": dataset.manifest_sha256(),
            "trained_on": kind,
            "training_health": str(health["verdict"]),
            "warning": SYNTHETIC_WARNING if kind == "synthetic" else "",
        }
    )
    return {
        "weights": weights,
        "record": record,
        "runtime_model": _runtime_export(Path(weights), predict, dataset),
        # the grade classifier the grade model reads, the one train made (else: run `kedro run` again)
        "grade_classifier": grade_classifier_checkpoint(
            record.grade_model,
            [Path(grade_classifier["weights"])] if (grade_classifier or {}).get("weights") else [],
        ),
        "description": card if evaluated.has_operating_point else None,
    }


def nms_override_warning(asked: float | None, record: ModelRecord) -> str:
    """What to say when ``predict.nms_iou`` (registered with the model, so the served model
    suppresses at it) is not the NMS IoU eval chose for these weights; ``""`` when it is, or null."""
    if asked is None or asked == record.nms_iou:
        return ""
    return (
        f"predict.nms_iou {asked:.2f} is registered with the model and overrides the NMS IoU eval chose for it, "
        f"{record.nms_iou:.2f} ({record.nms_rule}): the served model suppresses at {asked:.2f}, its model card "
        "states eval's. Set predict.nms_iou: null to serve the model as eval measured it"
    )


def _runtime_export(weights: Path, predict: PredictParams, dataset: YoloDataset) -> Path | None:
    """The weights exported for ``predict.runtime`` (the runtime table's entry); ``None`` on PyTorch."""
    if runtime_entry(predict.runtime).format is None:
        return None
    from ultralytics import YOLO

    size = predict.imgsz or model_imgsz(YOLO(str(weights)))
    return export_runtime(weights, predict.runtime, size, calibration_data=dataset.data_yaml)
