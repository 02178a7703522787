"""The grade model (acne_detection.core.grade_model): chosen on validation, refused when it does not
beat the rule there, probabilities that sum to 1 and are calibrated where the answer is known, one
answer per photo (the grade shown is the argmax of the probabilities shown), never applied under
another grading rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from acne_detection.core.grade_model import (
    DEFAULT_LADDER,
    EXPECTED,
    Evidence,
    GradeModel,
    GradeRuleMismatch,
    _fit_logistic,
    _logistic_probabilities,
    choose_grade_model,
    decay_rows,
    fit_decay,
    fit_scale,
    photo_features,
    scaled_counts,
)
from acne_detection.core.grading import GradingRule, severity_grade


def _photos(n: int, *, start: int, seed: int, found: float, noise: float) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Photos whose true lesion count sets the grade; the detector finds ``found`` of the lesions with
    high confidence, and ``noise`` false alarms per photo at low confidence. Three copies per source."""
    rng = np.random.default_rng(seed)
    rows, grades, groups = [], {}, {}
    for i in range(n):
        image = f"p{start + i}"
        true = int(rng.integers(0, 90))
        grades[image], groups[image] = int(severity_grade(true)), f"s{(start + i) // 3}"
        hits = rng.binomial(true, found)
        alarms = rng.poisson(noise)
        conf = np.concatenate([rng.uniform(0.3, 0.95, hits), rng.uniform(0.05, 0.2, alarms)])
        for c in conf:
            rows.append(
                {"image": image, "class": "lesion", "confidence": c, "x_min": 0, "y_min": 0, "x_max": 12, "y_max": 12}
            )
    return pd.DataFrame(rows), pd.Series(grades), pd.Series(groups)


def _evidence(candidates: pd.DataFrame, grades: pd.Series, groups: pd.Series) -> Evidence:
    features = photo_features(candidates, grades.index, sides={image: 640.0 for image in grades.index})
    return Evidence.of(features, grades, groups)


THRESHOLD = 0.25


def _rule_grades(candidates: pd.DataFrame, images: pd.Index) -> np.ndarray:
    rule = GradingRule()
    return rule.grade(rule.count(candidates[candidates.confidence >= THRESHOLD], pd.Series(images, dtype=object)))


def _chosen(n_train: int, n_val: int, *, seed: int, found: float, noise: float):
    """A grade model chosen on drawn validation photos, with a training split of the same detector."""
    train = _evidence(*_photos(n_train, start=0, seed=seed, found=found, noise=noise))
    candidates, grades, groups = _photos(n_val, start=1000, seed=seed + 1, found=found, noise=noise)
    val = _evidence(candidates, grades, groups)
    model, table = choose_grade_model(
        GradingRule(), val, _rule_grades(candidates, val.features.index), threshold=THRESHOLD, train=train
    )
    return model, table, candidates, grades


def test_features_count_at_each_rung_and_sum_the_probabilities() -> None:
    boxes = pd.DataFrame(
        {
            "image": ["a", "a", "a", "b"],
            "class": ["papule", "pustule", "papule", "papule"],
            "confidence": [0.9, 0.2, 0.06, 0.5],
            "x_min": [0, 0, 0, 0],
            "y_min": [0, 0, 0, 0],
            "x_max": [64, 16, 16, 32],
            "y_max": [64, 16, 16, 32],
        }
    )
    features = photo_features(boxes, ["a", "b", "c"], classes=["papule", "pustule"], sides={"a": 640.0, "b": 640.0})
    assert np.expm1(features.loc["a", "n@0.05"]) == pytest.approx(3)
    assert np.expm1(features.loc["a", "n@0.5"]) == pytest.approx(1)
    assert np.expm1(features.loc["a", "expected"]) == pytest.approx(1.16)
    assert np.expm1(features.loc["a", "expected.pustule"]) == pytest.approx(0.2)
    assert features.loc["c"].filter(like="n@").eq(0).all()  # a photo with no box: zero counts, not missing
    # the probability-weighted mean of log(box side / photo side)
    expected = (0.9 * np.log(0.1) + 0.26 * np.log(0.025)) / 1.16
    assert features.loc["a", "size_mean"] == pytest.approx(expected)
    assert features.loc["b", "size_mean"] == pytest.approx(np.log(0.05)) and features.loc["b", "size_sd"] == 0
    hayashi = photo_features(boxes, ["a"], count_classes=("pustule",))
    assert np.expm1(hayashi.loc["a", "n@0.05"]) == pytest.approx(1)
    assert len(DEFAULT_LADDER) == 10 and DEFAULT_LADDER[0] == 0.05 and DEFAULT_LADDER[-1] == 0.5


def test_a_learned_model_is_chosen_on_validation_where_it_beats_the_rule() -> None:
    """The detector finds a third of the lesions: the rule undercounts and misgrades; the learned model does not."""
    model, table, _, _ = _chosen(240, 120, seed=1, found=0.33, noise=2)
    assert model.kind == "logistic"
    scores = table.set_index("candidate").accuracy
    assert scores.drop("rule").max() > scores["rule"] + 0.1
    assert table.chosen.sum() == 1 and table.loc[table.chosen, "accuracy"].iloc[0] == scores.max()
    # scored on photos it never saw: a new draw of the same detector grades as well as validation said
    new, new_grades, _ = _photos(300, start=5000, seed=3, found=0.33, noise=2)
    p = model.probabilities(new, list(new_grades.index), {image: 640.0 for image in new_grades.index})
    assert (model.grades(p) == new_grades.to_numpy()).mean() > scores["rule"] + 0.1


def test_the_rule_is_kept_when_no_learned_model_beats_it_on_validation() -> None:
    """A perfect detector: the rule grades every photo right, nothing learned can do strictly better."""
    rule = GradingRule()
    candidates, grades, groups = _photos(90, start=0, seed=4, found=1.0, noise=0)
    candidates = candidates.assign(confidence=0.999)
    val = _evidence(candidates, grades, groups)
    rule_grades = _rule_grades(candidates, val.features.index)
    model, table = choose_grade_model(rule, val, rule_grades, threshold=THRESHOLD, train=val)
    assert table.set_index("candidate").accuracy["rule"] == 1.0
    assert model.kind == "rule" and "no learned model beat the rule" in model.reason
    assert table.loc[table.chosen, "candidate"].tolist() == ["rule"]
    # the rule's grade is shown, and its probabilities are its grades' validation outcomes
    p = model.probabilities(candidates, grades.index)
    assert (model.grades(p) == rule_grades).all() and p.sum(axis=1) == pytest.approx(np.ones(len(p)))
    few = Evidence(val.features.head(10), val.grades[:10], val.groups[:10])
    model, _ = choose_grade_model(rule, few, rule_grades[:10], threshold=THRESHOLD, train=val)
    assert model.kind == "rule" and "only 10 validation photos" in model.reason


def test_probabilities_sum_to_one_and_are_calibrated_where_the_answer_is_known() -> None:
    """Photos drawn from a known multinomial logistic model: the fitted probabilities match the
    true ones, and among photos given p for their most probable grade, about p are right."""
    rng = np.random.default_rng(5)
    n, grades = 6000, 4
    x = rng.normal(size=(n, 2))
    true_coef = np.array([[-2.0, 0.0], [-0.5, 0.5], [0.5, 0.5], [2.0, 0.0]])
    logits = x @ true_coef.T
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(grades, p=row) for row in truth])
    from acne_detection.core.grade_model import Recipe

    fitted = _fit_logistic(x[:4000], y[:4000], grades, Recipe(c=100.0))
    p = _logistic_probabilities(x[4000:], fitted)
    assert p.sum(axis=1) == pytest.approx(np.ones(len(p)))
    assert np.abs(p - truth[4000:]).mean() < 0.03
    top, right = p.max(axis=1), p.argmax(axis=1) == y[4000:]
    for low, high in ((0.3, 0.5), (0.5, 0.7), (0.7, 1.0)):
        inside = (top >= low) & (top < high)
        assert inside.sum() > 100 and abs(right[inside].mean() - top[inside].mean()) < 0.06


def test_a_stored_model_gives_the_same_answer_and_its_grade_is_its_argmax() -> None:
    rule = GradingRule()
    model, _, candidates, grades = _chosen(150, 60, seed=6, found=0.4, noise=3)
    stored = GradeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    sides = {image: 640.0 for image in grades.index}
    p, q = model.probabilities(candidates, grades.index, sides), stored.probabilities(candidates, grades.index, sides)
    assert p == pytest.approx(q) and p.sum(axis=1) == pytest.approx(np.ones(len(p)))
    assert (stored.grades(q) == q.argmax(axis=1)).all()
    # the rule, too, shows the grade its probabilities make most probable, falling off with the
    # distance from it at the rate of maximum likelihood on validation (checked against a fine grid)
    said, truth = np.array([0, 0, 1, 1, 2, 3, 3, 1]), np.array([0, 1, 1, 2, 2, 3, 2, 1])
    decay = fit_decay(said, truth, 4)
    grid = np.linspace(0, 12, 12001)
    likelihood = [np.log(decay_rows(4, d)[said, truth]).sum() for d in grid]
    assert decay == pytest.approx(grid[int(np.argmax(likelihood))], abs=2e-3)
    rule_model = GradeModel.rule(rule, threshold=THRESHOLD, decay=decay)
    rows = rule_model.rule_probabilities()
    assert rows.sum(axis=1) == pytest.approx(np.ones(4)) and (rows.argmax(axis=1) == np.arange(4)).all()
    assert rows[1, 1] > rows[1, 2] > rows[1, 3]  # further from the rule's grade, less probable
    many = pd.DataFrame(
        {"image": ["x"] * 60, "class": "lesion", "confidence": 0.9, "x_min": 0, "y_min": 0, "x_max": 9, "y_max": 9}
    )
    rp = GradeModel.from_dict(json.loads(json.dumps(rule_model.to_dict()))).probabilities(many, ["x", "none"])
    assert rule_model.grades(rp).tolist() == [3, 0] and rp[0] == pytest.approx(rows[3])
    # with no validation photo: the count's Poisson-binomial distribution, and its argmax
    plain = GradeModel.rule(rule)
    pb = plain.probabilities(candidates, grades.index)
    assert pb == pytest.approx(rule.probabilities(candidates, pd.Series(grades.index)))


def test_a_model_made_under_one_rule_refuses_another_naming_both() -> None:
    five = GradingRule(rule_thresholds=(2, 5, 20, 50), names=("clear", "mild", "moderate", "severe", "very severe"))
    model = GradeModel.rule(five)
    with pytest.raises(GradeRuleMismatch) as refused:
        model.check_rule(GradingRule())
    assert "0-2 clear" in str(refused.value) and "0-5 mild" in str(refused.value)
    model.check_rule(five)  # its own rule: no complaint


def test_a_learned_model_must_beat_the_rule_beyond_chance() -> None:
    """The one-sided exact McNemar test on the photos exactly one grader gets right."""
    from acne_detection.core.grade_model import beats

    rule_right = np.array([True] * 80 + [False] * 9 + [True] * 1 + [False] * 10)
    model_right = np.array([True] * 80 + [True] * 8 + [False] * 1 + [False] * 1 + [False] * 10)
    # 8 photos only the model grades right, 1 only the rule: P(X >= 8 | 9, 1/2) = 10 / 512
    assert beats(model_right, rule_right) == pytest.approx(10 / 512)
    assert beats(rule_right, rule_right) == 1.0
    two_better = rule_right.copy()
    two_better[[81, 82]] = True  # two photos more than the rule: chance, on 100
    assert beats(two_better, rule_right) == pytest.approx(0.25)
    # each photo its own source: the same test, whatever the source's names
    assert beats(model_right, rule_right, [f"s{i}" for i in range(100)]) == pytest.approx(10 / 512)


def test_copies_of_one_source_photo_count_as_one_piece_of_evidence() -> None:
    """Three copies of each of three sources, all graded better by the model: nine photos say p 1/512,
    but three sources say 1/8 (every flip of three signs is as likely)."""
    from acne_detection.core.grade_model import beats

    rule_right = np.array([False] * 9 + [True] * 40)
    model_right = np.array([True] * 9 + [True] * 40)
    sources = [f"s{i // 3}" for i in range(49)]
    assert beats(model_right, rule_right) == pytest.approx(1 / 512)
    assert beats(model_right, rule_right, sources) == pytest.approx(1 / 8)
    # copies that disagree within a source cancel there: +1 -1 +1 is one source one photo better
    mixed_model = np.array([True, False, True] + [True] * 3 + [True] * 3 + [True] * 40)
    mixed_rule = np.array([False, True, False] + [False] * 3 + [False] * 3 + [True] * 40)
    # the sources sum to 1, 3 and 3: only all three signs positive reach 7, so 1/8
    assert beats(mixed_model, mixed_rule, sources) == pytest.approx(1 / 8)


def test_p_values_are_worded_without_rounding_onto_the_bar() -> None:
    from acne_detection.core.grade_model import _p

    assert (_p(0.0904, 3), _p(0.0004, 3), _p(0.0996, 3), _p(0.1004, 2), _p(0.1, 3)) == (
        "0.090",
        "< 0.001",
        "0.0996",
        "0.100",
        "0.100",
    )


@pytest.mark.parametrize("seed", range(6))
def test_the_sign_flip_test_equals_scipys_exact_permutation_test(seed: int) -> None:
    """``sign_flip_p`` convolves; scipy's ``permutation_test`` (one sample, ``samples``: sign flips)
    enumerates every flip where it can. The two agree to rounding; and on -1/0/+1 differences it is
    the binomial test (McNemar's)."""
    from scipy.stats import binomtest, permutation_test

    from acne_detection.core.grade_model import sign_flip_p

    rng = np.random.default_rng(seed)
    diff = rng.integers(-3, 4, size=int(rng.integers(3, 12)))
    reference = permutation_test(
        (diff,),
        np.sum,
        permutation_type="samples",
        alternative="greater",
        n_resamples=np.inf,
        vectorized=False,
    ).pvalue
    assert sign_flip_p(diff) == pytest.approx(reference, abs=1e-12) if diff.any() else sign_flip_p(diff) == 1.0
    ones = rng.choice([-1, 0, 1], size=30)
    wins, disagree = int((ones == 1).sum()), int((ones != 0).sum())
    assert sign_flip_p(ones) == pytest.approx(binomtest(wins, disagree, 0.5, alternative="greater").pvalue)


def _classifier_scores(grades: pd.Series, *, seed: int, right: float) -> pd.DataFrame:
    """A whole-photo classifier independent of the detector: its top grade is the true one on
    ``right`` of the photos, a random other one elsewhere, with 0.6 of the mass on its top grade."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in grades.to_numpy():
        top = g if rng.random() < right else rng.choice([k for k in range(4) if k != g])
        p = np.full(4, 0.4 / 3)
        p[top] = 0.6
        rows.append(p)
    return pd.DataFrame(rows, index=pd.Index(grades.index, name="image"), columns=[f"cls.{k}" for k in range(4)])


def test_the_grade_classifier_pooled_with_the_detectors_model_is_chosen_when_it_grades_better() -> None:
    """Two independent signals on 60 validation photos: the detector finds a fifth of the lesions, a
    classifier is right on 85 % of the photos. Pooled, they beat the rule and the detector's model
    alone (and, on so few photos, a model cross-fitted there); the chosen model then needs the
    classifier's scores, and its answer is the pooling of both experts."""
    sides = lambda grades: {image: 640.0 for image in grades.index}  # noqa: E731
    t_candidates, t_grades, t_groups = _photos(240, start=0, seed=7, found=0.2, noise=4)
    t_scores = _classifier_scores(t_grades, seed=8, right=0.85)
    train = Evidence.of(
        photo_features(t_candidates, t_grades.index, sides=sides(t_grades), scores=t_scores), t_grades, t_groups
    )
    candidates, grades, groups = _photos(60, start=1000, seed=9, found=0.2, noise=4)
    scores = _classifier_scores(grades, seed=10, right=0.85)
    val = Evidence.of(photo_features(candidates, grades.index, sides=sides(grades), scores=scores), grades, groups)
    model, table = choose_grade_model(
        GradingRule(),
        val,
        _rule_grades(candidates, val.features.index),
        threshold=THRESHOLD,
        train=train,
        classifier={"sha256": "ab" * 32, "imgsz": 224},
    )
    accuracy = table.set_index("candidate").accuracy
    name = "logistic, fitted on the training split, pooled with the grade classifier"
    assert accuracy[name] > accuracy["logistic, fitted on the training split"]
    assert accuracy[name] > accuracy["rule"] + 0.1
    assert table.loc[table.chosen, "candidate"].tolist() == [name]
    assert model.pool == 0.5 and model.uses_classifier and model.classifier["imgsz"] == 224
    assert model.fitted_on == "training split" and "pooled with the grade classifier" in model.describe()
    with pytest.raises(ValueError, match="grade classifier"):
        model.probabilities(candidates, list(grades.index), sides(grades))
    p = model.probabilities(candidates, list(grades.index), sides(grades), scores)
    alone = GradeModel.from_dict({**model.to_dict(), "pool": 0.0}).probabilities(
        candidates, list(grades.index), sides(grades)
    )
    by_hand = np.sqrt(alone * scores.to_numpy())  # equal weights: the geometric mean, normalised
    by_hand /= by_hand.sum(axis=1, keepdims=True)
    assert p.sum(axis=1) == pytest.approx(np.ones(len(p)))
    assert np.abs(p - by_hand).max() < 0.01  # the floor's share only
    assert (model.grades(p) == by_hand.argmax(axis=1)).all()
    stored = GradeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.array_equal(stored.probabilities(candidates, list(grades.index), sides(grades), scores), p)


def _halved(n: int, *, start: int, seed: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Photos whose every lesion the detector finds at a calibrated 0.5: the expected count is half
    the true one, and at a threshold above 0.5 it counts nothing."""
    rng = np.random.default_rng(seed)
    rows, grades, groups = [], {}, {}
    for i in range(n):
        image = f"h{start + i}"
        true = int(rng.integers(0, 90))
        grades[image], groups[image] = int(severity_grade(true)), f"s{(start + i) // 3}"
        rows += [
            {"image": image, "class": "lesion", "confidence": 0.5, "x_min": 0, "y_min": 0, "x_max": 9, "y_max": 9}
        ] * true
    return pd.DataFrame(rows), pd.Series(grades), pd.Series(groups)


def test_fit_scale_recovers_what_the_expected_count_misses() -> None:
    expected = np.array([1.0, 2.5, 4, 8, 10.5, 20, 26, 40])  # half of 2, 5, 8, 16, 21, 40, 52, 80
    truth = severity_grade(expected * 2)
    scale = fit_scale(expected, truth, GradingRule())
    assert (severity_grade(scaled_counts(expected, scale)) == truth).all()
    assert 1.9 < scale < 2.1  # the middle of the scales that grade every photo right
    assert scaled_counts(np.array([2.4, 2.6]), 2.0).tolist() == [5, 5]  # whole lesions: 4.8 and 5.2 round to 5


def test_the_expected_count_scaled_is_chosen_where_it_grades_best_and_answers_as_one() -> None:
    """The detector sees every lesion at 0.5 and the rule counts above 0.5: the rule grades every photo
    mild. Twice the expected count is the true count; fitted on the training split, the scale finds it."""
    train = _evidence(*_halved(150, start=0, seed=11))
    candidates, grades, groups = _halved(90, start=1000, seed=12)
    val = _evidence(candidates, grades, groups)
    rule_grades = GradingRule().grade(
        GradingRule().count(candidates[candidates.confidence >= 0.6], pd.Series(val.features.index, dtype=object))
    )
    model, table = choose_grade_model(GradingRule(), val, rule_grades, threshold=0.6, train=train)
    scores = table.set_index("candidate").accuracy
    assert scores[EXPECTED] == 1.0 and scores["rule"] < 0.5
    assert model.kind == "expected" and table.loc[table.chosen, "candidate"].tolist() == [EXPECTED]
    assert 1.9 < model.scale < 2.1 and f"x {model.scale:.2f}" in model.describe()
    assert "paired test over 31 source photos p < 0.001" in model.reason
    # one answer: the grade shown is the argmax of the probabilities shown, stored or not
    stored = GradeModel.from_dict(json.loads(json.dumps(model.to_dict())))
    new, new_grades, _ = _halved(60, start=5000, seed=13)
    for m in (model, stored):
        p = m.probabilities(new, list(new_grades.index))
        assert p.sum(axis=1) == pytest.approx(np.ones(len(p)))
        assert (m.grades(p) == new_grades.to_numpy()).all()
        assert (m.grades(p) == severity_grade(m.estimated_counts(new, list(new_grades.index)))).all()
    # predict's table (grade_photos): the estimated count
    # beside the lesions found, graded as shown
    from acne_detection.model.predictor import grade_photos

    counted = new[new.confidence >= 0.6]
    table = grade_photos(stored, counted, new, list(new_grades.index), {i: 640.0 for i in new_grades.index})
    assert (table.lesions == 0).all() and (
        table.estimated_lesions.to_numpy() == stored.estimated_counts(new, list(new_grades.index))
    ).all()
    assert (table.grade.to_numpy() == severity_grade(table.estimated_lesions.to_numpy())).all()
    # the rule estimates no count: its table has the lesions found and no estimate
    rule = GradeModel.rule(GradingRule())
    assert rule.estimated_counts(new, list(new_grades.index)) is None
    assert "estimated_lesions" not in grade_photos(rule, counted, new, list(new_grades.index), {})


def test_an_expected_count_model_grades_by_the_rule_and_keeps_evals_correction_for_the_rule_beside_it() -> None:
    """Its own grades use the rule's thresholds (the scale is its correction); the count rule it carries,
    which eval grades the detector's count by for the figure beside it, keeps eval's corrected thresholds."""
    corrected = GradingRule(thresholds=(3.0, 10.0, 25.0))
    model = GradeModel(
        kind="expected",
        names=tuple(corrected.names),
        rule_thresholds=tuple(float(t) for t in corrected.rule_thresholds),
        thresholds=tuple(float(t) for t in corrected.applied),
        threshold=0.5,
        decay=3.0,
        scale=2.0,
    )
    assert model.grading_rule.applied == (3.0, 10.0, 25.0)
    candidates, grades, _ = _halved(40, start=0, seed=21)
    p = model.probabilities(candidates, list(grades.index))
    assert (model.grades(p) == grades.to_numpy()).all()  # graded 0-5 / 6-20 / 21-50 / more, not by 3 / 10 / 25
    assert not (corrected.grade(model.estimated_counts(candidates, list(grades.index))) == grades.to_numpy()).all()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "ordinal"}, "the kinds are rule, expected, logistic"),
        ({"kind": "expected", "decay": 3.0}, "needs a scale > 0 and a decay"),
        ({"kind": "expected", "scale": 2.0}, "needs a scale > 0 and a decay"),
    ],
)
def test_a_stored_grade_model_that_cannot_answer_is_refused_when_read(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GradeModel.from_dict({"names": ["mild", "severe"], "rule_thresholds": [5], **fields})
