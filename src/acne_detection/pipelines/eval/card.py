"""The model card node: everything the run knows about the evaluated model, on one page."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from acne_detection.core.model_card import code_commit, export_root, render_model_card, trained_on
from acne_detection.core.params import GradingParams, TrainParams
from acne_detection.datasets import YoloDataset
from acne_detection.framework.registry import describe_registered_versions

logger = logging.getLogger(__name__)


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
    record: dict[str, Any],
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
        audit: the label audit.
        detection: the test metrics.
        grading: the grading metrics.
        tones: the per-tone-band metrics.
        gate: the quality gate's tags.
        tone_check: the skin tone check's tags.
        record: eval's threshold record (``model_sha256``, ``model_source``, ``threshold``, ``rule``).
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
    source = record.get("model_source", "")
    own_training = source == "trained_weights"  # eval.model names another model: its training is not ours
    root = export_root(manifest)
    kind = trained_on(manifest)
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
    facts = {
        "model": {"name": "acne-detector", "sha256": record.get("model_sha256", "?"), "commit": code_commit()},
        "trained_on": kind,
        "export": {"name": root.name if root else "?", "format": _annotation_format(manifest), **counts},
        "training": training if own_training else {},
        "train_settings": (
            f"batch {train_params.batch}, optimizer {train_params.optimizer}, lr0 {train_params.lr0}, "
            f"freeze {train_params.freeze}, seed {train_params.seed}"
            if own_training
            else "n/a"
        ),
        "health": health if own_training else {},
        "label_audit": audit,
        "manifest": manifest,
        "truth": truth,
        "manifest_sha256": dataset.manifest_sha256(),
        "grade_names": list(grading_params.names),
        "grading_rule": ", ".join(
            f"{name} {lo}-{hi}" if hi is not None else f"{name} > {lo - 1}"
            for name, lo, hi in zip(
                grading_params.names,
                [0, *(x + 1 for x in grading_params.thresholds)],
                [*grading_params.thresholds, None],
                strict=True,
            )
        ),
        "detection": {**detection, "gate": gate.get("gate", "n/a")},
        "grading": grading,
        "tones": tones.to_dict("records"),
        "threshold": record,
        "calibration": {**record.get("calibration", {}), **calibration},
        "grade_probability": grade_probability,
        "correction": correction,
        "grade_model": record.get("grade_model"),
        "caveats": caveats or ["None recorded beyond the intervals above."],
    }
    card = render_model_card(facts)
    describe_registered_versions(record.get("model_sha256", ""), card)
    return card


def _annotation_format(manifest: pd.DataFrame) -> str:
    """The export's annotation format, from its annotation files' extensions."""
    kinds = {".xml": "Pascal VOC", ".txt": "YOLO", ".json": "COCO"}
    suffixes = manifest.get("annotation_file", pd.Series(dtype=str)).dropna().astype(str).str.extract(r"(\.\w+)$")[0]
    found = sorted({kinds.get(s.lower(), s) for s in suffixes.dropna()})
    return ", ".join(found) or "no annotation files"
