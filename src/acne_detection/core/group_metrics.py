"""Detection and grading metrics of one group of photos (a skin tone band, a clinic, a camera),
each with a 95 % interval from a seeded bootstrap over the group's photos: photos, not lesions,
are the independent units (lesions on one face share its lighting and skin), so a small group
gets the wide interval it deserves. Where photos are copies of one source photo (a Roboflow
export holds three of each), the source is the unit: a resample draws a source with all its copies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from acne_detection.core.grading import source_keys
from acne_detection.core.metrics import average_precision, match_detections, resampled_ap, top_per_photo


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
    each with a bootstrap 95 % interval over the photos (over their source photos, where some are copies).

    Args:
        predictions: predicted boxes (``image``, ``class_id``, corners, ``confidence``).
        ground_truth: true boxes (``image``, ``class_id``, corners).
        photos: the photos (``image``; ``true_grade`` and ``pred_grade`` where graded; ``source``,
            the source photo each is a copy of, where known: the bootstrap resamples sources).
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
    units, unit_of = np.unique(source_keys(photos.get("source"), len(images)), return_inverse=True)
    if len(units) < len(images):  # copies of one source photo are drawn together
        w = _resample_weights(len(units), n_resamples, rng)[:, unit_of]
    else:
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
