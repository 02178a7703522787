"""The detector and the grading per skin tone band: does it miss more lesions on darker skin?

Each test photo carries its source photo's tone band (``data.tones.measure_skin_tones``).
Per band: AP@50 (faster-coco-eval), precision and recall at the operating point, and grading
accuracy where photos have true grades, each with a 95 % interval from a seeded bootstrap
over the band's photos, copies of one source photo drawn together (``core.group_metrics``). A band with fewer than
``eval.skin_tone.min_photos`` photos is reported but never flagged. The figure is drawn in
``plots.py``, the summary's section written in ``report.py``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from acne_detection.core.group_metrics import band_metrics
from acne_detection.core.params import EvalParams
from acne_detection.core.skin_tone import BAND_NAMES
from acne_detection.datasets import YoloDataset
from acne_detection.framework.tracking import to_mlflow_metrics

logger = logging.getLogger(__name__)

COLUMNS = [
    "tone_band",
    "photos",
    "lesions",
    "ap50",
    "ap50_low",
    "ap50_high",
    "recall",
    "recall_low",
    "recall_high",
    "precision",
    "precision_low",
    "precision_high",
    "photos_graded",
    "grade_accuracy",
    "grade_accuracy_low",
    "grade_accuracy_high",
    "recall_gap",
    "judged",
    "flagged",
]


METRIC_COLUMNS = [c for c in COLUMNS if c not in ("tone_band", "photos_graded", "judged", "flagged")]


NOT_MEASURED = "(not measured)"


def image_tone_bands(dataset: YoloDataset, split_images: pd.DataFrame) -> pd.Series:
    """Each photo of the YOLO dataset's tone band (its source photo's), indexed by ``image``;
    ``NOT_MEASURED`` where no tone was measured. Used by the per-band metrics and calibration."""
    bands = split_images.set_index("image_id")["tone_band"] if "tone_band" in split_images else pd.Series(dtype=str)
    band = dataset.manifest.image_id.map(bands).astype(object)
    return pd.Series(
        band.where(band.notna() & (band != ""), NOT_MEASURED).astype(str).to_numpy(), index=dataset.manifest.image
    )


def evaluate_by_skin_tone(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    test_grades: pd.DataFrame,
    params: EvalParams,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], dict[str, str]]:
    """Metrics per skin tone band on the test split, and whether any band is left behind.

    A band is judged when it holds at least ``eval.skin_tone.min_photos`` test photos; a judged
    band whose recall at the operating point is more than ``recall_margin`` below the overall
    recall is flagged (a warning; a gate failure with ``eval.gate.skin_tone``).

    Args:
        predictions: ``predict_test_split``'s table.
        ground_truth: the true boxes of every split.
        dataset: the YOLO dataset (manifest, class names).
        split_images: the split manifest (each photo's ``tone_band``).
        operating_point: the chosen threshold.
        test_grades: ``grade_test_photos``'s table (true and predicted grade per test photo).
        params: the ``eval`` parameters.

    Returns:
        The table (one row per band present, lightest first, and ``all``: see ``COLUMNS``);
        metrics for MLflow (``tone.<band>.<metric>``, shaped by ``to_mlflow_metrics``); and tags:
        ``skin_tone.check`` ("pass",
        "warning: ..." or "not measured: ...") and ``skin_tone.flagged`` (bands, comma-separated).
    """
    test = dataset.manifest.loc[dataset.manifest.split == "test", ["image", "image_id"]].reset_index(drop=True)
    test["tone_band"] = test.image.map(image_tone_bands(dataset, split_images))
    if test.empty or (test["tone_band"] == NOT_MEASURED).all():
        why = "not measured: no test photo has a skin tone (data.skin_tone.measure is false, or no skin was found)"
        logger.info("Skin tone: %s", why)
        return pd.DataFrame(columns=COLUMNS), {}, {"skin_tone.check": why, "skin_tone.flagged": ""}
    test = test.merge(test_grades[["image", "true_grade", "pred_grade"]], on="image", how="left")
    if "group" in split_images:  # the source photo each is a copy of: the bootstrap draws copies together
        test["source"] = test.image_id.map(split_images.set_index("image_id")["group"])
    table = _band_table(predictions, ground_truth[ground_truth.split == "test"], test, operating_point, params, dataset)
    flagged = table[table.flagged]
    _log_bands(table, params.skin_tone)
    overall = table[table.tone_band == "all"].iloc[0]
    check = (
        (
            "warning: "
            + "; ".join(
                f"{r.tone_band} recall {r.recall:.3f} is {r.recall_gap:.3f} below the overall {overall.recall:.3f}"
                for r in flagged.itertuples()
            )
        )
        if len(flagged)
        else f"pass (no band with >= {params.skin_tone.min_photos} photos has recall more than "
        f"{params.skin_tone.recall_margin:.2f} below the overall)"
    )
    return (
        table,
        to_mlflow_metrics(_band_metrics_for_mlflow(table)),
        {"skin_tone.check": check, "skin_tone.flagged": ", ".join(flagged.tone_band)},
    )


def _band_table(
    predictions: pd.DataFrame,
    truth: pd.DataFrame,
    test: pd.DataFrame,
    operating_point: dict[str, Any],
    p: Any,
    dataset: YoloDataset,
) -> pd.DataFrame:
    """One row per band present (lightest first) and ``all``, judged and flagged."""
    cfg = p.skin_tone
    common = {
        "n_classes": len(dataset.names),
        "threshold": operating_point["threshold"],
        "iou_threshold": p.iou_threshold,
        "n_resamples": cfg.bootstrap,
        "rng": np.random.default_rng(cfg.seed),
    }
    overall = band_metrics(predictions, truth, test, **common)
    rows = []
    for band in [b for b in [*BAND_NAMES, NOT_MEASURED] if b in set(test["tone_band"])]:
        row = {"tone_band": band, **band_metrics(predictions, truth, test[test.tone_band == band], **common)}
        row["recall_gap"] = overall["recall"] - row["recall"]
        row["judged"] = band != NOT_MEASURED and row["photos"] >= cfg.min_photos
        row["flagged"] = bool(row["judged"] and row["recall_gap"] > cfg.recall_margin)
        rows.append(row)
    rows.append({"tone_band": "all", **overall, "recall_gap": 0.0, "judged": False, "flagged": False})
    return pd.DataFrame(rows)[COLUMNS]


def _log_bands(table: pd.DataFrame, cfg: Any) -> None:
    overall = table[table.tone_band == "all"].iloc[0]
    for r in table[table.flagged].itertuples():
        logger.warning(
            "Skin tone: recall on %s skin is %.3f (95 %% CI %.3f-%.3f, %d photos, %d lesions), %.3f below the "
            "overall %.3f (margin %.2f)",
            r.tone_band,
            r.recall,
            r.recall_low,
            r.recall_high,
            r.photos,
            r.lesions,
            r.recall_gap,
            overall.recall,
            cfg.recall_margin,
        )
    unjudged = table[(~table.judged) & (table.tone_band != "all")]
    if len(unjudged):
        logger.info(
            "Skin tone: %s hold fewer than %d test photos: reported, not judged",
            ", ".join(f"{r.tone_band} ({r.photos})" for r in unjudged.itertuples()),
            cfg.min_photos,
        )


def _band_metrics_for_mlflow(table: pd.DataFrame) -> dict[str, float]:
    """``tone.<band>.<metric>`` for every band's measured metrics, and ``tone.bands_flagged``."""
    metrics = {}
    for r in table[table.tone_band != "all"].itertuples():
        key = r.tone_band.replace(" ", "_").strip("()")
        for name in METRIC_COLUMNS:
            value = getattr(r, name)
            if pd.notna(value):
                metrics[f"tone.{key}.{name}"] = float(value)
    metrics["tone.bands_flagged"] = float(table.flagged.sum())
    return metrics
