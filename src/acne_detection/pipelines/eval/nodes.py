"""Nodes of the ``eval`` pipeline: predictions are data; every metric is computed from tables.

The model runs once (``predict_test_split``) at a low confidence; thresholds, operating
point, metrics, confusion matrix, gate and galleries are all computed from that table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError
from ultralytics import YOLO

from acne_detection.core.accelerator import detect_device
from acne_detection.core.calibration import Calibration
from acne_detection.core.files import sha256_of
from acne_detection.core.inference import PREDICTION_COLUMNS, evaluation_settings, model_imgsz, predict_boxes
from acne_detection.core.metrics import (
    SWEEP_THRESHOLDS,
    average_precision,
    confusion_counts,
    f1_score,
    match_detections,
    mean_average_precision,
    pick_operating_point,
    precision_recall_f1,
    threshold_sweep,
)
from acne_detection.core.model_card import SYNTHETIC_WARNING, trained_on
from acne_detection.core.params import EvalParams
from acne_detection.datasets import YoloDataset
from acne_detection.framework.tracking import model_run_id, resolve_model
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.eval.report import chosen_how

logger = logging.getLogger(__name__)


def predict_test_split(
    weights: Path, dataset: YoloDataset, nms_choice: dict[str, Any], params: EvalParams
) -> pd.DataFrame:
    """Run the model over the test images once, keeping every box above ``min_conf``
    (``predict_split`` on ``test``, at the NMS IoU chosen on validation)."""
    return predict_split(weights, dataset, params, "test", nms_iou=nms_choice["nms_iou"])


def predict_val_split(
    weights: Path, dataset: YoloDataset, ground_truth: pd.DataFrame, params: EvalParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The same on the validation images, once at each NMS IoU eval tries (``eval.nms_iou``,
    then ``eval.nms_candidates``); the table at the one ``choose_nms_iou`` keeps is what the
    recalibration, the operating point and the grade model are chosen on.

    Returns:
        The validation predictions at the chosen IoU, and the choice (``choose_nms_iou``).
    """
    model, device = _load_model(weights, dataset, params, "val")
    tables = {iou: _predict_loaded(model, dataset, params, "val", device, nms_iou=iou) for iou in params.nms_tried}
    images = [key for key, _ in dataset.keyed("val")]
    choice = choose_nms_iou(tables, ground_truth[ground_truth.split == "val"], images, n_classes=len(dataset.names))
    return tables[choice["nms_iou"]], choice


def choose_nms_iou(
    tables: dict[float, pd.DataFrame], val_truth: pd.DataFrame, images: list[str], *, n_classes: int
) -> dict[str, Any]:
    """The NMS IoU of highest validation mAP@50, of the tables predicted at each.

    Ultralytics suppresses a box only where a higher one of its class overlaps it by more than
    IoU 0.7. Lesions of a few pixels get near-copies of one box a pixel or two off, which overlap
    by less and survive: each is a false positive and an extra lesion in the count. Whether a
    lower IoU removes more copies than true neighbours is the validation photos' to say, never
    the test split's.

    Args:
        tables: the validation predictions at each IoU, ``eval.nms_iou``'s first: it is kept
            unless another scores strictly higher.
        val_truth: the validation split's true boxes.
        images: every validation photo (those without a box count too).
        n_classes: the number of classes.

    Returns:
        ``nms_iou`` (the one kept), ``chosen_on`` (``validation``; ``fixed`` with one IoU;
        ``none`` without a true lesion in the validation split, where the first is kept) and
        ``candidates``: each IoU's validation mAP@50, mAP@50-95 and boxes per photo.
    """
    candidates = []
    for iou, table in tables.items():
        map50, map50_95 = mean_average_precision(table, val_truth, images=images, n_classes=n_classes)
        rows = {"val_mAP50": map50, "val_mAP50-95": map50_95, "boxes_per_photo": len(table) / max(len(images), 1)}
        candidates.append({"nms_iou": float(iou), **rows})
    first = candidates[0]
    if len(candidates) == 1:
        chosen, chosen_on = first, "fixed"
    elif not len(val_truth):
        logger.warning("No validation lesion to choose the NMS IoU on: keeping %.2f", first["nms_iou"])
        chosen, chosen_on = first, "none"
    else:
        chosen = max(candidates, key=lambda row: np.nan_to_num(row["val_mAP50"], nan=-1.0))  # the first of ties
        chosen_on = "validation"
    logger.info(
        "NMS IoU %.2f (%s): validation mAP@50 %s",
        chosen["nms_iou"],
        chosen_on,
        ", ".join(f"{row['val_mAP50']:.3f} at {row['nms_iou']:.2f}" for row in candidates),
    )
    return {"nms_iou": chosen["nms_iou"], "chosen_on": chosen_on, "candidates": candidates}


def nms_metrics(choice: dict[str, Any]) -> dict[str, float]:
    """The NMS choice as MLflow metrics (``nms.iou``, ``nms.val_mAP50.iou_0.50``...), to compare runs by."""
    tried = {f"val_mAP50.iou_{row['nms_iou']:.2f}": row["val_mAP50"] for row in choice["candidates"]}
    return {"iou": float(choice["nms_iou"]), **{name: value for name, value in tried.items() if pd.notna(value)}}


def nms_chosen_how(choice: dict[str, Any]) -> str:
    """How ``choose_nms_iou`` chose, in words: the model card's and the record's."""
    tried = ", ".join(f"{row['nms_iou']:.2f} ({row['val_mAP50']:.3f})" for row in choice["candidates"])
    if choice["chosen_on"] == "validation":
        return f"highest validation mAP@50 of {tried}"
    if choice["chosen_on"] == "none":
        return f"eval.nms_iou: the validation split held no true lesion to choose among {tried}"
    return f"eval.nms_iou (validation mAP@50 {tried})"


def predict_train_split(
    weights: Path, dataset: YoloDataset, nms_choice: dict[str, Any], params: EvalParams
) -> pd.DataFrame:
    """The same on the training images: one of the places the grade model may be fitted
    (``eval.grade_model_on_train: false`` skips it and returns no boxes)."""
    if not params.grade_model_on_train:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    return predict_split(weights, dataset, params, "train", nms_iou=nms_choice["nms_iou"])


def predict_split(
    weights: Path, dataset: YoloDataset, params: EvalParams, split: str, *, nms_iou: float | None = None
) -> pd.DataFrame:
    """Run the model over one split's images once, keeping every box above ``min_conf``.

    Args:
        weights: the checkpoint ``train`` saves; ``eval.model`` may name another (a path,
            ``runs:/<run_id>`` or ``models:/<name>/<version>``).
        dataset: the YOLO-format dataset.
        params: the ``eval`` parameters.
        split: ``test``, ``val`` or ``train``.
        nms_iou: the NMS IoU (``None``: ``eval.nms_iou``).

    Returns:
        One row per predicted box: ``image`` (path within the dataset), ``class_id``,
        ``class``, ``confidence`` (raw) and pixel corners.
    """
    model, device = _load_model(weights, dataset, params, split)
    return _predict_loaded(model, dataset, params, split, device, nms_iou=nms_iou)


def _load_model(weights: Path, dataset: YoloDataset, params: EvalParams, split: str) -> tuple[YOLO, str]:
    """The checkpoint eval measures (``eval.model`` or the trained weights), its classes checked
    against the dataset's, and the device it runs on."""
    device, device_name = detect_device(params.device)
    checkpoint, source = resolve_model(params.model, Path(weights))
    logger.info("Evaluating %s (%s) on the %s split, on %s (%s)", checkpoint, source, split, device, device_name)
    model = YOLO(str(checkpoint))
    check_model_classes(model.names, dataset.names, model_label=f"{source} ({checkpoint})")
    return model, device


def _predict_loaded(
    model: YOLO, dataset: YoloDataset, params: EvalParams, split: str, device: str, *, nms_iou: float | None
) -> pd.DataFrame:
    settings = evaluation_settings(params, imgsz=model_imgsz(model), device=device, nms_iou=nms_iou)
    keyed = dataset.keyed(split)
    logger.info("Predicting %d %s images at %d px, NMS IoU %.2f", len(keyed), split, settings.imgsz, settings.iou)
    return predict_boxes(model, keyed, settings)


def check_model_classes(model_names: dict[int, str] | list[str], dataset_names: list[str], *, model_label: str) -> None:
    """Refuse to evaluate a model whose classes differ from the dataset's, in name or order:
    its class ids would be read as other lesions and every per-class number would be wrong.

    Args:
        model_names: the model's classes (Ultralytics' ``model.names``: id to name).
        dataset_names: the dataset's classes, in id order (``data.yaml``).
        model_label: how to name the model in the message.

    Raises:
        DatasetError: naming both lists.
    """
    ours = [model_names[i] for i in sorted(model_names)] if isinstance(model_names, dict) else list(model_names)
    if ours != list(dataset_names):
        raise DatasetError(
            f"{model_label}: the model's classes {ours} differ from the dataset's {list(dataset_names)} "
            "(names and order must match); evaluate a model trained on this dataset's classes, "
            "or set data.classes to the model's"
        )


def test_split_truth(ground_truth: pd.DataFrame) -> pd.DataFrame:
    """The true boxes of the test split."""
    return ground_truth[ground_truth.split == "test"]


def sweep_thresholds(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    params: EvalParams,
    split: str = "test",
) -> pd.DataFrame:
    """Precision, recall and F1 at confidence thresholds 0.05 to 0.95, per class and overall.

    Args:
        predictions: one split's calibrated boxes (``calibrate_predictions``).
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (class names).
        params: the ``eval`` parameters (``iou_threshold``).
        split: the split the boxes are of (``test``, or ``val`` where the operating point is chosen).

    Returns:
        ``metrics.threshold_sweep``'s table with a ``class`` column (``all`` for class id -1).
    """
    gt = ground_truth[ground_truth.split == split]
    matches = match_detections(predictions, gt, iou_threshold=params.iou_threshold)
    n_true = gt.groupby("class_id").size().reindex(range(len(dataset.names)), fill_value=0)
    sweep = threshold_sweep(matches, n_true, SWEEP_THRESHOLDS)
    sweep.insert(2, "class", sweep.class_id.map(dict(enumerate(dataset.names))).fillna("all"))
    return sweep


def _sweep_row(sweep: pd.DataFrame, threshold: float) -> pd.Series:
    """The overall row of a threshold sweep at ``threshold`` (the nearest swept one); empty for no sweep."""
    overall = sweep[sweep.class_id == -1].set_index("threshold")
    if not len(overall):
        return pd.Series(dtype=float)
    return overall.iloc[np.abs(overall.index.to_numpy(float) - threshold).argmin()]


def sweep_validation_thresholds(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, dataset: YoloDataset, params: EvalParams
) -> pd.DataFrame:
    """``sweep_thresholds`` on the validation split's calibrated boxes: where the operating point is chosen."""
    return sweep_thresholds(predictions, ground_truth, dataset, params, split="val")


def choose_operating_point(val_sweep: pd.DataFrame, params: EvalParams, *, test_sweep: pd.DataFrame) -> dict[str, Any]:
    """Pick the confidence threshold to ship on the validation split, by the rule in
    ``eval.operating_point``, and report the test split's precision, recall and F1 there.

    ``max_f1`` takes the threshold of highest overall F1; ``recall_target`` the highest
    threshold whose overall recall still reaches the target (the medical choice: a missed
    lesion costs more than a false alarm), or the lowest threshold if none does. The test split
    never chooses: a threshold picked where it is then scored makes every figure at it (precision,
    recall, the count rule's grades) look better than new photos will see. Without a true lesion
    in the validation split there is nothing to choose by, and the lowest threshold is kept (the
    most recall), with a warning.

    Args:
        val_sweep: ``sweep_validation_thresholds``'s table (the validation split).
        test_sweep: ``sweep_thresholds``'s table (the test split): the figures reported at the threshold.
        params: the ``eval`` parameters.

    Returns:
        ``threshold``, ``rule``, ``recall_target``, ``chosen_on`` (``validation``, or ``none``
        without validation lesions), the test split's overall ``precision``, ``recall`` and ``f1``
        at the threshold, and the validation split's (``val_precision``, ``val_recall``, ``val_f1``).
    """
    p = params.operating_point
    val = val_sweep[val_sweep.class_id == -1].sort_values("threshold").reset_index(drop=True)
    chosen_on = "validation"
    if not len(val) or not (val.tp + val.fn).max() > 0:
        logger.warning(
            "The validation split holds no true lesion to choose the operating point on: the lowest threshold"
        )
        chosen_on = "none"
        row = val.iloc[0] if len(val) else pd.Series(dtype=float)
        threshold = float(SWEEP_THRESHOLDS[0])
    else:
        row = pick_operating_point(val, p.rule, p.recall_target)
        threshold = float(row.threshold)
        if not row.reached:
            logger.warning(
                "No threshold reaches recall %.2f on validation; using the lowest, %.2f", p.recall_target, threshold
            )
    at = _sweep_row(test_sweep, threshold)
    point = {
        "threshold": threshold,
        "rule": p.rule,
        "recall_target": p.recall_target,
        "chosen_on": chosen_on,
        "precision": float(at.get("precision", np.nan)),
        "recall": float(at.get("recall", np.nan)),
        "f1": float(at.get("f1", np.nan)),
        "val_precision": float(row.get("precision", np.nan)),
        "val_recall": float(row.get("recall", np.nan)),
        "val_f1": float(row.get("f1", np.nan)),
    }
    logger.info(
        "Operating point (%s, chosen on %s): confidence >= %.2f; on the test split precision %.3f, recall %.3f, "
        "F1 %.3f (validation: %.3f, %.3f, %.3f)",
        p.rule,
        chosen_on,
        threshold,
        point["precision"],
        point["recall"],
        point["f1"],
        point["val_precision"],
        point["val_recall"],
        point["val_f1"],
    )
    return point


def evaluate_detections(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    operating_point: dict[str, Any],
    params: EvalParams,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Measure the detector on the test split.

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split (``plan_yolo_dataset``'s table).
        dataset: the YOLO dataset (class names).
        operating_point: ``choose_operating_point``'s result.
        params: the ``eval`` parameters.

    Returns:
        Per-class metrics (and an ``all`` row): AP@50, AP@75, AP@50-95, AP for small, medium
        and large boxes, precision, recall, F1 and mean IoU of true positives at the operating
        point; the confusion matrix there (rows true, columns predicted, with ``background``);
        and headline metrics for MLflow.
    """
    names = list(dataset.names)
    gt = test_split_truth(ground_truth)
    ap = average_precision(predictions, gt, images=[], n_classes=len(names))
    kept = predictions[predictions.confidence >= operating_point["threshold"]]
    prf = precision_recall_f1(match_detections(kept, gt, iou_threshold=params.iou_threshold), n_classes=len(names))
    per_class = ap.merge(prf, on="class_id")
    per_class.insert(1, "class", names)
    per_class.insert(2, "instances", per_class.class_id.map(gt.groupby("class_id").size()).fillna(0).astype(int))
    per_class = pd.concat([per_class, pd.DataFrame([_overall_row(per_class, instances=len(gt))])], ignore_index=True)
    cm = confusion_counts(
        match_detections(kept, gt, iou_threshold=params.iou_threshold, class_aware=False), n_classes=len(names)
    )
    labels = [*names, "background"]
    confusion = pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))
    return per_class, confusion.reset_index(), _headline_metrics(per_class, threshold=operating_point["threshold"])


def _overall_row(per_class: pd.DataFrame, *, instances: int) -> dict[str, Any]:
    """The ``all`` row of ``evaluate_detections``' table: counts pooled over the classes, precision,
    recall, F1 and mean IoU from the pooled counts, and each AP the mean over the classes."""
    tp, fp, fn = (int(per_class[c].sum()) for c in ("tp", "fp", "fn"))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {
        "class_id": -1,
        "class": "all",
        "instances": int(instances),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1_score(precision, recall),
        "mean_iou": float(np.average(per_class.mean_iou.fillna(0), weights=per_class.tp)) if tp else np.nan,
        **per_class[["ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large"]].mean().to_dict(),
    }


def _headline_metrics(per_class: pd.DataFrame, *, threshold: float) -> dict[str, float]:
    """The MLflow metrics of ``evaluate_detections``' table (its last row: ``all``), and mAP,
    precision and recall per class; missing values are left out."""
    overall = per_class.iloc[-1]
    headline = {
        "mAP50": overall["ap50"],
        "mAP50-95": overall["ap50_95"],
        "mAP75": overall["ap75"],
        "mAP_small": overall["ap_small"],
        "mAP_medium": overall["ap_medium"],
        "mAP_large": overall["ap_large"],
        "precision": overall["precision"],
        "recall": overall["recall"],
        "f1": overall["f1"],
        "mean_iou": overall["mean_iou"],
        "operating_threshold": threshold,
    }
    for _, row in per_class.iloc[:-1].iterrows():
        name = row["class"]
        headline.update(
            {
                f"mAP50.{name}": row.ap50,
                f"mAP50-95.{name}": row.ap50_95,
                f"precision.{name}": row.precision,
                f"recall.{name}": row.recall,
            }
        )
    return {k: float(v) for k, v in headline.items() if pd.notna(v)}


def check_quality_gate(
    metrics: dict[str, float], grading: dict[str, float], tone_check: dict[str, str], params: EvalParams
) -> dict[str, str]:
    """Compare the headline metrics with the targets in ``eval.gate``.

    Args:
        metrics: ``evaluate_detections``'s headline metrics.
        grading: ``evaluate_grading``'s metrics (``grade_accuracy`` is gated when
            ``gate.grade_accuracy`` is set and the test photos have true grades).
        tone_check: ``evaluate_by_skin_tone``'s tags (gated when ``gate.skin_tone`` is true: a
            flagged band, or no tone measured, fails).
        params: the ``eval`` parameters.

    Returns:
        ``gate.<metric>``: "pass (0.912 >= 0.80)" or "fail (...)" per target, and ``gate``:
        "pass" or "fail" overall (MLflow tags).

    Raises:
        DatasetError: with ``gate.strict``, when any target is missed (``kedro run`` then
            exits non-zero, for use as a model check in CI).
    """
    gate = params.gate
    targets = [("mAP50", metrics, gate.map50), ("recall", metrics, gate.recall), ("precision", metrics, gate.precision)]
    if gate.grade_accuracy is not None:
        targets.append(("grade_accuracy", grading, gate.grade_accuracy))
    verdicts = {}
    for name, source, target in targets:
        if name not in source:
            verdicts[name] = "fail (not measured: no test photo has a true grade)"
            continue
        value = source[name]
        verdicts[name] = (
            "pass" if value >= target else "fail"
        ) + f" ({value:.3f} {'>=' if value >= target else '<'} {target:.2f})"
    if gate.skin_tone:
        check = tone_check.get("skin_tone.check", "not measured")
        verdicts["skin_tone"] = check if check.startswith("pass") else f"fail ({check})"
    overall = "pass" if all(v.startswith("pass") for v in verdicts.values()) else "fail"
    logger.log(logging.INFO if overall == "pass" else logging.WARNING, "Quality gate: %s %s", overall.upper(), verdicts)
    if gate.strict and overall == "fail":
        raise DatasetError(f"Quality gate failed (eval.gate.strict is true): {verdicts}")
    return {"gate": overall, **{f"gate.{k}": v for k, v in verdicts.items()}}


def fingerprint_inputs(dataset: YoloDataset, training_summary: dict[str, Any], params: EvalParams) -> dict[str, str]:
    """Tags that trace every number back to its model and data.

    Args:
        dataset: the YOLO dataset (its manifest is hashed).
        training_summary: the last training's summary (holds its MLflow run id).
        params: the ``eval`` parameters (``model``, when another model is evaluated).

    Returns:
        ``model_source``, ``model_run_id`` (the training run, where known) and
        ``dataset_manifest_sha256``.
    """
    spec = params.model
    run_id = str(training_summary.get("mlflow_run_id", "unknown")) if spec is None else model_run_id(spec)
    return {
        "model_source": spec or "trained_weights",
        "model_run_id": run_id,
        "dataset_manifest_sha256": dataset.manifest_sha256(),
    }


def record_model(
    operating_point: dict[str, Any],
    nms_choice: dict[str, Any],
    calibration: dict[str, Any],
    grade_model: dict[str, Any],
    weights: Path,
    manifest: pd.DataFrame,
    params: EvalParams,
) -> ModelRecord:
    """The model record *of the model evaluated*: its operating point, the calibration the
    point is on, the NMS IoU chosen on validation, and the grade model (with the grading rule
    and count correction it was made under), keyed by the checkpoint's SHA-256 so ``predict``
    uses that model's own and never another's. The ``model_record`` dataset keeps it in
    ``data/06_models/model_record.json`` and on every registered version with those weights.

    Args:
        operating_point: ``choose_operating_point``'s result (a calibrated confidence).
        nms_choice: ``choose_nms_iou``'s result: the NMS IoU the model answers at.
        calibration: ``fit_calibration``'s record, kept with the threshold (it is on its scale).
        grade_model: ``fit_grade_model``'s model: what grades this model's photos.
        weights: the checkpoint ``train`` saved (``eval.model`` may name another).
        manifest: the split manifest: what the model was trained on (a model trained on synthetic
            photos carries the warning every answer of ``predict`` and the served model repeats).
        params: the ``eval`` parameters.

    Returns:
        The record; ``register`` completes it with how the model is served and where it came from.
    """
    checkpoint, source = resolve_model(params.model, Path(weights))
    detector = YOLO(str(checkpoint))
    kind = trained_on(manifest)
    return ModelRecord(
        model_sha256=sha256_of(checkpoint),
        model_source=source,
        classes=tuple(str(detector.names[k]) for k in sorted(detector.names)),
        imgsz=model_imgsz(detector),
        threshold=float(operating_point["threshold"]),
        threshold_rule=chosen_how(operating_point),
        calibration=Calibration.from_dict(calibration).to_dict(),
        nms_iou=float(nms_choice["nms_iou"]),
        nms_rule=nms_chosen_how(nms_choice),
        grade_model=grade_model,
        trained_on=kind,
        warning=SYNTHETIC_WARNING if kind == "synthetic" else "",
    )
