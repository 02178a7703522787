"""Calibration: D-ECE against netcal's, Platt scaling, its inverse, and that it leaves AP alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from acne_detection.core.calibration import Calibration, dece, fit_platt, reliability_table
from acne_detection.core.grading import describe_grade_probabilities, photo_grade_probabilities
from acne_detection.core.metrics import average_precision


def test_dece_of_a_hand_made_case_equals_netcal_and_the_hand_computation() -> None:
    from netcal.metrics import ECE

    # bins of width 0.1: [0.0, 0.1) holds 0.05 (unmatched); [0.1, 0.2) 0.1 and 0.15 (one of two matched);
    # [0.5, 0.6) 0.5 and 0.55 (one of two); [0.9, 1.0] 0.9 and 0.95 (both) - edges go to the upper bin
    confidence = np.array([0.05, 0.1, 0.15, 0.5, 0.55, 0.9, 0.95])
    matched = np.array([0, 0, 1, 0, 1, 1, 1])
    by_hand = (1 * 0.05 + 2 * abs(0.5 - 0.125) + 2 * abs(0.5 - 0.525) + 2 * abs(1 - 0.925)) / 7
    assert dece(confidence, matched) == pytest.approx(by_hand, abs=1e-12)
    assert dece(confidence, matched) == pytest.approx(ECE(bins=10, detection=True).measure(confidence, matched))
    table = reliability_table(confidence, matched)
    assert table.detections.tolist() == [1, 2, 0, 0, 0, 2, 0, 0, 0, 2]
    assert table.precision[1] == 0.5 and np.isnan(table.precision[2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dece_equals_netcal_on_random_detections(seed: int) -> None:
    from netcal.metrics import ECE

    rng = np.random.default_rng(seed)
    confidence = np.concatenate([rng.uniform(0, 1, 500), [0.0, 0.3, 0.7, 1.0]])  # bin edges too
    matched = (rng.uniform(0, 1, confidence.size) < confidence**2).astype(int)
    for bins in (5, 10, 15):
        expected = ECE(bins=bins, detection=True).measure(confidence, matched)
        assert dece(confidence, matched, bins=bins) == pytest.approx(expected, abs=1e-12)


def test_platt_recovers_a_known_miscalibration_and_closes_its_gap() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.05, 0.99, 20000)
    logit = np.log(raw / (1 - raw))
    truth = 1 / (1 + np.exp(-(0.5 * logit - 1.0)))  # the detector is overconfident
    matched = rng.uniform(0, 1, raw.size) < truth
    fitted = fit_platt(raw, matched, min_conf=0.05)
    assert fitted.method == "platt" and fitted.detections == raw.size
    assert fitted.a == pytest.approx(0.5, abs=0.05) and fitted.b == pytest.approx(-1.0, abs=0.08)
    assert dece(raw, matched) > 0.15 > 0.02 > dece(fitted.apply(raw), matched)


def test_the_inverse_and_the_split_keep_exactly_the_boxes_a_calibrated_threshold_keeps() -> None:
    cal = Calibration(a=0.7, b=-0.4, min_conf=0.05, method="platt")
    for threshold in (0.1, 0.33, 0.8):
        raw = cal.raw_threshold(threshold)
        assert cal.apply(raw) == pytest.approx(threshold, abs=1e-9)
    boxes = pd.DataFrame({"image": ["a"] * 5, "class": ["lesion"] * 5, "confidence": [0.02, 0.06, 0.3, 0.5, 0.9]})
    threshold = float(cal.apply(0.5))
    counted, candidates = cal.split(boxes, threshold)
    assert counted.confidence.round(9).tolist() == cal.apply([0.5, 0.9]).round(9).tolist()
    assert len(candidates) == 4  # raw 0.02 is below the floor the fit saw
    assert cal.detector_floor(threshold) == 0.05 and cal.warning == ""


def test_a_fit_is_refused_with_a_reason_and_the_identity_kept() -> None:
    few = fit_platt(np.array([0.5, 0.6]), np.array([1, 0]), min_conf=0.05)
    assert few.method == "identity" and "fewer than" in few.reason
    one_outcome = fit_platt(np.linspace(0.1, 0.9, 50), np.ones(50), min_conf=0.05)
    assert one_outcome.method == "identity" and "every validation detection is matched" in one_outcome.reason
    inverted = fit_platt(np.linspace(0.1, 0.9, 200), np.linspace(0.1, 0.9, 200) < 0.5, min_conf=0.05)
    assert inverted.method == "identity" and "not increasing" in inverted.reason
    assert inverted.apply(np.array([0.3]))[0] == 0.3 and "not calibrated" in inverted.warning
    assert Calibration.from_dict(None).reason == "no calibration recorded for this model"
    assert Calibration.from_dict(fit_platt(*_toy(), min_conf=0.05).to_dict()).method == "platt"


def _toy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    c = rng.uniform(0.05, 1, 300)
    return c, rng.uniform(0, 1, 300) < c


def test_recalibration_leaves_average_precision_unchanged() -> None:
    rng = np.random.default_rng(1)
    truth = pd.DataFrame(
        [
            {"image": f"p{i}", "class_id": 0, "x_min": x, "y_min": 10, "x_max": x + 20, "y_max": 30}
            for i in range(20)
            for x in (10, 50, 90)
        ]
    )
    predictions = truth.sample(frac=0.8, random_state=0).assign(
        confidence=rng.uniform(0.05, 1, 48), x_min=lambda t: t.x_min + rng.integers(-6, 6, 48)
    )
    cal = Calibration(a=0.6, b=0.9, method="platt")
    before = average_precision(predictions, truth, images=[], n_classes=1)
    after = average_precision(
        predictions.assign(confidence=cal.apply(predictions.confidence)), truth, images=[], n_classes=1
    )
    assert before.ap50[0] > 0 and before.ap50_95[0] > 0
    assert after.ap50[0] == pytest.approx(before.ap50[0], abs=1e-12)
    assert after.ap50_95[0] == pytest.approx(before.ap50_95[0], abs=1e-12)


def test_grade_probabilities_per_photo_sum_to_one_and_read_as_words() -> None:
    candidates = pd.DataFrame(
        {
            "image": ["a"] * 7 + ["b"],
            "class": ["papule"] * 6 + ["comedone", "papule"],
            "confidence": [0.99, 0.99, 0.99, 0.99, 0.99, 0.5, 0.9, 0.2],
        }
    )
    probs = photo_grade_probabilities(candidates, pd.Series(["a", "b", "none"]), (5, 20, 50), None)
    assert probs.shape == (3, 4) and np.allclose(probs.sum(axis=1), 1)
    assert probs[2].tolist() == [1.0, 0.0, 0.0, 0.0]  # no detection: mild for certain
    # photo a counting papules only (the comedone is left out): 5 at 0.99 and one at 0.5, so moderate
    # (6 lesions) needs all six, P = 0.99^5 * 0.5; with the comedone counted too, 7 candidates
    papules = photo_grade_probabilities(candidates, pd.Series(["a"]), (5, 20, 50), ("papule",))[0]
    assert papules[1] == pytest.approx(0.99**5 * 0.5, abs=1e-12) and papules[0] == pytest.approx(1 - 0.99**5 * 0.5)
    every = photo_grade_probabilities(candidates, pd.Series(["a"]), (5, 20, 50), None)[0]
    assert every[1] > papules[1]
    assert describe_grade_probabilities([0.26, 0.72, 0.02, 0.0], ["mild", "moderate", "severe", "very severe"]) == (
        "moderate 72 %, mild 26 %, severe 2 %"
    )
