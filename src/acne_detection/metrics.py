"""Detection metrics computed from tables: predictions and ground truth, one box per row.

Both tables carry ``image``, ``class_id`` and ``x_min``, ``y_min``, ``x_max``, ``y_max`` in
pixels; predictions add ``confidence``. COCO-standard AP comes from pycocotools (the field's
reference implementation); matching at a fixed threshold follows the same greedy rule.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

_CORNERS = ["x_min", "y_min", "x_max", "y_max"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes.

    Args:
        a: (N, 4) boxes as x_min, y_min, x_max, y_max.
        b: (M, 4) boxes, same layout.

    Returns:
        An (N, M) array of IoU values in [0, 1].
    """
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def coco_average_precision(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, *, images: list[str], n_classes: int, max_dets: int = 100
) -> pd.DataFrame:
    """COCO AP per class with pycocotools' ``COCOeval`` (101-point interpolation, area "all").

    Args:
        predictions: predicted boxes with ``confidence``.
        ground_truth: true boxes.
        images: every evaluated image, including those with no box or no prediction.
        n_classes: number of classes; ids are ``0..n_classes-1``.
        max_dets: detections kept per image, highest confidence first.

    Returns:
        One row per class id with ``ap50``, ``ap75``, ``ap50_95`` (NaN for a class with no
        ground truth), plus ``ap_small``, ``ap_medium``, ``ap_large``.
    """
    image_id = {name: i + 1 for i, name in enumerate(images)}

    def _xywh(df: pd.DataFrame) -> np.ndarray:
        c = df[_CORNERS].to_numpy(float)
        return np.column_stack([c[:, 0], c[:, 1], c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]])

    gt_boxes = _xywh(ground_truth)
    gt = {
        "images": [{"id": i} for i in image_id.values()],
        "categories": [{"id": k + 1} for k in range(n_classes)],
        "annotations": [
            {"id": n + 1, "image_id": image_id[img], "category_id": int(cls) + 1, "bbox": list(map(float, box)),
             "area": float(box[2] * box[3]), "iscrowd": 0}
            for n, (img, cls, box) in enumerate(zip(ground_truth["image"], ground_truth["class_id"], gt_boxes))
        ],
    }
    dt = [
        {"image_id": image_id[img], "category_id": int(cls) + 1, "bbox": list(map(float, box)), "score": float(s)}
        for img, cls, box, s in zip(predictions["image"], predictions["class_id"], _xywh(predictions), predictions["confidence"])
    ]
    rows = pd.DataFrame({"class_id": range(n_classes)})
    columns = ["ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large"]
    if not dt or not gt["annotations"]:
        return rows.assign(**{c: 0.0 if dt or gt["annotations"] else np.nan for c in columns})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]

    def _ap(p: np.ndarray) -> np.ndarray:
        valid = p > -1
        return np.where(valid.any(axis=(0, 1)), np.where(valid, p, 0).sum(axis=(0, 1)) / np.maximum(valid.sum(axis=(0, 1)), 1), np.nan)

    rows["ap50"] = _ap(precision[[0], :, :, 0, -1])
    rows["ap75"] = _ap(precision[[5], :, :, 0, -1])
    rows["ap50_95"] = _ap(precision[:, :, :, 0, -1])
    for area, name in ((1, "ap_small"), (2, "ap_medium"), (3, "ap_large")):
        rows[name] = _ap(precision[:, :, :, area, -1])
    return rows


def match_detections(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, *, iou_threshold: float, class_aware: bool = True
) -> pd.DataFrame:
    """Greedily match predictions to ground truth, highest confidence first, per image.

    Args:
        predictions: predicted boxes with ``confidence`` (already thresholded).
        ground_truth: true boxes.
        iou_threshold: the least IoU that counts as a match.
        class_aware: only match boxes of the same class (True for precision/recall; False to
            fill a confusion matrix, where a match of another class is a confusion).

    Returns:
        One row per pair and per unmatched box: ``image``, ``true_class`` (-1: none, a false
        alarm), ``pred_class`` (-1: none, a missed lesion), ``iou``, ``confidence``.
    """
    rows: list[tuple] = []
    preds = predictions.sort_values("confidence", ascending=False, kind="stable")
    pred_groups = dict(tuple(preds.groupby("image", sort=False)))
    for image in sorted(set(ground_truth["image"]) | set(pred_groups)):
        p = pred_groups.get(image, preds.iloc[:0])
        g = ground_truth[ground_truth["image"] == image]
        iou = box_iou(p[_CORNERS].to_numpy(), g[_CORNERS].to_numpy())
        if class_aware:
            iou = np.where(p["class_id"].to_numpy()[:, None] == g["class_id"].to_numpy()[None, :], iou, 0.0)
        taken = np.zeros(len(g), bool)
        for i, (cls, conf) in enumerate(zip(p["class_id"], p["confidence"])):
            candidates = np.where(taken, -1.0, iou[i]) if len(g) else np.array([])
            j = int(candidates.argmax()) if len(g) else -1
            if j >= 0 and candidates[j] >= iou_threshold:
                taken[j] = True
                rows.append((image, int(g["class_id"].iloc[j]), int(cls), float(candidates[j]), float(conf)))
            else:
                rows.append((image, -1, int(cls), 0.0, float(conf)))
        rows.extend((image, int(c), -1, 0.0, np.nan) for c in g["class_id"].to_numpy()[~taken])
    return pd.DataFrame(rows, columns=["image", "true_class", "pred_class", "iou", "confidence"])


def precision_recall_f1(matches: pd.DataFrame, *, n_classes: int) -> pd.DataFrame:
    """Precision, recall, F1 and mean IoU of true positives per class, from class-aware matches.

    Args:
        matches: ``match_detections(..., class_aware=True)``.
        n_classes: number of classes.

    Returns:
        One row per class id: ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``,
        ``mean_iou``.
    """
    tp_rows = matches[(matches.true_class >= 0) & (matches.pred_class >= 0)]
    out = pd.DataFrame({"class_id": range(n_classes)})
    out["tp"] = out.class_id.map(tp_rows.groupby("true_class").size()).fillna(0).astype(int)
    out["fp"] = out.class_id.map(matches[matches.true_class < 0].groupby("pred_class").size()).fillna(0).astype(int)
    out["fn"] = out.class_id.map(matches[matches.pred_class < 0].groupby("true_class").size()).fillna(0).astype(int)
    out["precision"] = out.tp / (out.tp + out.fp).where(lambda s: s > 0)
    out["recall"] = out.tp / (out.tp + out.fn).where(lambda s: s > 0)
    out["f1"] = [f1_score(p, r) if pd.notna(p) and pd.notna(r) else np.nan for p, r in zip(out.precision, out.recall)]
    out["mean_iou"] = out.class_id.map(tp_rows.groupby("true_class")["iou"].mean())
    return out


def confusion_counts(matches: pd.DataFrame, *, n_classes: int) -> np.ndarray:
    """Detection confusion matrix from class-agnostic matches.

    Args:
        matches: ``match_detections(..., class_aware=False)``.
        n_classes: number of classes.

    Returns:
        An (n_classes + 1, n_classes + 1) integer array: rows are true classes, columns
        predicted ones; the last row and column are "background" (false alarms in the last
        row, missed lesions in the last column).
    """
    cm = np.zeros((n_classes + 1, n_classes + 1), dtype=int)
    t = np.where(matches.true_class < 0, n_classes, matches.true_class)
    p = np.where(matches.pred_class < 0, n_classes, matches.pred_class)
    np.add.at(cm, (t, p), 1)
    return cm


def threshold_sweep(matches: pd.DataFrame, n_true: pd.Series, thresholds: np.ndarray) -> pd.DataFrame:
    """Precision, recall and F1 at each confidence threshold, from one matching.

    Greedy matching takes predictions highest confidence first, so the matches among the
    predictions above a threshold are the same whether or not lower ones exist: matching
    once at the lowest confidence and then cutting gives every threshold exactly.

    Args:
        matches: ``match_detections(..., class_aware=True)`` over all kept predictions.
        n_true: number of true boxes per class id (index: class id).
        thresholds: the confidence thresholds, ascending.

    Returns:
        One row per threshold and class id, plus class id -1 for all classes together:
        ``threshold``, ``class_id``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``.
    """
    preds = matches[matches.pred_class >= 0]
    rows = []
    for cls in [*n_true.index, -1]:
        mine = preds if cls == -1 else preds[preds.pred_class == cls]
        truth = int(n_true.sum()) if cls == -1 else int(n_true.get(cls, 0))
        conf = mine.confidence.to_numpy()
        hit = (mine.true_class >= 0).to_numpy()
        for t in thresholds:
            above = conf >= t
            tp, fp = int((hit & above).sum()), int((~hit & above).sum())
            precision = tp / (tp + fp) if tp + fp else np.nan
            recall = tp / truth if truth else np.nan
            f1 = f1_score(precision, recall) if pd.notna(precision) and pd.notna(recall) else np.nan
            rows.append((float(t), int(cls), tp, fp, truth - tp, precision, recall, f1))
    return pd.DataFrame(rows, columns=["threshold", "class_id", "tp", "fp", "fn", "precision", "recall", "f1"])
