"""The model card node: everything the run knows about the evaluated model, on one page."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from acne_detection.core.grading import GradingRule
from acne_detection.core.model_card import code_commit, export_root, render_model_card, trained_on
from acne_detection.core.params import GradingParams, TrainParams
from acne_detection.datasets import ModelRecords, YoloDataset
from acne_detection.framework.registry import describe_registered_versions

logger = logging.getLogger(__name__)

# How the card names each reader's format (the keys of ``datasets.readers.READERS``).
_FORMAT_NAMES = {"voc": "Pascal VOC", "yolo": "YOLO", "coco": "COCO", "label_studio": "Label Studio"}


def write_model_card(
    manifest: pd.DataFrame,
    truth: pd.DataFrame,
    dataset: YoloDataset,
    counts: dict[str, Any],
    audit: dict[str, Any],
    detection: dict[str, Any],
    grading: dict[str, Any],
    tones: pd.DataFrame,
    gate: dict[str, Any],
    tone_check: dict[str, Any],
    records: ModelRecords,
    training: dict[str, Any],
    health: dict[str, Any],
    train_params: TrainParams,
    grading_params: GradingParams,
    calibration: dict[str, Any],
    grade_probability: dict[str, Any],
    correction: dict[str, Any],
) -> str:
    """The model card of the evaluated model (``acne_detection.core.model_card``), and the same page
    as the description of every registered version holding these weights (an ``eval`` of a
    registered version refreshes its card; ``register`` sets it on a new version).

    Args:
        manifest: the split manifest.
        truth: the ground-truth boxes (``split``).
        dataset: the YOLO dataset (its manifest digest).
        counts: the ingestion counts.
        audit: the label audit (also the format the export was read in).
        detection: the test metrics.
        grading: the grading metrics.
        tones: the per-tone-band metrics.
        gate: the quality gate's tags.
        tone_check: the skin tone check's tags.
        records: the ``model_record`` dataset: the record eval just made (weights, threshold, grade model).
        training: the training summary of the last training in this checkout.
        health: its health verdict.
        train_params: the ``train`` parameters.
        grading_params: the ``grading`` parameters.
        calibration: ``measure_calibration``'s metrics (D-ECE on the test split).
        grade_probability: ``estimate_grade_probabilities``'s metrics.
        correction: ``fit_grading_correction``'s record.

    Returns:
        The card, in Markdown.
    """
    record = records.local
    if record is None:
        raise ValueError("the model card needs the model record eval makes (record_model) first")
    source = record.model_source
    own_training = source == "trained_weights"  # eval.model names another model: its training is not ours
    root = export_root(manifest)
    kind = trained_on(manifest)
    caveats = _caveats(manifest, kind=kind, source=source, health=health, gate=gate, tone_check=tone_check, audit=audit)
    facts = {
        "model": {"name": "acne-detector", "sha256": record.model_sha256, "commit": code_commit()},
        "trained_on": kind,
        "export": {"name": root.name if root else "?", "format": _export_format(audit), **counts},
        "training": training if own_training else {},
        "train_settings": _train_settings(train_params) if own_training else "n/a",
        "health": health if own_training else {},
        "label_audit": audit,
        "manifest": manifest,
        "truth": truth,
        "manifest_sha256": dataset.manifest_sha256(),
        "grade_names": list(grading_params.names),
        "grading_rule": GradingRule.from_params(grading_params).legend(),
        "detection": {**detection, "gate": gate.get("gate", "n/a")},
        "grading": grading,
        "tones": tones.to_dict("records"),
        "threshold": {
            "threshold": record.threshold,
            "rule": record.threshold_rule,
            "nms_iou": record.nms_iou,
            "nms_rule": record.nms_rule,
        },
        "calibration": {**record.calibration, **calibration},
        "grade_probability": grade_probability,
        "correction": correction,
        "grade_model": record.grade_model,
        "caveats": caveats or ["None recorded beyond the intervals above."],
    }
    card = render_model_card(facts)
    describe_registered_versions(record.model_sha256, card)
    return card


def _caveats(
    manifest: pd.DataFrame,
    *,
    kind: str,
    source: str,
    health: dict[str, Any],
    gate: dict[str, Any],
    tone_check: dict[str, Any],
    audit: dict[str, Any],
) -> list[str]:
    """What a reader must know before trusting the card's figures, one sentence each."""
    own_training = source == "trained_weights"
    caveats = []
    if kind == "synthetic":
        caveats.append("Every figure here is measured on synthetic photos, and says nothing about real skin.")
    if own_training and health.get("verdict") not in ("healthy", None):
        caveats.append(f"Training health: {health.get('verdict')} ({health.get('hint', '')}).")
    if str(gate.get("gate", "")).lower() == "fail":
        caveats.append("The quality gate failed: " + ", ".join(f"{k} {v}" for k, v in gate.items() if k != "gate"))
    if tone_check.get("skin_tone.flagged"):
        caveats.append(f"Recall is lower on skin tone band(s) {tone_check['skin_tone.flagged']}.")
    if audit.get("status") not in ("ok", "handled", None):  # handled: image-level names mapped to one class
        caveats.append(f"The label audit says {audit.get('status')}: check the class names (data/label_audit.json).")
    test_photos = int((manifest["split"] == "test").sum())
    if test_photos < 100:
        caveats.append(f"Only {test_photos} test photos: every interval is wide, and figures can move a lot.")
    if not own_training:
        caveats.append(f"Evaluated model {source}: its training details are in its own run, not repeated here.")
    return caveats


def _train_settings(params: TrainParams) -> str:
    return (
        f"batch {params.batch}, optimizer {params.optimizer}, lr0 {params.lr0}, "
        f"freeze {params.freeze}, seed {params.seed}"
    )


def _export_format(audit: dict[str, Any]) -> str:
    """The format the export was read in, as the label audit recorded it (``RawExport.format``: the
    catalog's ``format``, or what ``datasets.readers.detect_format`` found)."""
    fmt = audit.get("export_format")
    return _FORMAT_NAMES.get(fmt, fmt) if fmt else "format not recorded: rerun the data pipeline"
