"""Metrics against hand-checked values and against pycocotools' own summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from acne_detection.core import metrics
from acne_detection.core.metrics import (
    average_precision,
    box_iou,
    confusion_counts,
    f1_score,
    match_detections,
    precision_recall_f1,
)
from acne_detection.testing import pycocotools_summary, random_detections

COLS = ["image", "class_id", "x_min", "y_min", "x_max", "y_max"]


def test_guide_worked_examples() -> None:
    assert box_iou([[10, 10, 50, 50]], [[20, 20, 60, 60]])[0, 0] == pytest.approx(0.391, abs=5e-4)
    assert f1_score(0.95, 0.50) == pytest.approx(0.655, abs=5e-4)
    assert f1_score(0.0, 0.0) == 0.0


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
        [
            ("a", 1, 0.9, 0, 0, 10, 10),  # comedone called papule
            ("a", 1, 0.8, 20, 20, 30, 30),  # right
            ("b", 0, 0.7, 40, 40, 50, 50),
        ],  # a false alarm, and b's papule is missed
        columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"],
    )
    cm = confusion_counts(match_detections(preds, gt, iou_threshold=0.5, class_aware=False), n_classes=2)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 1], [1, 0, 0]]


def _crowded_tied_detections(n_images: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Like a real detector's output at min_conf 0.001: dense, overlapping, many exact ties.

    Boxes sit on a coarse integer grid (so equal IoUs are common, including two ground-truth
    boxes at equal IoU from one detection), scores are rounded to 2 decimals (equal scores
    across images), class 4 has ground truth but no detection, class 5 detections but no
    ground truth.
    """
    rng = np.random.default_rng(seed)
    gt_rows, dt_rows = [], []
    for i in range(n_images):
        image = f"img{i}"
        for _ in range(int(rng.integers(0, 25))):
            x, y = rng.integers(0, 40, 2) * 8
            w, h = rng.choice([8, 16, 24, 40, 64, 112], 2)
            c = int(rng.choice([0, 1, 2, 3, 4], p=[0.4, 0.25, 0.2, 0.1, 0.05]))
            gt_rows.append((image, c, x, y, x + w, y + h))
            for _ in range(int(rng.integers(0, 4))):  # several detections per lesion, shifted on the grid
                dx, dy = rng.integers(-1, 2, 2) * 4
                cls = min(c, 3) if rng.random() < 0.8 else int(rng.choice([0, 1, 2, 3, 5]))
                dt_rows.append(
                    (image, cls, round(float(rng.uniform(0.001, 1)), 2), x + dx, y + dy, x + w + dx, y + h + dy)
                )
        for _ in range(int(rng.integers(0, 20))):  # low-confidence clutter
            x, y = rng.integers(0, 40, 2) * 8
            dt_rows.append(
                (
                    image,
                    int(rng.choice([0, 1, 2, 3, 5])),
                    round(float(rng.uniform(0.001, 0.3)), 2),
                    x,
                    y,
                    x + 16,
                    y + 16,
                )
            )
    gt = pd.DataFrame(gt_rows, columns=COLS)
    dt = pd.DataFrame(dt_rows, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    return gt, dt


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_equals_pycocotools_to_1e9_on_crowded_tied_data(seed: int) -> None:
    gt, dt = _crowded_tied_detections(300, seed)
    assert dt.confidence.duplicated().mean() > 0.9  # the ties the rules must break the same way
    images = [f"img{i}" for i in range(300)]
    ours = average_precision(dt, gt, images=images, n_classes=6)
    reference = average_precision(dt, gt, images=images, n_classes=6, reference=True)
    for column in ("ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large"):
        assert np.allclose(ours[column], reference[column], rtol=0, atol=1e-9, equal_nan=True), column
    assert ours.loc[4, "ap50"] == 0.0  # ground truth, no detection
    assert np.isnan(ours.loc[5, "ap50"])  # detections, no ground truth
    assert 0.05 < ours.loc[0, "ap50"] < 0.95  # a set with real errors, so the comparison can fail
    # and the summary pycocotools itself prints, built independently of the code under test
    stats = pycocotools_summary(gt, dt, images, 6)
    assert ours.ap50_95.mean() == pytest.approx(stats[0], abs=1e-9)
    assert ours.ap50.mean() == pytest.approx(stats[1], abs=1e-9)


def test_ap_matches_pycocotools_summary_on_random_images() -> None:
    gt, dt = random_detections(1000, n_classes=6, seed=0)
    images = [f"img{i}" for i in range(1000)]
    ours = average_precision(dt, gt, images=images, n_classes=6)
    stats = pycocotools_summary(gt, dt, images, 6)
    assert ours.ap50_95.mean() == pytest.approx(stats[0], abs=1e-9)
    assert ours.ap50.mean() == pytest.approx(stats[1], abs=1e-9)
    assert ours.ap75.mean() == pytest.approx(stats[2], abs=1e-9)
    assert 0.2 < stats[1] < 0.95


def test_ap_of_perfect_shifted_and_no_detections() -> None:
    gt, _ = random_detections(50, n_classes=2, seed=1)
    perfect = gt.assign(confidence=0.9)
    images = [f"img{i}" for i in range(50)]
    assert average_precision(perfect, gt, images=images, n_classes=2).ap50.tolist() == pytest.approx([1.0, 1.0])
    none = average_precision(perfect.iloc[:0], gt, images=images, n_classes=3)
    assert none.ap50.tolist()[:2] == [0.0, 0.0] and np.isnan(none.ap50[2])
    one = pd.DataFrame([("a", 0, 10, 10, 50, 50)], columns=COLS)
    shifted = pd.DataFrame(
        [("a", 0, 0.9, 20, 20, 60, 60)], columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"]
    )
    assert average_precision(shifted, one, images=["a"], n_classes=1).ap50.item() == 0.0  # IoU 0.391 < 0.5
    no_truth = average_precision(shifted, one.iloc[:0], images=["a"], n_classes=1)
    assert np.isnan(no_truth.ap50.item())


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
    gt, dt = random_detections(150, n_classes=3, seed=4)
    rows = precision_recall_f1(match_detections(dt, gt, iou_threshold=0.5), n_classes=3)
    assert tuple(int(rows[c].sum()) for c in ("tp", "fp", "fn")) == _greedy_reference(dt, gt, 0.5)


@pytest.mark.parametrize("class_aware", [True, False])
def test_matching_in_blocks_of_photos_equals_matching_all_at_once(monkeypatch, class_aware: bool) -> None:
    """Memory is bounded by matching blocks of photos; the table must be the same, row for row."""
    gt, dt = random_detections(300, n_classes=3, seed=7)
    assert len(metrics._group_blocks(*_groups(dt, gt, class_aware))) == 1  # at the default size: all at once
    whole = metrics.match_detections(dt, gt, iou_threshold=0.5, class_aware=class_aware)
    monkeypatch.setattr(metrics, "MATCH_BLOCK_PAIRS", 40)  # a few photos per block, some alone
    det_group, gt_group, n_groups = _groups(dt, gt, class_aware)
    blocks = metrics._group_blocks(det_group, gt_group, n_groups)
    # every group in exactly one block: the blocks tile 0..n_groups, each non-empty
    assert len(blocks) > 20 and blocks[0][0] == 0 and blocks[-1][1] == n_groups
    assert all(low < high for low, high in blocks) and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    pd.testing.assert_frame_equal(metrics.match_detections(dt, gt, iou_threshold=0.5, class_aware=class_aware), whole)


def _groups(dt: pd.DataFrame, gt: pd.DataFrame, class_aware: bool) -> tuple[np.ndarray, np.ndarray, int]:
    key = ["class_id", "image"] if class_aware else ["image"]
    index = pd.MultiIndex.from_frame(pd.concat([dt[key], gt[key]]).drop_duplicates())
    return (
        index.get_indexer(pd.MultiIndex.from_frame(dt[key])),
        index.get_indexer(pd.MultiIndex.from_frame(gt[key])),
        len(index),
    )
