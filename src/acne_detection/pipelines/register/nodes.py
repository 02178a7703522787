"""Nodes of the ``register`` pipeline."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from acne_detection.core.grading import GradingRule
from acne_detection.core.inference import DEFAULT_THRESHOLD, export_runtime, model_imgsz
from acne_detection.core.model_card import SYNTHETIC_WARNING, trained_on
from acne_detection.core.params import SERVED_PREDICT_SETTINGS, GradingParams, PredictParams
from acne_detection.datasets import YoloDataset
from acne_detection.datasets.weights import grade_classifier_checkpoint

logger = logging.getLogger(__name__)


def describe_for_registry(
    weights: Path,
    health: dict[str, Any],
    dataset: YoloDataset,
    grading: GradingParams,
    predict: PredictParams,
    model_threshold: dict[str, Any],
    card: str,
    manifest: pd.DataFrame,
    grade_classifier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the registered model version carries: its weights, the operating point chosen for
    them, what it grades by, and the tags that trace it.

    Args:
        weights: the trained checkpoint.
        health: ``assess_training_health``'s result.
        dataset: the YOLO dataset it was trained on (its manifest is hashed).
        grading: the ``grading`` parameters, which the served model grades by.
        predict: the ``predict`` parameters: the served model slices and merges as ``predict`` does.
        model_threshold: eval's record (``model_sha256``, ``threshold``, ``rule``); used only
            when it is for these weights (``eval.model`` may have named another model).
        card: eval's model card, the version's description (only when eval saw these weights).
        manifest: the split manifest (is the training data synthetic?).
        grade_classifier: ``train_grade_classifier``'s record: its checkpoint travels with the
            version when the grade model eval chose for these weights reads it.

    Returns:
        ``{"weights", "runtime_model", "config", "tags"}``: ``runtime_model`` is the weights
        exported for ``predict.runtime`` (``None`` on PyTorch; INT8 calibrated on this training
        split), so the served model runs where it was measured; ``config`` holds the grading rule, the threshold the
        served model answers at by default, how it slices and merges (``predict``), the
        weights' SHA-256 and the run that logged them;
        ``tags`` hold the manifest's and weights' SHA-256, the training health and the
        operating point (``predict`` finds the version, and its threshold, from the file).
    """
    from acne_detection.core.files import sha256_of

    sha = sha256_of(Path(weights))
    own = (model_threshold or {}).get("model_sha256") == sha
    if not own:
        logger.warning(
            "eval chose no operating point for these weights (run eval on the trained model first): the "
            "registered model answers at confidence %.2f unless a request says otherwise",
            DEFAULT_THRESHOLD,
        )
    threshold = float(model_threshold["threshold"]) if own else DEFAULT_THRESHOLD
    rule = str(model_threshold.get("rule")) if own else "default (no operating point chosen)"
    run = mlflow.active_run()
    kind = trained_on(manifest)
    runtime_model = None
    if predict.runtime != "torch":
        from ultralytics import YOLO

        size = predict.imgsz or model_imgsz(YOLO(str(weights)))
        runtime_model = export_runtime(Path(weights), predict.runtime, size, calibration_data=dataset.data_yaml)
    return {
        "weights": weights,
        "runtime_model": runtime_model,
        # the grade classifier the grade model reads, the one train made (else: run `kedro run` again)
        "grade_classifier": grade_classifier_checkpoint(
            model_threshold.get("grade_model") if own else None,
            [Path(grade_classifier["weights"])] if (grade_classifier or {}).get("weights") else [],
        ),
        "description": card if own else None,
        "config": {
            # the rule, and the thresholds this model's count is graded by (eval's count correction,
            # when it graded validation better than the rule; else the rule's own)
            **GradingRule.from_params(grading, model_threshold.get("grading_thresholds") if own else None).to_config(),
            "threshold": threshold,
            "threshold_rule": rule,
            "predict": predict.model_dump(include=SERVED_PREDICT_SETTINGS),
            "calibration": model_threshold.get("calibration", {}) if own else {},
            # what grades a photo (the count rule, or eval's logistic model on the detector's evidence)
            "grade_model": model_threshold.get("grade_model", {}) if own else {},
            "model_sha256": sha,
            "run_id": run.info.run_id if run else "",
            "trained_on": kind,
            "warning": SYNTHETIC_WARNING if kind == "synthetic" else "",
        },
        "tags": {
            "dataset_manifest_sha256": dataset.manifest_sha256(),
            "training_health": health["verdict"],
            "model_sha256": sha,
            "trained_on": kind,
            **({"operating_threshold": threshold, "operating_rule": rule} if own else {}),
            **({"calibration": json.dumps(model_threshold.get("calibration", {}))} if own else {}),
            **(
                {"grade_model": json.dumps(model_threshold["grade_model"])}
                if own and model_threshold.get("grade_model")
                else {}
            ),
            **(
                {"grading_thresholds": json.dumps(model_threshold["grading_thresholds"])}
                if own and model_threshold.get("grading_thresholds")
                else {}
            ),
        },
    }
