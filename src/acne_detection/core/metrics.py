"""Detection metrics computed from tables: predictions and ground truth, one box per row.

Both tables carry ``image``, ``class_id`` and ``x_min``, ``y_min``, ``x_max``, ``y_max`` in
pixels; predictions add ``confidence``. COCO-standard AP comes from faster-coco-eval, a
maintained C++ reimplementation of pycocotools' ``COCOeval`` that matches it to machine
precision, even on tied scores and IoUs (tested to 1e-9; pycocotools stays the reference).
Matching for precision/recall, the threshold sweep and the confusion matrix is this module's
own: batched COCO-rule greedy matching, which neither library exposes as a table.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd

_CORNERS = ["x_min", "y_min", "x_max", "y_max"]


# Cells of the largest array a matching or bootstrap step holds at once (box pairs of a block of
# photos; resamples x detections): ~16 MB per float array, a few hundred MB at the step's peak.
MATCH_BLOCK_PAIRS = 2_000_000


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes, batched over leading dimensions.

    Args:
        a: (..., N, 4) boxes as x_min, y_min, x_max, y_max.
        b: (..., M, 4) boxes, same layout (leading dimensions broadcast with ``a``'s).

    Returns:
        An (..., N, M) array of IoU values in [0, 1] (0 where the union is empty).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim == 1 or b.ndim == 1:
        a, b = a.reshape(-1, 4), b.reshape(-1, 4)
    lt = np.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = np.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=-1)
    union = _area(a)[..., :, None] + _area(b)[..., None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    """Area of (..., 4) corner boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (0 when both are 0)."""
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _coco_dicts(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, images: list[str], n_classes: int
) -> tuple[dict, list[dict]]:
    """The tables as COCO dicts: ground truth (``images``, ``annotations``, ``categories``) and
    detections; image and category ids start at 1, as COCO's tools expect."""
    image_id = {name: i + 1 for i, name in enumerate(images)}

    def _xywh(df: pd.DataFrame) -> np.ndarray:
        c = df[_CORNERS].to_numpy(float)
        return np.column_stack([c[:, 0], c[:, 1], c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]])

    gt = {
        "images": [{"id": i} for i in image_id.values()],
        "categories": [{"id": k + 1} for k in range(n_classes)],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id[img],
                "category_id": int(cls) + 1,
                "bbox": list(map(float, box)),
                "area": float(box[2] * box[3]),
                "iscrowd": 0,
            }
            for n, (img, cls, box) in enumerate(
                zip(ground_truth["image"], ground_truth["class_id"], _xywh(ground_truth))
            )
        ],
    }
    dt = [
        {"image_id": image_id[img], "category_id": int(cls) + 1, "bbox": list(map(float, box)), "score": float(s)}
        for img, cls, box, s in zip(
            predictions["image"], predictions["class_id"], _xywh(predictions), predictions["confidence"]
        )
    ]
    return gt, dt


def _ap_table(precision: np.ndarray, n_classes: int) -> pd.DataFrame:
    """Per-class AP from COCOeval's accumulated ``precision`` array
    ([IoU thresholds, recall points, classes, areas, max dets]; -1 where a class has no ground truth)."""

    def _ap(p: np.ndarray) -> np.ndarray:
        valid = p > -1
        return np.where(
            valid.any(axis=(0, 1)),
            np.where(valid, p, 0).sum(axis=(0, 1)) / np.maximum(valid.sum(axis=(0, 1)), 1),
            np.nan,
        )

    rows = pd.DataFrame({"class_id": range(n_classes)})
    rows["ap50"] = _ap(precision[[0], :, :, 0, -1])
    rows["ap75"] = _ap(precision[[5], :, :, 0, -1])
    rows["ap50_95"] = _ap(precision[:, :, :, 0, -1])
    for area, name in ((1, "ap_small"), (2, "ap_medium"), (3, "ap_large")):
        rows[name] = _ap(precision[:, :, :, area, -1])
    return rows


def _ap_without_detections(ground_truth: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """AP when nothing was detected: 0 for each class (and area range) with ground truth, else NaN."""
    area = (ground_truth.x_max - ground_truth.x_min) * (ground_truth.y_max - ground_truth.y_min)
    rows = pd.DataFrame({"class_id": range(n_classes)})
    for names, (lo, hi) in (
        (("ap50", "ap75", "ap50_95"), COCO_AREAS["all"]),
        (("ap_small",), COCO_AREAS["small"]),
        (("ap_medium",), COCO_AREAS["medium"]),
        (("ap_large",), COCO_AREAS["large"]),
    ):
        present = rows.class_id.isin(ground_truth.class_id[(area >= lo) & (area <= hi)].astype(int))
        for name in names:
            rows[name] = np.where(present, 0.0, np.nan)
    return rows


def average_precision(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    *,
    images: list[str],
    n_classes: int,
    max_dets: int = 100,
    reference: bool = False,
) -> pd.DataFrame:
    """COCO AP per class, by faster-coco-eval (or pycocotools' ``COCOeval`` with ``reference``).

    Args:
        predictions: predicted boxes with ``confidence``.
        ground_truth: true boxes.
        images: every evaluated image, including those with no box or no prediction.
        n_classes: number of classes; ids are ``0..n_classes-1``.
        max_dets: detections kept per image and class, highest confidence first.
        reference: compute with pycocotools itself (slower; the tests' reference).

    Returns:
        One row per class id: ``ap50``, ``ap75``, ``ap50_95`` (area "all") and ``ap_small``,
        ``ap_medium``, ``ap_large`` (AP@50-95 within COCO's area ranges); NaN where the class (or
        the range) has no ground truth, 0 where it has ground truth and no detection.
    """
    images = list(dict.fromkeys([*images, *ground_truth["image"], *predictions["image"]]))
    gt, dt = _coco_dicts(predictions, ground_truth, images, n_classes)
    if not dt or not gt["annotations"]:  # both tools refuse an empty side, and the answer is known
        return _ap_without_detections(ground_truth.iloc[:0] if dt else ground_truth, n_classes)
    if reference:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
            evaluator.params.maxDets = [1, 10, max_dets]
            evaluator.evaluate()
            evaluator.accumulate()
    else:
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(gt)
        evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(dt), "bbox", print_function=lambda *a, **k: None)
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
    return _ap_table(np.asarray(evaluator.eval["precision"]), n_classes)


def resampled_ap(
    hit: np.ndarray, confidence: np.ndarray, det_photo: np.ndarray, true_per_photo: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """AP of one class at one IoU threshold under many reweightings of the photos: a bootstrap's AP.

    faster-coco-eval computes AP for one set of images; a bootstrap over photos needs it for a
    thousand resamples, and calling it a thousand times per skin tone band would cost minutes.
    Matching is per photo, so it does not change when photos are resampled: this takes the
    matches once (``match_detections`` at the IoU threshold, at most ``max_dets`` detections per
    photo and class, as COCO keeps) and applies COCOeval's accumulation to each resample, every
    photo's detections and true boxes counted as often as the resample draws it: detections by
    descending score, precision made non-increasing, read at 101 recall points. With every
    weight 1 it equals faster-coco-eval's AP (tested against it).

    Args:
        hit: (D,) whether each detection matched a true box.
        confidence: (D,) the detections' scores.
        det_photo: (D,) each detection's photo, an index into ``true_per_photo``.
        true_per_photo: (P,) true boxes of the class in each photo.
        weights: (B, P) how many times each resample counts each photo.

    Returns:
        (B,) AP per resample; NaN where a resample holds no true box.
    """
    weights = np.atleast_2d(np.asarray(weights, float))
    n_true = weights @ np.asarray(true_per_photo, float)
    order = np.argsort(-np.asarray(confidence, float), kind="mergesort")
    hit, photo = np.asarray(hit, bool)[order], np.asarray(det_photo, int)[order]
    ap = np.full(len(weights), np.nan)
    if not len(hit):
        ap[n_true > 0] = 0.0
        return ap
    points = np.linspace(0.0, 1.0, 101)
    # Resamples are independent: a block of them at a time keeps the (resamples x detections)
    # arrays near MATCH_BLOCK_PAIRS cells (a thousand resamples of 100,000 detections held at
    # once took gigabytes); the result is the same.
    rows = max(1, MATCH_BLOCK_PAIRS // len(hit))
    for start in range(0, len(weights), rows):
        block = slice(start, start + rows)
        w = weights[block][:, photo]
        tp, fp = np.cumsum(w * hit, axis=1), np.cumsum(w * ~hit, axis=1)
        recall = tp / np.where(n_true[block] > 0, n_true[block], 1)[:, None]
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        for i in np.flatnonzero(n_true[block] > 0):
            at = np.searchsorted(recall[i], points, side="left")
            ap[start + i] = np.where(at < len(hit), precision[i, np.minimum(at, len(hit) - 1)], 0.0).mean()
    return ap


def top_per_photo(predictions: pd.DataFrame, max_dets: int) -> pd.DataFrame:
    """The ``max_dets`` most confident predictions of each image and class (what COCO AP keeps)."""
    ranked = predictions.sort_values("confidence", ascending=False, kind="mergesort")
    return ranked[ranked.groupby(["image", "class_id"]).cumcount() < max_dets]


def match_detections(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, *, iou_threshold: float, class_aware: bool = True
) -> pd.DataFrame:
    """Greedily match predictions to ground truth, highest confidence first, per image.

    Each prediction takes the free true box of highest IoU at or above ``iou_threshold``
    (COCO's rule, batched over images by ``_coco_matches``).

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
    columns = ["image", "true_class", "pred_class", "iou", "confidence"]
    preds = predictions.sort_values("confidence", ascending=False, kind="mergesort")
    key = ["class_id", "image"] if class_aware else ["image"]
    keys = pd.concat([preds[key], ground_truth[key]]).drop_duplicates()
    if keys.empty:
        return pd.DataFrame(columns=columns)
    index = pd.MultiIndex.from_frame(keys)
    det_group = index.get_indexer(pd.MultiIndex.from_frame(preds[key]))
    gt_group = index.get_indexer(pd.MultiIndex.from_frame(ground_truth[key]))
    det_true, det_iou = np.full(len(preds), -1), np.zeros(len(preds))
    gt_taken = np.zeros(len(ground_truth), bool)
    gt_class_all = ground_truth["class_id"].to_numpy(int)
    # Groups are matched independently, so blocks of groups give the same result as all at once;
    # a block's padded (groups x detections x true boxes) arrays stay near MATCH_BLOCK_PAIRS, so
    # a test split of thousands of photos at 300 boxes each no longer needs gigabytes at once.
    for low, high in _group_blocks(det_group, gt_group, len(keys)):
        d_rows = np.flatnonzero((det_group >= low) & (det_group < high))
        g_rows = np.flatnonzero((gt_group >= low) & (gt_group < high))
        d_group, g_group = det_group[d_rows] - low, gt_group[g_rows] - low  # group number inside the block
        det, det_valid, det_rank = _padded(preds.iloc[d_rows], d_group, high - low)
        gt, gt_valid, gt_rank = _padded(ground_truth.iloc[g_rows], g_group, high - low)
        gt_class = np.full(gt_valid.shape, -1)
        gt_class[g_group, gt_rank] = gt_class_all[g_rows]
        _, _, match, iou = _coco_matches(
            det, gt, det_valid, gt_valid, np.array([[0.0, np.inf]]), np.array([iou_threshold])
        )
        g = match[d_group, 0, 0, det_rank]
        hit = g >= 0
        det_true[d_rows] = np.where(hit, gt_class[d_group, np.maximum(g, 0)], -1)
        det_iou[d_rows] = np.where(hit, iou[d_group, det_rank, np.maximum(g, 0)], 0.0)
        taken = np.zeros(gt_valid.shape, bool)
        taken[d_group[hit], g[hit]] = True
        gt_taken[g_rows] = taken[g_group, gt_rank]
    found = pd.DataFrame(
        {
            "image": preds["image"].to_numpy(),
            "true_class": det_true,
            "pred_class": preds["class_id"].to_numpy(int),
            "iou": det_iou,
            "confidence": preds["confidence"].to_numpy(float),
        }
    )
    missed = ~gt_taken
    lost = pd.DataFrame(
        {
            "image": ground_truth["image"].to_numpy()[missed],
            "true_class": gt_class_all[missed],
            "pred_class": -1,
            "iou": 0.0,
            "confidence": np.nan,
        }
    )
    return pd.concat([found, lost], ignore_index=True)[columns]


def _group_blocks(det_group: np.ndarray, gt_group: np.ndarray, n_groups: int) -> list[tuple[int, int]]:
    """Consecutive groups in blocks whose padded pair count stays near ``MATCH_BLOCK_PAIRS``
    (a single group larger than that is a block of its own): each block's ``(first, past last)``."""
    n_det = np.bincount(det_group, minlength=n_groups)
    n_gt = np.bincount(gt_group, minlength=n_groups)
    bounds, start, d_max, g_max = [], 0, 0, 0
    for group in range(n_groups):
        d_next, g_next = max(d_max, n_det[group], 1), max(g_max, n_gt[group], 1)
        if group > start and (group - start + 1) * d_next * g_next > MATCH_BLOCK_PAIRS:
            bounds.append((start, group))
            start, d_next, g_next = group, max(n_det[group], 1), max(n_gt[group], 1)
        d_max, g_max = d_next, g_next
    bounds.append((start, n_groups))
    return bounds


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


# the confidence thresholds eval (and the sweep, on validation) tries for the operating point
SWEEP_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def mean_average_precision(
    predictions: pd.DataFrame, ground_truth: pd.DataFrame, *, images: list[str], n_classes: int
) -> tuple[float, float]:
    """mAP@50 and mAP@50-95: ``average_precision``'s, averaged over the classes with ground truth
    (NaN where none has any): how the sweep and eval's NMS choice compare on validation."""
    ap = average_precision(predictions, ground_truth, images=images, n_classes=n_classes)
    return float(ap.ap50.mean()), float(ap.ap50_95.mean())


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


COCO_IOUS = np.linspace(0.5, 0.95, 10)
COCO_AREAS = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}


def _coco_matches(
    det: np.ndarray,
    gt: np.ndarray,
    det_valid: np.ndarray,
    gt_valid: np.ndarray,
    areas: np.ndarray,
    thresholds: np.ndarray = COCO_IOUS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCO's greedy matching for a batch of (image, class) groups, all thresholds and areas at once.

    As in pycocotools' ``evaluateImg``: ground truth outside an area range is "ignored";
    each detection, highest score first, takes the free non-ignored ground truth of highest
    IoU at or above the threshold, else the best ignored one; detections matched to ignored
    ground truth, and unmatched detections outside the area range, are ignored.

    Args:
        det: (N, D, 4) detections per group, highest score first, padded.
        gt: (N, G, 4) ground truth per group, padded.
        det_valid: (N, D) which detections are real.
        gt_valid: (N, G) which ground-truth boxes are real.
        areas: (A, 2) area ranges, inclusive.
        thresholds: (T,) IoU thresholds (COCO's ten by default).

    Returns:
        Two (N, A, T, D) boolean arrays, true positive and ignored; the (N, A, T, D) index of
        the matched ground truth (-1: none); and the (N, D, G) IoU matrix.
    """
    n, d_max, g_max = det.shape[0], det.shape[1], gt.shape[1]
    det_area, gt_area = _area(det), _area(gt)
    # -1 for padding, so a padded box never reaches a threshold; an empty union is not a match either
    iou = np.where(det_valid[:, :, None] & gt_valid[:, None, :], box_iou(det, gt), -1.0)
    lo, hi = areas[None, :, 0, None], areas[None, :, 1, None]
    gt_ign = ((gt_area[:, None, :] < lo) | (gt_area[:, None, :] > hi))[:, :, None, :]  # (N, A, 1, G)
    det_out = (det_area[:, None, :] < lo) | (det_area[:, None, :] > hi)  # (N, A, D)
    n_t = len(thresholds)
    thresholds = np.minimum(thresholds, 1 - 1e-10)[None, None, :, None]
    free = np.broadcast_to(gt_valid[:, None, None, :], (n, len(areas), n_t, g_max)).copy()
    tp = np.zeros((n, len(areas), n_t, d_max), bool)
    ignored = np.zeros_like(tp)
    match = np.full(tp.shape, -1)
    columns = np.arange(g_max)
    for d in range(d_max):
        row = iou[:, d, :][:, None, None, :]
        ok = free & (row >= thresholds)
        preferred = ok & ~gt_ign
        pool = np.where(preferred.any(axis=-1, keepdims=True), preferred, ok)
        g = np.where(pool, row, -1.0).argmax(axis=-1)
        matched = np.take_along_axis(pool, g[..., None], axis=-1)[..., 0] & det_valid[:, d, None, None]
        free &= ~((columns == g[..., None]) & matched[..., None])
        g_ign = np.take_along_axis(np.broadcast_to(gt_ign, free.shape), g[..., None], axis=-1)[..., 0]
        tp[..., d] = matched & ~g_ign
        ignored[..., d] = np.where(matched, g_ign, det_out[:, :, d, None])
        match[..., d] = np.where(matched, g, -1)
    return tp, ignored, match, iou


def _padded(df: pd.DataFrame, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scatter rows into (n, K, 4) boxes by group, in row order; with a validity mask and rank."""
    rank = pd.Series(group).groupby(group).cumcount().to_numpy()
    k = int(rank.max()) + 1 if len(rank) else 1
    boxes, valid = np.zeros((n, k, 4)), np.zeros((n, k), bool)
    boxes[group, rank] = df[_CORNERS].to_numpy(float)
    valid[group, rank] = True
    return boxes, valid, rank


def pick_operating_point(overall: pd.DataFrame, rule: str, recall_target: float) -> pd.Series:
    """The row of a threshold sweep to ship, by a rule.

    ``max_f1`` takes the threshold of highest F1; ``recall_target`` the highest threshold whose
    recall still reaches the target (the medical choice: a missed lesion costs more than a false
    alarm), or the lowest threshold if none does (``reached`` is then false).

    Args:
        overall: ``threshold_sweep``'s rows of one class (or of all, class id -1), thresholds ascending.
        rule: ``max_f1`` or ``recall_target``.
        recall_target: the recall the ``recall_target`` rule keeps.

    Returns:
        The chosen row, with a boolean ``reached``.
    """
    overall = overall.reset_index(drop=True)
    if rule == "max_f1":
        return pd.concat([overall.loc[overall.f1.fillna(-1).idxmax()], pd.Series({"reached": True})])
    reaching = overall[overall.recall >= recall_target]
    row = reaching.iloc[-1] if len(reaching) else overall.iloc[0]
    return pd.concat([row, pd.Series({"reached": bool(len(reaching))})])
