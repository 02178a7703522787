"""The count→grade rule, grade sources, and grading metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from acne_detection.core.grading import (
    GradingRule,
    grades_from_names,
    grading_metrics,
    parse_grades_file,
    severity_grade,
)
from acne_detection.core.params import GradingParams


@pytest.mark.parametrize(("count", "grade"), [(0, 0), (5, 0), (6, 1), (20, 1), (21, 2), (50, 2), (51, 3), (400, 3)])
def test_acne04_thresholds_at_every_boundary(count: int, grade: int) -> None:
    assert severity_grade(count) == grade


def test_grades_are_vectorised_and_follow_other_thresholds() -> None:
    assert severity_grade([0, 3, 4, 10, 11]).tolist() == [0, 0, 0, 1, 1]
    assert severity_grade([0, 3, 4, 10, 11], thresholds=[3, 10]).tolist() == [0, 0, 1, 1, 2]


def test_grade_from_acne04_file_names() -> None:
    ids = pd.Series(["train/levle2_49_jpg.rf.0a1b.jpg", "levle0_3.jpg", "photo.jpg", "levleX_1.jpg"])
    assert grades_from_names(ids, r"levle(?P<grade>\d)").tolist() == [2, 0, pd.NA, pd.NA]
    assert grades_from_names(ids, None).isna().all()
    assert grades_from_names(pd.Series(["grade-3/a.jpg"]), r"grade-(\d)").tolist() == [3]


def test_a_grades_file_matches_paths_names_and_stems_and_reports_bad_lines() -> None:
    ids = pd.Series(["train/a.jpg", "b.png", "c.jpg", "d.jpg"])
    table = pd.DataFrame(
        {"image": ["train/a.jpg", "b.png", "c", "zzz.jpg", "d.jpg"], "grade": ["1", "3", "0", "2", "severe"]}
    )
    grades, problems = parse_grades_file(table, ids, n_grades=4, file="grades.csv")
    assert grades.tolist() == [1, 3, 0, pd.NA]
    assert problems[["image_id", "reason"]].values.tolist() == [
        ["zzz.jpg", "grade for an unknown image"],
        ["d.jpg", "unparseable grade"],
    ]
    _, wrong = parse_grades_file(pd.DataFrame({"file": ["a"]}), ids, n_grades=4, file="grades.csv")
    assert wrong.reason.tolist() == ["unparseable grades file"]


def test_grading_metrics_against_hand_computed_values() -> None:
    # 6 graded photos + 1 without a grade (counted for MAE/RMSE, not for accuracy).
    photos = pd.DataFrame(
        {
            "true_grade": pd.array([0, 0, 1, 2, 3, 3, pd.NA], dtype="Int64"),
            "pred_grade": [0, 1, 1, 2, 2, 3, 0],
            "count_grade": [0, 0, 1, 1, 3, 3, 0],
            "true_count": [2, 4, 10, 19, 60, 55, 0],
            "pred_count": [3, 7, 12, 25, 45, 58, 0],
        }
    )
    metrics, confusion = grading_metrics(photos, names=["mild", "moderate", "severe", "very severe"])
    assert metrics["photos_graded"] == 6
    assert metrics["grade_accuracy"] == pytest.approx(4 / 6)
    assert metrics["grade_ceiling"] == pytest.approx(5 / 6)  # the 19-lesion "severe" photo: a true count of grade 1
    assert metrics["grade_recall.mild"] == 0.5 and metrics["grade_recall.very severe"] == 0.5
    assert metrics["grade_recall.moderate"] == 1.0 and metrics["grade_recall.severe"] == 1.0
    errors = np.array([1, 3, 2, 6, -15, 3, 0])
    assert metrics["count_mae"] == pytest.approx(np.abs(errors).mean())  # 30 / 7
    assert metrics["count_rmse"] == pytest.approx(np.sqrt((errors**2).mean()))  # sqrt(288 / 7)
    # Wilson interval for 4/6 (statsmodels' proportion_confint(4, 6, method="wilson") gives 0.300, 0.903)
    assert (metrics["grade_accuracy_low"], metrics["grade_accuracy_high"]) == pytest.approx((0.3000, 0.9032), abs=5e-4)
    assert confusion.to_numpy().tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert "count_mae_estimated" not in metrics  # no grade model's estimate: only the lesions found are scored
    # a grade model that estimates the count (the expected count, scaled): its error beside the found lesions'
    estimated = photos.assign(estimated_count=pd.array([2, 6, 11, 20, 52, 55, 1], dtype="Int64"))
    metrics, _ = grading_metrics(estimated, names=["mild", "moderate", "severe", "very severe"])
    off = np.array([0, 2, 1, 1, -8, 0, 1])
    assert metrics["count_mae_estimated"] == pytest.approx(np.abs(off).mean())  # 13 / 7
    assert metrics["count_rmse_estimated"] == pytest.approx(np.sqrt((off**2).mean()))
    assert metrics["count_mae"] == pytest.approx(30 / 7)  # unchanged


def test_no_true_grade_leaves_accuracy_out_but_counts_errors() -> None:
    photos = pd.DataFrame(
        {
            "true_grade": pd.array([pd.NA, pd.NA], dtype="Int64"),
            "pred_grade": [0, 1],
            "count_grade": [0, 0],
            "true_count": [1, 2],
            "pred_count": [1, 8],
        }
    )
    metrics, _ = grading_metrics(photos, names=["a", "b", "c", "d"])
    assert "grade_accuracy" not in metrics and metrics["count_mae"] == 3.0 and metrics["photos_graded"] == 0


def test_the_count_distribution_is_the_enumeration_of_every_subset_of_detections() -> None:
    import itertools

    from acne_detection.core.grading import count_distribution, grade_probabilities

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 7, 12):
        p = rng.uniform(0, 1, n)
        p[: n // 4] = [0.0, 1.0, 0.5][: n // 4]  # certain and impossible detections too
        brute = np.zeros(n + 1)
        for kept in itertools.product((0, 1), repeat=n):
            brute[sum(kept)] += np.prod([q if k else 1 - q for q, k in zip(p, kept)])
        assert count_distribution(p) == pytest.approx(brute, abs=1e-12), n
    p = rng.uniform(0.2, 0.95, 12)
    by_grade = grade_probabilities(p, thresholds=(2, 5, 9))  # 0-2, 3-5, 6-9, 10-12 lesions
    pmf = count_distribution(p)
    assert by_grade == pytest.approx([pmf[:3].sum(), pmf[3:6].sum(), pmf[6:10].sum(), pmf[10:].sum()])
    assert by_grade.sum() == pytest.approx(1.0)
    # sure detections give the count-rule grade with certainty: 21 sure lesions are "severe"
    assert grade_probabilities(np.ones(21)) == pytest.approx([0, 0, 1, 0])
    assert grade_probabilities([]) == pytest.approx([1, 0, 0, 0])


def test_a_steady_undercount_is_corrected_only_when_it_grades_validation_better() -> None:
    from acne_detection.core.grading import fit_count_correction

    true = np.arange(0, 61)
    grades = severity_grade(true)
    missed_a_third = np.floor(true * 2 / 3)  # a detector that finds two lesions of every three
    record = fit_count_correction(missed_a_third, true, grades, (5, 20, 50))
    assert record["scale"] == pytest.approx(1.5, abs=0.02) and record["used"]
    assert record["thresholds"] == pytest.approx([5 / record["scale"], 20 / record["scale"], 50 / record["scale"]])
    assert record["accuracy_corrected"] > record["accuracy_rule"]
    assert (severity_grade(missed_a_third, record["thresholds"]) == grades).mean() == record["accuracy_corrected"]
    exact = fit_count_correction(true, true, grades, (5, 20, 50))  # a perfect counter: nothing to correct
    assert exact["scale"] == 1.0 and not exact["used"] and exact["thresholds"] == [5, 20, 50]
    few = fit_count_correction(missed_a_third[:15], true[:15], grades[:15], (5, 20, 50))
    assert not few["used"] and "only 15 validation photos" in few["reason"]
    unknown = fit_count_correction(missed_a_third, true, np.full(61, -1), (5, 20, 50))
    assert not unknown["used"] and "no validation photo with a true grade" in unknown["reason"]


def test_one_grading_rule_from_params_from_a_model_config_and_back() -> None:
    rule = GradingRule.from_params(GradingParams())
    assert rule.legend() == "0-5 mild, 6-20 moderate, 21-50 severe, more than 50 very severe"
    assert rule.colours() == ["#33aa33", "#ddbb33", "#ee7733", "#cc2222"]  # the report's four colours before
    corrected = GradingRule.from_params(GradingParams(), corrected=[4.0, 16.0, 40.0])
    assert corrected.grade([4, 5, 16, 17, 41]).tolist() == [0, 1, 1, 2, 3]  # the model's count, corrected
    assert corrected.legend() == rule.legend()  # the legend states the rule on true counts
    assert GradingRule.from_config(corrected.to_config()) == corrected
    assert GradingRule.from_config({}) == GradingRule.from_config(rule.to_config()) == rule  # an older model: the rule
    two = GradingRule(rule_thresholds=(0,), names=("clear", "acne"))
    assert two.legend() == "0 clear, more than 0 acne" and len(two.colours()) == 2
    with pytest.raises(ValueError, match="3 thresholds need 4 grade names"):
        GradingRule(names=("a", "b"))


def test_copies_of_one_source_photo_widen_the_accuracy_interval_over_sources() -> None:
    """Three copies per source, graded alike within each source: 90 photos that are 30 sources carry
    the evidence of about 30, so the interval is the bootstrap's over sources, wider than Wilson's
    over 90 photos. With one photo per source it is Wilson's, as before."""
    from scipy.stats import binomtest

    from acne_detection.core.grading import accuracy_interval, interval_words

    right = np.repeat(np.arange(30) % 4 != 0, 3)  # 22 of 30 sources right, all three copies alike
    sources = np.repeat([f"s{i}" for i in range(30)], 3)
    wilson = binomtest(int(right.sum()), len(right)).proportion_ci(method="wilson")
    low, high, n_sources = accuracy_interval(right, sources)
    assert n_sources == 30 and low < right.mean() < high
    assert high - low > 1.4 * (wilson.high - wilson.low)  # about sqrt(3) wider
    # seeded: the same interval every run; each source its own: Wilson's
    assert accuracy_interval(right, sources) == (low, high, 30)
    assert accuracy_interval(right, None) == pytest.approx((wilson.low, wilson.high, 90))
    assert accuracy_interval(right, [f"p{i}" for i in range(90)])[:2] == pytest.approx((wilson.low, wilson.high))
    # copies that disagree among themselves carry more evidence than copies alike
    shuffled = np.random.default_rng(0).permutation(right)
    s_low, s_high, _ = accuracy_interval(shuffled, sources)
    assert s_high - s_low < high - low
    # grading_metrics takes the sources from a `source` column, and says which interval it gave
    photos = pd.DataFrame(
        {
            "true_grade": pd.array([1] * 90, dtype="Int64"),
            "pred_grade": np.where(right, 1, 2),
            "count_grade": [1] * 90,
            "true_count": [10] * 90,
            "pred_count": [10] * 90,
            "source": sources,
        }
    )
    metrics, _ = grading_metrics(photos, names=["mild", "moderate", "severe", "very severe"])
    assert (metrics["grade_accuracy_low"], metrics["grade_accuracy_high"]) == (low, high)
    assert metrics["grade_sources"] == 30 and interval_words(metrics) == "95 % interval over 30 source photos"
    metrics, _ = grading_metrics(photos.drop(columns="source"), names=["mild", "moderate", "severe", "very severe"])
    assert metrics["grade_sources"] == 90 and interval_words(metrics) == "95 % Wilson interval"


def test_an_interval_over_few_or_alike_sources_is_wilsons_over_the_sources() -> None:
    """A bootstrap of sources all graded right collapses to one point, and one of a handful says
    little: there, Wilson's interval over the sources (their copies add no evidence). A photo with
    no known source is its own."""
    from scipy.stats import binomtest

    from acne_detection.core.grading import accuracy_interval

    sources = np.repeat([f"s{i}" for i in range(30)], 3)
    over_sources = binomtest(30, 30).proportion_ci(method="wilson")
    assert accuracy_interval(np.ones(90, bool), sources) == pytest.approx((over_sources.low, 1.0, 30))
    assert over_sources.low < binomtest(90, 90).proportion_ci(method="wilson").low  # wider than over 90 photos
    few = np.repeat([f"s{i}" for i in range(4)], 3)
    right = np.repeat([True, True, True, False], 3)
    wilson = binomtest(3, 4).proportion_ci(method="wilson")
    assert accuracy_interval(right, few) == pytest.approx((wilson.low, wilson.high, 4))
    # no source known: each photo its own (not one big "nan" source, not dropped)
    unknown = np.array([None, np.nan, "a", "a"], dtype=object)
    assert accuracy_interval(np.array([True, False, True, True]), unknown)[2] == 3
