"""Metrics against hand-checked values and against pycocotools' own summary."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from acne_detection.metrics import (
    box_iou, coco_average_precision, confusion_counts, f1_score, match_detections, precision_recall_f1,
)

COLS = ["image", "class_id", "x_min", "y_min", "x_max", "y_max"]


def test_guide_worked_examples() -> None:
    assert box_iou([[10, 10, 50, 50]], [[20, 20, 60, 60]])[0, 0] == pytest.approx(0.391, abs=5e-4)
    assert f1_score(0.95, 0.50) == pytest.approx(0.655, abs=5e-4)
    assert [round(-math.log(p), 3) for p in (0.95, 0.55, 0.05)] == [0.051, 0.598, 2.996]  # BCE, y = 1


def test_45_5_5_45_gives_precision_and_recall_of_090() -> None:
    # 50 lesions: 45 found (TP), 5 missed (FN); 5 false alarms (FP) on empty skin.
    gt = pd.DataFrame([(f"im{i}", 0, 0, 0, 10, 10) for i in range(50)], columns=COLS)
    hits = [(f"im{i}", 0, 0.9, 0, 0, 10, 10) for i in range(45)]
    alarms = [(f"im{i}", 0, 0.8, 50, 50, 60, 60) for i in range(5)]
    preds = pd.DataFrame(hits + alarms, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    row = precision_recall_f1(match_detections(preds, gt, iou_threshold=0.5), n_classes=1).iloc[0]
    assert (row.tp, row.fp, row.fn) == (45, 5, 5)
    assert (row.precision, row.recall) == pytest.approx((0.90, 0.90))
    assert row.mean_iou == pytest.approx(1.0)


def test_confusion_matrix_has_background_row_and_column() -> None:
    gt = pd.DataFrame([("a", 0, 0, 0, 10, 10), ("a", 1, 20, 20, 30, 30), ("b", 1, 0, 0, 10, 10)], columns=COLS)
    preds = pd.DataFrame(
        [("a", 1, 0.9, 0, 0, 10, 10),  # comedone called papule
         ("a", 1, 0.8, 20, 20, 30, 30),  # right
         ("b", 0, 0.7, 40, 40, 50, 50)],  # a false alarm, and b's papule is missed
        columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    cm = confusion_counts(match_detections(preds, gt, iou_threshold=0.5, class_aware=False), n_classes=2)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 0]]


def _random_detections(n_images: int, n_classes: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    gt_rows, dt_rows = [], []
    for i in range(n_images):
        image = f"img{i}"
        n_gt = 0 if rng.random() < 0.1 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(4, 120, 2)
            c = int(rng.integers(n_classes))
            gt_rows.append((image, c, x, y, x + w, y + h))
            if rng.random() < 0.8:  # a detection near it, sometimes of the wrong class
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() < 0.85 else int(rng.integers(n_classes))
                dt_rows.append((image, cls, float(rng.uniform(0.05, 1)), x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]))
        if rng.random() < 0.1:
            continue  # an image with no detection at all
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            x, y = rng.uniform(0, 500, 2)
            dt_rows.append((image, int(rng.integers(n_classes)), float(rng.uniform(0, 0.6)), x, y, x + 30, y + 30))
    gt = pd.DataFrame(gt_rows, columns=COLS)
    dt = pd.DataFrame(dt_rows, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    return gt, dt


def _pycocotools_summary(gt: pd.DataFrame, dt: pd.DataFrame, images: list[str], n_classes: int) -> np.ndarray:
    ids = {name: i for i, name in enumerate(images, 1)}
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": c} for c in range(n_classes)],
        "annotations": [{"id": k, "image_id": ids[r.image], "category_id": int(r.class_id), "iscrowd": 0,
                         "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min],
                         "area": (r.x_max - r.x_min) * (r.y_max - r.y_min)} for k, r in enumerate(gt.itertuples(), 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes([{"image_id": ids[r.image], "category_id": int(r.class_id), "score": r.confidence,
                              "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min]} for r in dt.itertuples()])
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ap_matches_pycocotools_summary_on_1000_random_images() -> None:
    gt, dt = _random_detections(1000, n_classes=6, seed=0)
    images = [f"img{i}" for i in range(1000)]
    ours = coco_average_precision(dt, gt, images=images, n_classes=6)
    stats = _pycocotools_summary(gt, dt, images, 6)
    assert ours.ap50_95.mean() == pytest.approx(stats[0], abs=0.005)
    assert ours.ap50.mean() == pytest.approx(stats[1], abs=0.005)
    assert ours.ap75.mean() == pytest.approx(stats[2], abs=0.005)
    assert 0.2 < stats[1] < 0.95  # a set with real errors, so the comparison can fail


def test_ap_of_perfect_and_of_no_detections() -> None:
    gt, _ = _random_detections(50, n_classes=2, seed=1)
    perfect = gt.assign(confidence=0.9)
    images = [f"img{i}" for i in range(50)]
    assert coco_average_precision(perfect, gt, images=images, n_classes=2).ap50.tolist() == pytest.approx([1.0, 1.0])
    empty = perfect.iloc[:0]
    assert coco_average_precision(empty, gt, images=images, n_classes=2).ap50.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_ap_matches_pycocotools_per_class_on_1000_random_images(seed: int) -> None:
    from acne_detection.metrics import fast_average_precision

    gt, dt = _random_detections(1000, n_classes=6, seed=seed)
    images = [f"img{i}" for i in range(1000)]
    reference = coco_average_precision(dt, gt, images=images, n_classes=6)
    fast = fast_average_precision(dt, gt, n_classes=6)
    for column in ("ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large"):
        assert fast[column].to_numpy() == pytest.approx(reference[column].to_numpy(), abs=0.005, nan_ok=True), column
    stats = _pycocotools_summary(gt, dt, images, 6)
    assert fast.ap50_95.mean() == pytest.approx(stats[0], abs=0.005)


def test_fast_ap_on_the_hand_checked_cases() -> None:
    from acne_detection.metrics import fast_average_precision

    gt, _ = _random_detections(50, n_classes=2, seed=1)
    perfect = gt.assign(confidence=0.9)
    assert fast_average_precision(perfect, gt, n_classes=2).ap50.tolist() == pytest.approx([1.0, 1.0])
    assert fast_average_precision(perfect.iloc[:0], gt, n_classes=2).ap50.tolist() == [0.0, 0.0]
    one = pd.DataFrame([("a", 0, 10, 10, 50, 50)], columns=COLS)
    shifted = pd.DataFrame([("a", 0, 0.9, 20, 20, 60, 60)], columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    assert fast_average_precision(shifted, one, n_classes=1).ap50.item() == 0.0  # IoU 0.391 < 0.5


def _greedy_reference(dt: pd.DataFrame, gt: pd.DataFrame, threshold: float) -> tuple[int, int, int]:
    """Plain-loop greedy matching, class-aware: the obvious, slow way (TP, FP, FN)."""
    tp = fp = 0
    matched = set()
    for _, d in dt.sort_values("confidence", ascending=False, kind="mergesort").iterrows():
        best, best_iou = None, threshold
        for j, g in gt[(gt.image == d.image) & (gt.class_id == d.class_id)].iterrows():
            iou = box_iou([[d.x_min, d.y_min, d.x_max, d.y_max]], [[g.x_min, g.y_min, g.x_max, g.y_max]])[0, 0]
            if j not in matched and iou >= best_iou and (best is None or iou > best_iou):
                best, best_iou = j, iou
        if best is None:
            fp += 1
        else:
            matched.add(best)
            tp += 1
    return tp, fp, len(gt) - tp


def test_batched_matching_equals_a_plain_greedy_loop() -> None:
    gt, dt = _random_detections(150, n_classes=3, seed=4)
    rows = precision_recall_f1(match_detections(dt, gt, iou_threshold=0.5), n_classes=3)
    assert tuple(int(rows[c].sum()) for c in ("tp", "fp", "fn")) == _greedy_reference(dt, gt, 0.5)
