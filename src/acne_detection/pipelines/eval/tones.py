"""The detector and the grading per skin tone band: does it miss more lesions on darker skin?

Each test photo carries its source photo's tone band (``data.tones.measure_skin_tones``).
Per band: AP@50 (faster-coco-eval), precision and recall at the operating point, and grading
accuracy where photos have true grades, each with a 95 % interval from a seeded bootstrap
over the band's photos (photos, not lesions, are the independent units: lesions on one face
share its lighting and skin). A band with few photos gets wide intervals, and one with fewer
than ``eval.skin_tone.min_photos`` is reported but never flagged.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from acne_detection.core.metrics import average_precision, match_detections, resampled_ap, top_per_photo
from acne_detection.core.params import parse
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


def _resample_weights(n_photos: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) how often each of B bootstrap resamples draws each photo."""
    draws = rng.integers(0, n_photos, size=(n_resamples, n_photos))
    weights = np.zeros((n_resamples, n_photos))
    np.add.at(weights, (np.repeat(np.arange(n_resamples), n_photos), draws.ravel()), 1.0)
    return weights


def _interval(values: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap values (NaN resamples left out)."""
    values = values[~np.isnan(values)]
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if len(values) else (np.nan, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def band_metrics(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    photos: pd.DataFrame,
    *,
    n_classes: int,
    threshold: float,
    iou_threshold: float,
    n_resamples: int,
    rng: np.random.Generator,
    max_dets: int = 100,
) -> dict[str, float]:
    """AP@50, precision and recall at ``threshold``, and grading accuracy for one set of photos,
    each with a bootstrap 95 % interval over the photos.

    Args:
        predictions: predicted boxes (``image``, ``class_id``, corners, ``confidence``).
        ground_truth: true boxes (``image``, ``class_id``, corners).
        photos: the photos (``image``; ``true_grade`` and ``pred_grade`` where graded).
        n_classes: number of classes (AP@50 is their mean, over classes with true boxes here).
        threshold: the operating point's confidence threshold.
        iou_threshold: the least IoU of a match.
        n_resamples: bootstrap resamples (0: no intervals).
        rng: the seeded generator the resamples come from.
        max_dets: detections kept per photo and class for AP, as COCO does.

    Returns:
        ``photos``, ``lesions``, ``ap50``, ``recall``, ``precision``, ``photos_graded``,
        ``grade_accuracy``, and ``<metric>_low``/``_high`` for each of the four metrics.
    """
    images = photos["image"].tolist()
    index = {name: i for i, name in enumerate(images)}
    preds = predictions[predictions["image"].isin(index)]
    truth = ground_truth[ground_truth["image"].isin(index)]
    ap = average_precision(preds, truth, images=images, n_classes=n_classes)["ap50"]
    kept = match_detections(preds[preds.confidence >= threshold], truth, iou_threshold=iou_threshold)
    photo = kept["image"].map(index).to_numpy()
    tp = np.bincount(photo, weights=(kept.true_class >= 0) & (kept.pred_class >= 0), minlength=len(images))
    fp = np.bincount(photo, weights=kept.true_class < 0, minlength=len(images))
    fn = np.bincount(photo, weights=kept.pred_class < 0, minlength=len(images))
    graded = photos["true_grade"].notna().to_numpy() if "true_grade" in photos else np.zeros(len(images), bool)
    correct = (
        (photos["pred_grade"] == photos["true_grade"]).fillna(False).to_numpy(float)
        if graded.any()
        else np.zeros(len(images))
    )
    out = {
        "photos": len(images),
        "lesions": len(truth),
        "ap50": float(ap.mean()) if ap.notna().any() else np.nan,
        "recall": float(_ratio(tp.sum(), tp.sum() + fn.sum())),
        "precision": float(_ratio(tp.sum(), tp.sum() + fp.sum())),
        "photos_graded": int(graded.sum()),
        "grade_accuracy": float(correct[graded].mean()) if graded.any() else np.nan,
    }
    if not n_resamples or not images:
        return out | {
            f"{m}_{e}": np.nan for m in ("ap50", "recall", "precision", "grade_accuracy") for e in ("low", "high")
        }
    w = _resample_weights(len(images), n_resamples, rng)
    draws = {
        "recall": _ratio(w @ tp, w @ (tp + fn)),
        "precision": _ratio(w @ tp, w @ (tp + fp)),
        "grade_accuracy": _ratio(w @ (correct * graded), w @ graded.astype(float)),
    }
    matched = match_detections(top_per_photo(preds, max_dets), truth, iou_threshold=0.5)
    per_class = []
    for cls in range(n_classes):
        truth_c = np.bincount(truth.loc[truth.class_id == cls, "image"].map(index), minlength=len(images))
        if not truth_c.any():
            continue
        det = matched[matched.pred_class == cls]
        per_class.append(
            resampled_ap(
                det.true_class.to_numpy() >= 0,
                det.confidence.to_numpy(),
                det["image"].map(index).to_numpy(),
                truth_c,
                w,
            )
        )
    draws["ap50"] = np.nanmean(np.vstack(per_class), axis=0) if per_class else np.full(n_resamples, np.nan)
    for name, values in draws.items():
        out[f"{name}_low"], out[f"{name}_high"] = _interval(values) if not np.isnan(out[name]) else (np.nan, np.nan)
    return out


def evaluate_by_skin_tone(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    dataset: YoloDataset,
    split_images: pd.DataFrame,
    operating_point: dict[str, Any],
    test_grades: pd.DataFrame,
    params: dict[str, Any],
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
    p = parse("eval", params)
    cfg = p.skin_tone
    test = dataset.manifest.loc[dataset.manifest.split == "test", ["image", "image_id"]].reset_index(drop=True)
    bands = split_images.set_index("image_id")["tone_band"] if "tone_band" in split_images else pd.Series(dtype=str)
    band = test["image_id"].map(bands).astype(object)
    test["tone_band"] = band.where(band.notna() & (band != ""), "(not measured)").astype(str)
    if test.empty or (test["tone_band"] == "(not measured)").all():
        why = "not measured: no test photo has a skin tone (data.skin_tone.measure is false, or no skin was found)"
        logger.info("Skin tone: %s", why)
        return pd.DataFrame(columns=COLUMNS), {}, {"skin_tone.check": why, "skin_tone.flagged": ""}
    test = test.merge(test_grades[["image", "true_grade", "pred_grade"]], on="image", how="left")
    gt = ground_truth[ground_truth.split == "test"]
    rng = np.random.default_rng(cfg.seed)
    common = {
        "n_classes": len(dataset.names),
        "threshold": operating_point["threshold"],
        "iou_threshold": p.iou_threshold,
        "n_resamples": cfg.bootstrap,
        "rng": rng,
    }
    overall = band_metrics(predictions, gt, test, **common)
    rows = []
    for band in [b for b in [*BAND_NAMES, "(not measured)"] if b in set(test["tone_band"])]:
        row = {"tone_band": band, **band_metrics(predictions, gt, test[test.tone_band == band], **common)}
        row["recall_gap"] = overall["recall"] - row["recall"]
        row["judged"] = band != "(not measured)" and row["photos"] >= cfg.min_photos
        row["flagged"] = bool(row["judged"] and row["recall_gap"] > cfg.recall_margin)
        rows.append(row)
    rows.append({"tone_band": "all", **overall, "recall_gap": 0.0, "judged": False, "flagged": False})
    table = pd.DataFrame(rows)[COLUMNS]
    flagged = table[table.flagged]
    for r in flagged.itertuples():
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
            overall["recall"],
            cfg.recall_margin,
        )
    unjudged = table[(~table.judged) & (table.tone_band != "all")]
    if len(unjudged):
        logger.info(
            "Skin tone: %s hold fewer than %d test photos: reported, not judged",
            ", ".join(f"{r.tone_band} ({r.photos})" for r in unjudged.itertuples()),
            cfg.min_photos,
        )
    check = (
        (
            "warning: "
            + "; ".join(
                f"{r.tone_band} recall {r.recall:.3f} is {r.recall_gap:.3f} below the overall {overall['recall']:.3f}"
                for r in flagged.itertuples()
            )
        )
        if len(flagged)
        else f"pass (no band with >= {cfg.min_photos} photos has recall more than "
        f"{cfg.recall_margin:.2f} below the overall)"
    )
    metrics = {}
    for r in table[table.tone_band != "all"].itertuples():
        key = r.tone_band.replace(" ", "_").strip("()")
        for name in METRIC_COLUMNS:
            value = getattr(r, name)
            if pd.notna(value):
                metrics[f"tone.{key}.{name}"] = float(value)
    metrics["tone.bands_flagged"] = float(len(flagged))
    return (
        table,
        to_mlflow_metrics(metrics),
        {"skin_tone.check": check, "skin_tone.flagged": ", ".join(flagged.tone_band)},
    )


def plot_skin_tone_metrics(table: pd.DataFrame, params: dict[str, Any]) -> Figure:
    """Recall, AP@50 and grading accuracy per tone band, with their 95 % intervals, the overall
    recall and the margin below it, and the photos behind each bar.

    Args:
        table: ``evaluate_by_skin_tone``'s table.
        params: the ``eval`` parameters (the margin and ``min_photos``).

    Returns:
        A three-panel figure (a note when no tone was measured).
    """
    cfg = parse("eval", params).skin_tone
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    bands = table[table.tone_band != "all"].reset_index(drop=True)
    if bands.empty:
        for ax in axes:
            ax.set_axis_off()
        axes[1].text(0.5, 0.5, "skin tone not measured", ha="center", va="center")
        return fig
    overall = table[table.tone_band == "all"].iloc[0]
    x = np.arange(len(bands))
    labels = [f"{b}\n{n} photos" for b, n in zip(bands.tone_band, bands.photos)]
    for ax, metric, title in zip(
        axes, ("recall", "ap50", "grade_accuracy"), ("recall at the operating point", "AP@50", "grading accuracy")
    ):
        values = bands[metric].astype(float)
        low = (values - bands[f"{metric}_low"].astype(float)).clip(lower=0).fillna(0)
        high = (bands[f"{metric}_high"].astype(float) - values).clip(lower=0).fillna(0)
        colors = ["#d03030" if f else ("#4070b0" if j else "#a0a0a0") for f, j in zip(bands.flagged, bands.judged)]
        ax.bar(x, values.fillna(0), yerr=[low, high], color=colors, capsize=4)
        if pd.notna(overall[metric]):
            ax.axhline(overall[metric], color="k", lw=1, label=f"all photos {overall[metric]:.3f}")
        if metric == "recall":
            ax.axhline(
                overall[metric] - cfg.recall_margin, color="k", lw=1, ls="--", label=f"margin -{cfg.recall_margin:.2f}"
            )
        ax.set_xticks(x, labels, fontsize=8)
        ax.set(title=title, ylim=(0, 1.05))
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"By skin tone (ITA band), 95 % bootstrap intervals over photos; grey: fewer than {cfg.min_photos} "
        "photos (not judged), red: flagged",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def skin_tone_lines(table: pd.DataFrame, check: dict[str, str]) -> str:
    """The skin tone section of ``results_summary.md``."""
    if table.empty:
        return f"## Skin tone\n\nSkin tone {check['skin_tone.check']}.\n\n"

    def cell(row: Any, metric: str) -> str:
        value = row[metric]
        if pd.isna(value):
            return "–"
        low, high = row[f"{metric}_low"], row[f"{metric}_high"]
        return f"{value:.3f} ({low:.2f}-{high:.2f})" if pd.notna(low) else f"{value:.3f}"

    lines = [
        "| skin tone (ITA band) | photos | lesions | AP@50 | recall | precision | grade accuracy | judged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        judged = (
            "**flagged**" if r.flagged else ("yes" if r.judged else ("–" if r.tone_band == "all" else "too few photos"))
        )
        lines.append(
            f"| {r.tone_band} | {r.photos} | {r.lesions} | {cell(r, 'ap50')} | {cell(r, 'recall')} | "
            f"{cell(r, 'precision')} | {cell(r, 'grade_accuracy')} | {judged} |"
        )
    return (
        "## Skin tone\n\n" + "\n".join(lines) + "\n\n"
        "95 % bootstrap intervals over photos in brackets; recall and precision at the operating point. "
        f"Check: {check['skin_tone.check']}.\n\n"
    )
