"""Metrics per skin tone band against hand-computed values, the bootstrap AP against
faster-coco-eval, and the recall-gap warning both ways."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from acne_detection.core import metrics
from acne_detection.core.metrics import average_precision, match_detections, resampled_ap, top_per_photo
from acne_detection.core.params import parse
from acne_detection.pipelines.eval.plots import plot_skin_tone_metrics
from acne_detection.pipelines.eval.report import skin_tone_lines
from acne_detection.pipelines.eval.tones import evaluate_by_skin_tone

POINT = {"threshold": 0.5}


def _case(
    n_per_band: dict[str, int], found: dict[str, int], lesions: int = 2, false_alarms: dict[str, int] | None = None
):
    """Photos in bands, ``lesions`` true boxes each; in each photo of a band the first
    ``found[band]`` lesions are detected at 0.9, and ``false_alarms[band]`` photos get one false
    alarm at 0.8. Grades: a photo's predicted grade is right iff all its lesions are found."""
    manifest, gt, preds, split, grades = [], [], [], [], []
    for band, n in n_per_band.items():
        for k in range(n):
            image = f"test/images/{band.replace(' ', '_')}_{k}.png"
            manifest.append({"split": "test", "image": image, "image_id": image})
            split.append({"image_id": image, "tone_band": band})
            for j in range(lesions):
                box = {
                    "image": image,
                    "class_id": 0,
                    "x_min": 10.0 + 30 * j,
                    "y_min": 10.0,
                    "x_max": 30.0 + 30 * j,
                    "y_max": 30.0,
                }
                gt.append({**box, "split": "test", "image_id": image})
                if j < found[band]:
                    preds.append({**box, "confidence": 0.9})
            if k < (false_alarms or {}).get(band, 0):
                preds.append(
                    {
                        "image": image,
                        "class_id": 0,
                        "x_min": 200.0,
                        "y_min": 200.0,
                        "x_max": 220.0,
                        "y_max": 220.0,
                        "confidence": 0.8,
                    }
                )
            grades.append({"image": image, "true_grade": 1, "pred_grade": 1 if found[band] == lesions else 0})
    dataset = SimpleNamespace(manifest=pd.DataFrame(manifest), names=["lesion"])
    return (
        pd.DataFrame(preds),
        pd.DataFrame(gt),
        dataset,
        pd.DataFrame(split),
        pd.DataFrame(grades).astype({"true_grade": "Int64"}),
    )


def test_per_band_metrics_against_a_hand_computed_case() -> None:
    """Tan: 20 photos, both lesions found. Dark: 20 photos, one of two found, 5 false alarms.
    By hand: dark recall 20/40 = 0.5, precision 20/25 = 0.8, AP@50 51/101 (precision 1 up to
    recall 0.5, then nothing: 51 of COCO's 101 recall points), grade accuracy 0; tan 1, 1, 1, 1;
    overall recall 60/80 = 0.75. Recall alike in every photo of a band: its interval collapses."""
    preds, gt, dataset, split, grades = _case({"tan": 20, "dark": 20}, {"tan": 2, "dark": 1}, false_alarms={"dark": 5})
    table, metrics, check = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {}))
    rows = table.set_index("tone_band")
    assert list(rows.index) == ["tan", "dark", "all"]  # lightest first
    dark = rows.loc["dark"]
    assert (dark.photos, dark.lesions, dark.recall, dark.precision) == (20, 40, 0.5, 0.8)
    assert dark.ap50 == pytest.approx(51 / 101) and dark.grade_accuracy == 0.0
    assert (dark.recall_low, dark.recall_high) == (0.5, 0.5)
    assert rows.loc["tan", ["recall", "precision", "ap50", "grade_accuracy"]].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert rows.loc["all", "recall"] == 0.75 and dark.recall_gap == 0.25
    assert dark.flagged and not rows.loc["tan"].flagged
    assert check["skin_tone.flagged"] == "dark" and check["skin_tone.check"].startswith("warning: dark recall 0.500")
    assert metrics["tone.dark.recall"]["value"] == 0.5
    assert metrics["tone.dark.photos"]["value"] == 20 and metrics["tone.bands_flagged"]["value"] == 1
    assert dark.precision_low < 0.8 < dark.precision_high  # false alarms in 5 photos of 20: precision varies
    assert "| dark | 20 | 40 | 0.505 (0.50-0.50) | 0.500 (0.50-0.50) | 0.800 (" in skin_tone_lines(table, check)
    assert len(plot_skin_tone_metrics(table, parse("eval", {})).axes) == 3


def test_intervals_are_seeded_and_cover_the_estimate() -> None:
    """Photos that differ (some lesions found, some not): the interval has width, holds the
    estimate, and the same seed gives the same interval."""
    preds, gt, dataset, split, grades = _case({"brown": 30}, {"brown": 2}, lesions=2)
    preds = preds[~preds.index.isin(range(0, 60, 7))]  # drop some hits: recall varies by photo
    a, _, _ = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {"skin_tone": {"seed": 3}}))
    b, _, _ = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {"skin_tone": {"seed": 3}}))
    row = a.set_index("tone_band").loc["brown"]
    assert row.recall_low < row.recall < row.recall_high and row.ap50_low < row.ap50 <= row.ap50_high
    assert a.equals(b)


def test_copies_of_one_source_photo_are_resampled_together() -> None:
    """30 photos that are 10 sources of 3 copies, the copies alike (a source's lesions all found or
    one missed in each copy): the interval over sources is wider than the one over photos, which
    treats the copies as independent evidence."""
    preds, gt, dataset, split, grades = _case({"brown": 30}, {"brown": 2}, lesions=2)
    missed = [f"test/images/brown_{k}.png" for k in range(30) if (k // 3) % 2 == 0]  # sources 0, 2, 4, 6, 8
    first = preds.groupby("image").head(1).index  # the first lesion of each photo
    preds = preds.drop(index=[i for i in first if preds.loc[i, "image"] in missed])
    photos, _, _ = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {}))
    sources = split.assign(group=[f"s{k // 3}" for k in range(30)])
    clustered, _, _ = evaluate_by_skin_tone(preds, gt, dataset, sources, POINT, grades, parse("eval", {}))
    by_photo, by_source = photos.set_index("tone_band").loc["brown"], clustered.set_index("tone_band").loc["brown"]
    assert by_photo.recall == by_source.recall == 0.75  # 45 of 60 lesions: the figure is the same
    assert by_source.recall_low < 0.75 < by_source.recall_high
    assert by_source.recall_high - by_source.recall_low > 1.4 * (by_photo.recall_high - by_photo.recall_low)
    # every photo its own source: the same draws, the same table, as with no source at all
    own = split.assign(group=[f"own{k}" for k in range(30)])
    assert evaluate_by_skin_tone(preds, gt, dataset, own, POINT, grades, parse("eval", {}))[0].equals(photos)


def test_the_warning_both_ways(caplog) -> None:
    """A biased set (dark recall 0.5 against 0.75 overall) warns; an even one (every band 0.5)
    does not; a band under ``min_photos`` is reported but never flagged, however large its gap."""
    preds, gt, dataset, split, grades = _case({"tan": 20, "dark": 20}, {"tan": 2, "dark": 1})
    with caplog.at_level(logging.WARNING):
        evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {}))
    assert "recall on dark skin is 0.500" in caplog.text
    caplog.clear()
    preds, gt, dataset, split, grades = _case({"tan": 20, "dark": 20}, {"tan": 1, "dark": 1})
    with caplog.at_level(logging.WARNING):
        table, _, check = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {}))
    assert not table.flagged.any() and check["skin_tone.check"].startswith("pass") and "skin" not in caplog.text
    preds, gt, dataset, split, grades = _case({"tan": 20, "dark": 6}, {"tan": 2, "dark": 0})
    table, _, check = evaluate_by_skin_tone(preds, gt, dataset, split, POINT, grades, parse("eval", {}))
    dark = table.set_index("tone_band").loc["dark"]
    assert dark.recall == 0.0 and not dark.judged and not dark.flagged and check["skin_tone.check"].startswith("pass")
    assert "too few photos" in skin_tone_lines(table, check)


def test_no_tone_measured_is_said_not_guessed() -> None:
    preds, gt, dataset, split, grades = _case({"tan": 3}, {"tan": 2})
    table, metrics, check = evaluate_by_skin_tone(
        preds, gt, dataset, split.drop(columns="tone_band"), POINT, grades, parse("eval", {})
    )
    assert table.empty and metrics == {} and check["skin_tone.check"].startswith("not measured")


def test_bootstrap_ap_equals_faster_coco_eval_with_unit_weights() -> None:
    """On random boxes and scores over 40 photos and 3 classes (some photos with more than 100
    detections of a class, which COCO cuts), AP@50 from the matches equals faster-coco-eval's."""
    rng = np.random.default_rng(0)
    gt_rows, pred_rows = [], []
    for p in range(40):
        image = f"p{p}"
        for _ in range(rng.integers(0, 8)):
            x, y, s = rng.uniform(0, 200), rng.uniform(0, 200), rng.uniform(8, 40)
            c = int(rng.integers(3))
            gt_rows.append({"image": image, "class_id": c, "x_min": x, "y_min": y, "x_max": x + s, "y_max": y + s})
            for _ in range(rng.integers(0, 3)):  # detections near the truth, some of the wrong class
                j = rng.normal(0, s / 5, 4)
                pred_rows.append(
                    {
                        "image": image,
                        "class_id": c if rng.random() < 0.8 else int(rng.integers(3)),
                        "x_min": x + j[0],
                        "y_min": y + j[1],
                        "x_max": x + s + j[2],
                        "y_max": y + s + j[3],
                        "confidence": rng.random(),
                    }
                )
        for _ in range(120 if p < 3 else rng.integers(0, 5)):  # clutter
            x, y = rng.uniform(0, 220, 2)
            pred_rows.append(
                {
                    "image": image,
                    "class_id": int(rng.integers(3)),
                    "x_min": x,
                    "y_min": y,
                    "x_max": x + 15,
                    "y_max": y + 15,
                    "confidence": rng.random() * 0.6,
                }
            )
    gt, preds = pd.DataFrame(gt_rows), pd.DataFrame(pred_rows)
    images = [f"p{p}" for p in range(40)]
    reference = average_precision(preds, gt, images=images, n_classes=3)["ap50"].to_numpy()
    index = {name: i for i, name in enumerate(images)}
    matched = match_detections(top_per_photo(preds, 100), gt, iou_threshold=0.5)
    for cls in range(3):
        det = matched[matched.pred_class == cls]
        truth = np.bincount(gt.loc[gt.class_id == cls, "image"].map(index), minlength=40)
        ours = resampled_ap(
            det.true_class.to_numpy() >= 0,
            det.confidence.to_numpy(),
            det["image"].map(index).to_numpy(),
            truth,
            np.ones((2, 40)),
        )
        assert ours == pytest.approx([reference[cls]] * 2, abs=1e-12)
    # a resample that draws photo 0 twice and leaves out photo 1 is the AP of that duplicated set
    w = np.ones(40)
    w[0], w[1] = 2, 0
    dup_gt = pd.concat([gt[gt.image != "p1"], gt[gt.image == "p0"].assign(image="p0b")])
    dup_pred = pd.concat([preds[preds.image != "p1"], preds[preds.image == "p0"].assign(image="p0b")])
    dup_ref = average_precision(dup_pred, dup_gt, images=[*images, "p0b"], n_classes=3)["ap50"].to_numpy()
    det = matched[matched.pred_class == 0]
    truth = np.bincount(gt.loc[gt.class_id == 0, "image"].map(index), minlength=40)
    ours = resampled_ap(
        det.true_class.to_numpy() >= 0, det.confidence.to_numpy(), det["image"].map(index).to_numpy(), truth, w[None]
    )
    assert ours[0] == pytest.approx(dup_ref[0], abs=1e-9)


def test_bootstrap_ap_in_blocks_of_resamples_equals_all_at_once(monkeypatch) -> None:
    """Memory is bounded by taking a block of resamples at a time; each resample's AP is unchanged."""
    rng = np.random.default_rng(3)
    hit, confidence = rng.random(500) < 0.6, rng.random(500)
    photo, truth = rng.integers(0, 30, 500), rng.integers(0, 20, 30)
    weights = rng.poisson(1.0, (64, 30)).astype(float)
    whole = resampled_ap(hit, confidence, photo, truth, weights)
    monkeypatch.setattr(metrics, "MATCH_BLOCK_PAIRS", 2_000)  # 4 resamples per block
    assert np.isfinite(whole).all() and np.array_equal(resampled_ap(hit, confidence, photo, truth, weights), whole)
