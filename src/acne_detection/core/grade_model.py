"""A photo's severity grade and its probabilities from all of the detector's evidence, as one model.

The count rule (``grading.GradingRule``) grades the detector's count at one confidence threshold
and throws the rest of its output away: how many more lesions it half-sees below the threshold,
how sure it is of those above, how large they are. On real ACNE04 photos a logistic regression on
the counts at a ladder of confidences graded unseen photos better than the best single threshold
(0.73 against 0.63 with a GPU detector; issue 34). This module is that model:

- **evidence per photo** (``photo_features``): counts of candidates at a ladder of calibrated
  confidences, the expected count (the sum of calibrated probabilities), the box-size
  distribution relative to the photo, the expected count per class where the classes that
  count are several (lesion types), and a whole-photo grade classifier's probabilities where
  one was trained (``core.grade_classifier``: a second signal);
- **the model**: scikit-learn's multinomial logistic regression on standardised evidence, with
  hard labels or label-distribution targets (neighbouring grades share mass, as Wu et al. 2019
  do), its regularisation and targets chosen by grouped cross-validation (copies of one source
  photo never straddle folds);
- **the rule as a model**: the count at the operating point graded by the rule, its probabilities
  falling off with the distance from the rule's grade at the rate validation photos show
  (``exp(-decay * |g - k|)``, one parameter fitted by maximum likelihood), so that the rule, too,
  shows the grade its probabilities make most probable; with no graded validation photo, the
  count's Poisson-binomial distribution graded by the rule (``grading.grade_probabilities``);
- **two signals pooled**: the model fitted on the training split's detector evidence, pooled with
  the whole-photo grade classifier's probabilities (``POOL``: equal-weight log-linear pooling,
  ``p ∝ p_counts^(1-w) * p_classifier^w``). Neither expert saw a validation photo and the weight is
  fixed, so its validation score is as honest as the others'; a model fitted on the training split
  cannot take the classifier's scores as features, since on its own training photos the
  classifier is nearly always right;
- **the choice** (``choose_grade_model``), on validation photos only: the learned model fitted on
  the training split (scored on validation), pooled with the classifier, or cross-fitted on the
  validation split (scored out of fold), against the rule. The rule is kept unless a learned model
  grades validation better beyond chance.

Every answer is one: the shown grade is the argmax of the shown probabilities (``GradeModel.grades``).
scikit-learn has no ordinal estimator; label-distribution targets are how the order enters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from acne_detection.core.grading import GradingRule, counted_boxes, source_keys

# Calibrated confidences the candidates are counted at: ten, log-spaced from 0.05 to 0.5 (issue 34).
DEFAULT_LADDER: tuple[float, ...] = tuple(float(round(t, 4)) for t in np.geomspace(0.05, 0.5, 10))
NO_BOX_SIZE = -4.0  # log relative side given to a photo with no candidate (exp(-4): 1.8 % of the photo's side)
MIN_GRADED_PHOTOS = 20  # fewer validation photos with a true grade cannot choose between two graders
# a learned model replaces the rule only when validation says it grades better beyond chance: on ~100
# validation photos a gain of two photos is noise (the dev slice's was, and it lost 8 points on test)
SIGNIFICANCE = 0.1
C_GRID = (0.01, 0.1, 1.0, 10.0)
LABEL_SPREADS = (0.0, 0.15)  # share of a photo's target mass on each neighbouring grade (0: hard labels)
FEATURE_SETS = ("counts", "counts+sizes", "counts+sizes+classifier", "classifier")
SCORE_FLOOR = 1e-3  # the classifier's probabilities enter as log(p + SCORE_FLOOR)
PROBABILITY_FLOOR = 1e-3  # a grade never seen in the fitting photos keeps a little probability
# the rule's probabilities fall off with the distance from its grade, exp(-decay * |g - k|); with no
# graded validation photo to fit the decay by, the count's Poisson-binomial distribution is used
MAX_DECAY = 12.0
# the scales the expected count may be multiplied by (x0.25 to x4, log-spaced): the detector finds a share
# of the lesions, and the sum of its calibrated probabilities counts only what it finds
SCALES: tuple[float, ...] = tuple(float(v) for v in np.geomspace(0.25, 4.0, 49))
EXPECTED = "the expected count through the rule, its scale fitted on the training split"
KINDS = ("rule", "expected", "logistic")
# the grade classifier's weight when pooled with the detector's model: equal weights, fixed rather
# than fitted, so that no parameter of the pooled candidate is fitted on the photos that judge it
POOL = 0.5


def photo_features(
    candidates: pd.DataFrame,
    images: Sequence[str] | pd.Series,
    *,
    ladder: Sequence[float] = DEFAULT_LADDER,
    count_classes: tuple[str, ...] | None = None,
    classes: Sequence[str] = (),
    sides: pd.Series | dict[str, float] | None = None,
    scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The detector's evidence on each photo, one row per photo.

    Args:
        candidates: candidate boxes with *calibrated* ``confidence`` (``image``, ``class``,
            ``x_min``, ``y_min``, ``x_max``, ``y_max``), down to the calibration's floor.
        images: every photo to describe, lesion-free ones too.
        ladder: calibrated confidences to count at.
        count_classes: the classes that count (``None``: all).
        classes: classes with an expected count of their own (lesion types); empty: none.
        sides: each photo's side, ``sqrt(width * height)`` in pixels (the box sizes are relative
            to it); missing photos or ``None``: box-size columns are ``NO_BOX_SIZE``.
        scores: the grade classifier's probabilities (``cls.<k>`` columns, indexed by photo);
            ``None`` or an empty table (no classifier was trained): no classifier columns.

    Returns:
        Columns ``n@<t>`` (log1p of the count at each rung), ``expected`` (log1p of the sum of
        probabilities), ``expected.<class>`` per class, ``size_mean`` and ``size_sd`` (the
        probability-weighted mean and spread of log(box side / photo side)), ``cls.<k>``
        (log of the classifier's probability of grade k, where ``scores`` are given), indexed by photo.

    Raises:
        ValueError: ``scores`` lack a photo.
    """
    images = pd.Index(list(images), name="image")
    boxes = counted_boxes(candidates, count_classes)
    boxes = boxes.assign(confidence=boxes.confidence.astype(float))  # an empty table's column is of objects
    conf = boxes.confidence.to_numpy(float)
    columns: dict[str, pd.Series] = {}
    for t in ladder:
        kept = boxes[conf >= t].groupby("image").size()
        columns[f"n@{t:g}"] = np.log1p(kept.reindex(images).fillna(0.0).astype(float))
    columns["expected"] = np.log1p(boxes.groupby("image").confidence.sum().reindex(images).fillna(0.0).astype(float))
    for name in classes:
        mine = boxes[boxes["class"] == name].groupby("image").confidence.sum()
        columns[f"expected.{name}"] = np.log1p(mine.reindex(images).fillna(0.0).astype(float))
    mean = pd.Series(NO_BOX_SIZE, index=images)
    sd = pd.Series(0.0, index=images)
    side = pd.Series(sides if sides is not None else {}, dtype=float)
    if len(boxes) and len(side):
        w = (boxes.x_max - boxes.x_min).clip(lower=1e-6).to_numpy(float)
        h = (boxes.y_max - boxes.y_min).clip(lower=1e-6).to_numpy(float)
        log_side = np.log(np.sqrt(w * h) / boxes.image.map(side).to_numpy(float))
        sized = pd.DataFrame({"image": boxes.image.to_numpy(), "v": log_side, "p": conf}).dropna()
        sized = sized[np.isfinite(sized.v) & (sized.p > 0)]
        if len(sized):
            total = sized.groupby("image").p.sum()
            m = (sized.v * sized.p).groupby(sized.image).sum() / total
            var = ((sized.v - sized.image.map(m)) ** 2 * sized.p).groupby(sized.image).sum() / total
            mean.update(m)
            sd.update(np.sqrt(var))
    columns["size_mean"], columns["size_sd"] = mean, sd
    if scores is not None and len(scores):
        missing = images.difference(scores.index)
        if len(missing):
            raise ValueError(f"the grade classifier scored no {list(missing[:3])} ({len(missing)} photos)")
        for column in scores.columns:
            columns[column] = np.log(scores[column].reindex(images).astype(float) + SCORE_FLOOR)
    return pd.DataFrame(columns, index=images).astype(float)


def classifier_probabilities(features: pd.DataFrame) -> np.ndarray:
    """The grade classifier's probabilities back from ``photo_features``' ``cls.<k>`` columns, grade
    by grade: an (N, grades) array, (N, 0) where no classifier scored the photos."""
    columns = sorted((c for c in features.columns if c.startswith("cls.")), key=lambda c: int(c.split(".", 1)[1]))
    return np.exp(features[columns].to_numpy(float))


def pooled(p: np.ndarray, classifier: np.ndarray, weight: float) -> np.ndarray:
    """Log-linear pooling of two experts' grade probabilities: ``p^(1-w) * classifier^w``, normalised,
    with the same floor as every model's (a grade one expert rules out is not ruled out for good).

    Args:
        p: (N, grades) probabilities of the detector's model.
        classifier: (N, grades) the grade classifier's (``classifier_probabilities``).
        weight: the classifier's weight ``w`` in [0, 1].
    """
    log = (1 - weight) * np.log(np.clip(p, 1e-12, 1)) + weight * np.log(np.clip(classifier, 1e-12, 1))
    q = np.exp(log - log.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    q = q + PROBABILITY_FLOOR
    return q / q.sum(axis=1, keepdims=True)


def _feature_columns(features: pd.DataFrame, feature_set: str) -> list[str]:
    """The columns a feature set reads: ``counts`` (the ladder, the expected counts), ``+sizes``
    (box sizes), ``+classifier`` (the grade classifier's), or ``classifier`` alone."""
    parts = set(feature_set.split("+"))

    def kind(column: str) -> str:
        return "sizes" if column.startswith("size_") else "classifier" if column.startswith("cls.") else "counts"

    return [c for c in features.columns if kind(c) in parts]


def _feature_sets(features: pd.DataFrame) -> tuple[str, ...]:
    with_classifier = any(c.startswith("cls.") for c in features.columns)
    return tuple(f for f in FEATURE_SETS if with_classifier or "classifier" not in f)


def _targets(grades: np.ndarray, n_grades: int, spread: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and weights that encode each photo's label distribution for a weighted fit:
    ``1 - 2 * spread`` on its grade and ``spread`` on each neighbour (an edge grade keeps the mass
    it cannot give away)."""
    rows, labels, weights = [], [], []
    for i, g in enumerate(grades):
        mass = {g: 1.0}
        if spread > 0:
            for n in (g - 1, g + 1):
                if 0 <= n < n_grades:
                    mass[n] = spread
                    mass[g] -= spread
        for label, w in mass.items():
            rows.append(i)
            labels.append(label)
            weights.append(w)
    return np.array(rows, int), np.array(labels, int), np.array(weights, float)


@dataclass(frozen=True)
class Recipe:
    """The learned model's hyper-parameters, chosen by cross-validation."""

    c: float = 1.0
    spread: float = 0.0
    feature_set: str = "counts+sizes"


def _fit_logistic(x: np.ndarray, grades: np.ndarray, n_grades: int, recipe: Recipe) -> dict[str, Any]:
    """Standardise, then a multinomial logistic regression with the recipe's targets."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    rows, labels, weights = _targets(grades, n_grades, recipe.spread)
    seen = np.unique(labels)
    coef = np.zeros((n_grades, x.shape[1]))
    intercept = np.full(n_grades, -np.inf)
    if seen.size == 1:  # one grade only: it gets all the mass (before the floor)
        intercept[seen[0]] = 0.0
    else:
        fitted = LogisticRegression(C=recipe.c, max_iter=5000).fit(
            (x[rows] - mean) / scale, labels, sample_weight=weights
        )
        if seen.size == 2:  # scikit-learn's binary case: one row for the second class
            coef[seen[1]], intercept[seen[0]], intercept[seen[1]] = fitted.coef_[0], 0.0, fitted.intercept_[0]
        else:
            coef[seen], intercept[seen] = fitted.coef_, fitted.intercept_
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist(), "intercept": intercept.tolist()}


def _logistic_probabilities(x: np.ndarray, fitted: dict[str, Any]) -> np.ndarray:
    z = (x - np.asarray(fitted["mean"])) / np.asarray(fitted["scale"])
    logits = z @ np.asarray(fitted["coef"]).T + np.asarray(fitted["intercept"])
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p = p + PROBABILITY_FLOOR
    return p / p.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class GradeModel:
    """What grades a photo: the count rule, or a logistic model on the detector's evidence.

    Both give each photo one probability per grade; the grade is their argmax, so the grade
    shown and the probabilities shown are one answer. Stored as JSON with the deployed model.

    Attributes:
        kind: ``rule`` (the count at ``threshold`` graded by ``thresholds``, probabilities falling
            off with the distance from that grade by ``decay``; without them, the count's
            Poisson-binomial distribution graded by ``thresholds``), ``expected`` (the expected
            count times ``scale``, graded by ``thresholds``, probabilities falling off by ``decay``)
            or ``logistic``.
        names: the grades' names, mildest first.
        rule_thresholds: the rule on true counts it was made under (a record made under one rule
            is never applied under another: ``check_rule``).
        thresholds: the thresholds the detector's count is graded by (the rule's, or eval's correction).
        count_classes: the classes counted (``None``: all).
        threshold: the operating point the rule counts at (a calibrated confidence).
        decay: how fast the rule's probabilities fall off with the distance from its grade.
        ladder, classes, columns: the evidence the logistic model reads (``photo_features``).
        classifier: the grade classifier whose probabilities it reads (``sha256``, ``imgsz``), when
            its columns are among ``columns``; ``{}`` otherwise.
        fitted: the logistic model's standardisation, coefficients and intercepts.
        pool: the grade classifier's weight in the log-linear pooling of its probabilities with
            the logistic model's (``pooled``); 0: not pooled.
        scale: for ``expected``, what the expected count (the sum of the candidates' calibrated
            probabilities) is multiplied by before the rule grades it, rounded to whole lesions.
        recipe: its hyper-parameters; ``fitted_on``: where it was fitted; ``reason``: why it was chosen.
        validation: each candidate's accuracy on the validation photos (``photos``: how many).
    """

    kind: str = "rule"
    names: tuple[str, ...] = ()
    rule_thresholds: tuple[float, ...] = ()
    thresholds: tuple[float, ...] = ()
    count_classes: tuple[str, ...] | None = None
    threshold: float | None = None
    decay: float | None = None
    ladder: tuple[float, ...] = DEFAULT_LADDER
    classes: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    classifier: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, Any] = field(default_factory=dict)
    pool: float = 0.0
    scale: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    fitted_on: str = ""
    reason: str = ""
    validation: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A stored model that cannot answer is refused when read, not when it grades."""
        if self.kind not in KINDS:
            raise ValueError(f"a grade model of kind {self.kind!r}: the kinds are {', '.join(KINDS)}")
        if self.kind == "expected" and not (self.scale and self.scale > 0 and self.decay is not None):
            raise ValueError(
                f"an expected-count grade model needs a scale > 0 and a decay (got {self.scale}, {self.decay})"
            )

    @classmethod
    def rule(
        cls,
        rule: GradingRule,
        *,
        threshold: float | None = None,
        decay: float | None = None,
        reason: str = "",
        validation: dict[str, float] | None = None,
    ) -> GradeModel:
        """The count rule as a grade model: at ``threshold`` with ``decay`` when both are given,
        else the count's Poisson-binomial distribution."""
        return cls(
            kind="rule",
            names=tuple(rule.names),
            rule_thresholds=tuple(float(t) for t in rule.rule_thresholds),
            thresholds=tuple(float(t) for t in rule.applied),
            count_classes=rule.count_classes,
            threshold=None if threshold is None else float(threshold),
            decay=None if decay is None else float(decay),
            reason=reason,
            validation=dict(validation or {}),
        )

    def rule_probabilities(self) -> np.ndarray:
        """Each rule grade's row of true-grade probabilities: ``exp(-decay * |g - k|)``, normalised.

        Returns:
            A (grades, grades) array; row ``k`` is P(true grade | rule grade ``k``), largest at ``k``.
        """
        return decay_rows(len(self.names), self.decay or 0.0)

    @property
    def grading_rule(self) -> GradingRule:
        """The count rule this model carries (what counts, the count's thresholds)."""
        return GradingRule(
            rule_thresholds=self.rule_thresholds,
            names=self.names,
            count_classes=self.count_classes,
            thresholds=self.thresholds,
        )

    @property
    def uses_classifier(self) -> bool:
        """Whether its grades read the grade classifier's probabilities (then pass ``scores``)."""
        return self.pool > 0 or any(c.startswith("cls.") for c in self.columns)

    def features(
        self, candidates: pd.DataFrame, images: Sequence[str], sides: Any = None, scores: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """``photo_features`` with this model's ladder and classes (``scores``: the classifier's, if given)."""
        return photo_features(
            candidates,
            images,
            ladder=self.ladder,
            count_classes=self.count_classes,
            classes=self.classes,
            sides=sides,
            scores=scores,
        )

    def probabilities(
        self,
        candidates: pd.DataFrame,
        images: Sequence[str],
        sides: Any = None,
        scores: pd.DataFrame | None = None,
    ) -> np.ndarray:
        """Each photo's probability of each grade.

        Args:
            candidates: the photos' candidate boxes, calibrated (``photo_features``).
            images: the photos, in the order of the rows returned.
            sides: each photo's side in pixels (``photo_features``).
            scores: the grade classifier's probabilities of the photos (needed when ``uses_classifier``;
                ``None`` or empty: none).

        Returns:
            An (N, grades) array; rows sum to 1.

        Raises:
            ValueError: the model reads the grade classifier and no ``scores`` were given.
        """
        images = list(images)
        if self.kind == "rule" and (self.threshold is None or self.decay is None):
            return self.grading_rule.probabilities(candidates, pd.Series(images, dtype=object))
        if self.kind == "rule":
            counted = candidates[candidates.confidence >= self.threshold]
            graded = self.grading_rule.grade(self.grading_rule.count(counted, pd.Series(images, dtype=object)))
            return self.rule_probabilities()[np.asarray(graded, int)].reshape(len(images), len(self.names))
        if self.kind == "expected":  # the rule's own thresholds: the scale is this model's correction
            graded = replace(self.grading_rule, thresholds=None).grade(self._scaled_counts(candidates, images))
            return self.rule_probabilities()[np.asarray(graded, int)].reshape(len(images), len(self.names))
        if self.uses_classifier and (scores is None or not len(scores)):
            raise ValueError("this grade model reads the grade classifier's probabilities: pass the photos' scores")
        x = self.features(candidates, images, sides, scores if self.uses_classifier else None)
        p = _logistic_probabilities(x[list(self.columns)].to_numpy(float), self.fitted)
        if self.pool > 0:
            p = pooled(p, classifier_probabilities(x), self.pool)
        return p.reshape(len(images), len(self.names))

    def estimated_counts(self, candidates: pd.DataFrame, images: Sequence[str]) -> np.ndarray | None:
        """Each photo's lesion count as this model grades it, where it grades an estimated count
        (``expected``: the sum of its candidates' calibrated probabilities times ``scale``, in whole
        lesions); ``None`` for a model that estimates no count (the rule grades the lesions found)."""
        return self._scaled_counts(candidates, images) if self.kind == "expected" else None

    def _scaled_counts(self, candidates: pd.DataFrame, images: Sequence[str]) -> np.ndarray:
        expected = np.expm1(self.features(candidates, list(images))["expected"].to_numpy(float))
        return scaled_counts(expected, float(self.scale))  # type: ignore[arg-type] - checked in __post_init__

    @staticmethod
    def grades(probabilities: np.ndarray) -> np.ndarray:
        """The grade shown: the most probable one."""
        return np.asarray(probabilities).argmax(axis=1).astype(int)

    def check_rule(self, rule: GradingRule) -> None:
        """Refuse to grade under a rule other than the one this model was made under.

        Raises:
            GradeRuleMismatch: naming both rules.
        """
        mine = GradingRule(rule_thresholds=self.rule_thresholds, names=self.names, count_classes=self.count_classes)
        if (
            tuple(map(float, rule.rule_thresholds)) != tuple(map(float, self.rule_thresholds))
            or tuple(rule.names) != tuple(self.names)
            or (rule.count_classes or None) != (self.count_classes or None)
        ):
            raise GradeRuleMismatch(
                f"this model's grades were made under the rule '{mine.legend()}', but the grading parameters "
                f"say '{rule.legend()}'. Predict under the model's rule (set `grading` to it), or run "
                "`kedro run --pipeline eval` under the new rule to make the model's grades for it."
            )

    def describe(self) -> str:
        if self.kind == "rule":
            return f"the count rule ({self.grading_rule.legend()})"
        if self.kind == "expected":
            return (
                f"the expected lesion count (the sum of the detector's calibrated probabilities) x {self.scale:.2f}, "
                f"graded by the count rule ({self.grading_rule.legend()})"
            )
        if self.pool > 0:
            return (
                f"a logistic grade model on the detector's evidence, fitted on the {self.fitted_on}, "
                "pooled with the grade classifier's probabilities"
            )
        signal = " and the grade classifier's" if self.uses_classifier else ""
        return f"a logistic grade model on the detector's evidence{signal}, fitted on the {self.fitted_on}"

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["fitted"] = {k: _finite(v) for k, v in self.fitted.items()}
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> GradeModel | None:
        """A stored model; ``None`` or ``{}``: none was stored."""
        if not record or "kind" not in record:
            return None
        known = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        for key in ("names", "rule_thresholds", "thresholds", "ladder", "classes", "columns"):
            if key in known and known[key] is not None:
                known[key] = tuple(known[key])
        if known.get("count_classes"):
            known["count_classes"] = tuple(known["count_classes"])
        if "fitted" in known:
            known["fitted"] = {k: _unfinite(v) for k, v in known["fitted"].items()}
        return cls(**known)


class GradeRuleMismatch(ValueError):
    """A grade model applied under a grading rule other than its own."""


def _finite(value: Any) -> Any:
    """JSON has no infinity: a grade never seen in the fit has its intercept stored as ``null``."""
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isinf(value) else value


def _unfinite(value: Any) -> Any:
    if isinstance(value, list):
        return [_unfinite(v) for v in value]
    return -math.inf if value is None else value


@dataclass(frozen=True)
class Evidence:
    """Photos with their evidence, true grade and source-photo group (copies share one)."""

    features: pd.DataFrame
    grades: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, features: pd.DataFrame, grades: pd.Series, groups: pd.Series) -> Evidence:
        """Only photos with a true grade; ``grades`` and ``groups`` indexed like ``features``."""
        known = grades.reindex(features.index).notna().to_numpy()
        return cls(
            features[known],
            grades.reindex(features.index)[known].astype(int).to_numpy(),
            groups.reindex(features.index)[known].astype(str).to_numpy(),
        )

    def __len__(self) -> int:
        return len(self.grades)


def _folds(evidence: Evidence, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped, grade-stratified folds (scikit-learn's StratifiedGroupKFold), fewer when groups are few."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = min(n_folds, len(np.unique(evidence.groups)))
    if k < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a grade with fewer photos than folds is expected on small splits
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(evidence.features, evidence.grades, evidence.groups))


def _log_loss(p: np.ndarray, grades: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(grades)), grades], 1e-12, 1)).mean())


def _recipes(features: pd.DataFrame) -> list[Recipe]:
    return [Recipe(c, s, f) for f in _feature_sets(features) for s in LABEL_SPREADS for c in C_GRID]


def _choose_recipe(evidence: Evidence, n_grades: int, *, seed: int) -> Recipe:
    """The recipe of least grouped cross-validated log loss (the probabilities are what is shown)."""
    folds = _folds(evidence, 5, seed)
    if not folds:
        return Recipe()
    best, best_loss = Recipe(), np.inf
    for recipe in _recipes(evidence.features):
        cols = _feature_columns(evidence.features, recipe.feature_set)
        x = evidence.features[cols].to_numpy(float)
        p = np.zeros((len(evidence), n_grades))
        for fit, held in folds:
            p[held] = _logistic_probabilities(x[held], _fit_logistic(x[fit], evidence.grades[fit], n_grades, recipe))
        loss = _log_loss(p, evidence.grades)
        if loss < best_loss - 1e-9:
            best, best_loss = recipe, loss
    return best


def beats(model_right: np.ndarray, rule_right: np.ndarray, groups: Sequence[Any] | np.ndarray | None = None) -> float:
    """How surely a model grades better than the rule on the same photos: a one-sided exact paired
    test over source photos.

    Copies of one source photo (a Roboflow export holds three of each) are not independent evidence:
    a model that grades one copy better tends to grade all three better. So the unit is the source
    photo: ``d`` is, per source, how many of its photos the model grades right minus how many the rule
    does, and under "neither grades better" each source's ``d`` is as likely negative as positive.
    The p-value is the exact probability, over the ``2^k`` sign flips of the ``k`` nonzero ``d``, of a
    sum at least the one seen (a randomization test; computed by convolution, since ``k`` may be 40).
    With one photo per source it is exactly the one-sided exact McNemar test (the binomial test on
    the photos only one of them grades right). Written here rather than taken from
    ``scipy.stats.permutation_test``, which enumerates the flips (or samples them): the tests hold the
    two equal where scipy can enumerate, and this one to ``binomtest`` with one photo per source.

    Args:
        model_right: per photo, whether the model grades it right.
        rule_right: per photo, whether the rule does.
        groups: each photo's source photo; ``None``: every photo is its own source.

    Returns:
        The p-value of "the model is right on no more of them than the rule"; 1 when they never disagree.
    """
    diff = np.asarray(model_right, int) - np.asarray(rule_right, int)
    if groups is not None:  # a photo with no source is its own
        diff = pd.Series(diff).groupby(source_keys(groups, len(diff))).sum().to_numpy()
    return sign_flip_p(diff)


def _p(value: float, digits: int) -> str:
    """A p-value in words: 0.090, "< 0.001" where it rounds to nothing, and a digit more where it
    would round onto ``SIGNIFICANCE`` (0.0996 is 0.0996, not 0.100, beside "kept at p < 0.1")."""
    if value < 10**-digits:
        return f"< {10**-digits:.{digits}f}"
    near = round(value, digits) == SIGNIFICANCE and value != SIGNIFICANCE
    return f"{value:.{digits + 1 if near else digits}f}"


def sign_flip_p(diff: np.ndarray) -> float:
    """The one-sided exact sign-flip p-value of integer paired differences: the probability that
    ``sum(s_i * |d_i|)``, each sign ``s_i`` +1 or -1 with probability 1/2, is at least ``sum(d_i)``;
    1 when every difference is 0."""
    d = np.abs(np.asarray(diff, int))
    d = d[d > 0]
    if not len(d):
        return 1.0
    observed = int(np.asarray(diff, int).sum())
    total = int(d.sum())
    mass = np.zeros(2 * total + 1)  # the distribution of the flipped sum, offset by total
    mass[total] = 1.0
    for a in d:
        mass = 0.5 * (np.roll(mass, a) + np.roll(mass, -a))  # the support stays inside: |sum| <= total
    return float(min(1.0, mass[observed + total :].sum()))


def decay_rows(n_grades: int, decay: float) -> np.ndarray:
    """``P(true grade g | rule grade k)`` proportional to ``exp(-decay * |g - k|)``: an (n, n) array."""
    distance = np.abs(np.subtract.outer(np.arange(n_grades), np.arange(n_grades)))
    rows = np.exp(-decay * distance)
    return rows / rows.sum(axis=1, keepdims=True)


def fit_decay(rule_grades: np.ndarray, truth: np.ndarray, n_grades: int) -> float:
    """The decay of maximum likelihood for the true grades given the rule's (scipy's bounded
    scalar minimiser over ``[0, MAX_DECAY]``; one parameter, so the rule's probabilities say how
    often it is right, and how far off when wrong, as validation saw it)."""
    from scipy.optimize import minimize_scalar

    def loss(decay: float) -> float:
        return _log_loss(decay_rows(n_grades, decay)[rule_grades], truth)

    return float(minimize_scalar(loss, bounds=(0.0, MAX_DECAY), method="bounded").x)


def scaled_counts(expected: np.ndarray, scale: float) -> np.ndarray:
    """Expected counts times ``scale``, rounded to whole lesions (the rule grades counts of lesions)."""
    return np.rint(np.asarray(expected, float) * scale).astype(int)


def fit_scale(expected: np.ndarray, grades: np.ndarray, rule: GradingRule) -> float:
    """The scale of the expected count that grades the photos best under the rule: the most
    accurate of ``SCALES``, the geometric middle of the longest run of neighbouring scales that
    tie (a one-parameter fit, so the detector's optimism on its own training photos moves it
    little; eval reports how it grades validation photos it never saw).

    Args:
        expected: each photo's expected count (the sum of its candidates' calibrated probabilities).
        grades: its true grade.
        rule: the rule that grades the scaled count (its own thresholds).
    """
    accuracy = np.array([(rule.grade(scaled_counts(expected, s)) == grades).mean() for s in SCALES])
    tied = np.flatnonzero(accuracy >= accuracy.max() - 1e-12)
    runs = np.split(tied, np.flatnonzero(np.diff(tied) > 1) + 1)  # ties apart are apart: a gap between grades worse
    longest = np.asarray(SCALES)[max(runs, key=len)]
    return float(np.exp(np.log(longest).mean()))


def _fit_on_train(
    train: Evidence, val: Evidence, n_grades: int
) -> tuple[list[str], dict[str, Any], Recipe, np.ndarray]:
    """The model fitted on the training split, its recipe the one of least log loss on validation.

    The detector's evidence on its own training photos is optimistic (it found more of their
    lesions than it will of new photos'), so cross-validation inside the training split picks
    the wrong recipe; validation photos tell how the fit transfers. The grade classifier's
    scores are left out here: on its own training photos it is nearly always right, and a model
    fitted there would trust it far beyond what it earns on new photos.

    Returns:
        The columns read, the fitted model, its recipe and its probabilities on the validation photos.
    """
    best: tuple[float, list[str], dict[str, Any], Recipe, np.ndarray] | None = None
    for recipe in _recipes(train.features):
        if "classifier" in recipe.feature_set:
            continue
        cols, fitted = _fit(train, n_grades, recipe)
        p = _logistic_probabilities(val.features[cols].to_numpy(float), fitted)
        loss = _log_loss(p, val.grades)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, cols, fitted, recipe, p)
    assert best is not None
    return best[1], best[2], best[3], best[4]


def _fit(evidence: Evidence, n_grades: int, recipe: Recipe) -> tuple[list[str], dict[str, Any]]:
    cols = _feature_columns(evidence.features, recipe.feature_set)
    return cols, _fit_logistic(evidence.features[cols].to_numpy(float), evidence.grades, n_grades, recipe)


def _cross_fitted(evidence: Evidence, n_grades: int, *, seed: int) -> np.ndarray:
    """Out-of-fold probabilities on ``evidence``, the recipe chosen inside each fold (nested
    cross-validation: no photo is scored by a model or a recipe that saw it)."""
    p = np.zeros((len(evidence), n_grades))
    for fit, held in _folds(evidence, 5, seed):
        inner = Evidence(evidence.features.iloc[fit], evidence.grades[fit], evidence.groups[fit])
        cols, fitted = _fit(inner, n_grades, _choose_recipe(inner, n_grades, seed=seed))
        p[held] = _logistic_probabilities(evidence.features.iloc[held][cols].to_numpy(float), fitted)
    return p


def choose_grade_model(
    rule: GradingRule,
    val: Evidence,
    val_rule_grades: np.ndarray,
    *,
    threshold: float,
    train: Evidence | None = None,
    ladder: Sequence[float] = DEFAULT_LADDER,
    classes: Sequence[str] = (),
    classifier: dict[str, Any] | None = None,
    seed: int = 0,
    learn: bool = True,
) -> tuple[GradeModel, pd.DataFrame]:
    """Choose, on validation photos only, what grades photos: the rule or a learned model.

    Candidates: the rule (the count at the operating point graded by it; its probabilities fall
    off with the distance from its grade at the rate fitted here, ``fit_decay``); a logistic model
    fitted on the training split's evidence (its recipe the one of least validation log loss,
    ``_fit_on_train``), scored on validation; the expected count (the sum of the calibrated
    probabilities) times a scale fitted on the training split (``fit_scale``), graded by the rule,
    its probabilities falling off like the rule's; and one cross-fitted on the validation split, scored
    out of fold (nested: the recipe is chosen inside
    each fold). A learned model is kept only when its validation accuracy is strictly higher than
    the rule's, beyond chance (a one-sided exact paired test over source photos, ``beats``: the
    exact McNemar test where each source has one photo; p < ``SIGNIFICANCE``), on
    at least ``MIN_GRADED_PHOTOS`` photos; otherwise the rule (its log loss breaks ties between
    the two learned ones).

    Args:
        rule: the grading rule (with eval's count correction, if any).
        val: the validation photos' evidence (``photo_features``), true grades and groups.
        val_rule_grades: the rule's grade of each of those photos (its count at ``threshold``), in their order.
        threshold: the operating point the rule counts at.
        train: the training photos' evidence, where it was predicted (``None``: not a candidate).
        ladder, classes: what ``photo_features`` was given.
        classifier: the grade classifier whose scores are among the evidence (``sha256``, ``imgsz``).
        seed: the folds' seed.
        learn: ``False``: the rule, without fitting a learned candidate (``grading.model: rule``).

    Returns:
        The chosen ``GradeModel`` and one row per candidate (``candidate``, ``photos``,
        ``accuracy``, ``log_loss``, ``brier``, ``chosen``).
    """
    n = len(rule.names)
    truth = val.grades
    rows: list[dict[str, Any]] = []
    right: dict[str, np.ndarray] = {}  # each candidate: which validation photos it grades right

    def _score(name: str, p: np.ndarray, graded: np.ndarray) -> None:
        right[name] = graded == truth
        rows.append(
            {
                "candidate": name,
                "photos": len(val),
                "accuracy": float(right[name].mean()) if len(val) else np.nan,
                "log_loss": _log_loss(p, truth) if len(val) else np.nan,
                "brier": float(((p - np.eye(n)[truth]) ** 2).sum(axis=1).mean()) if len(val) else np.nan,
            }
        )

    rule_grades = np.asarray(val_rule_grades, int)
    decay = fit_decay(rule_grades, truth, n) if len(val) else None
    _score("rule", decay_rows(n, decay or 0.0)[rule_grades], rule_grades)  # the rule's own grade, always
    learned: dict[str, tuple[list[str], dict[str, Any], Recipe, float]] = {}  # columns, fit, recipe, pool
    expected_fit: tuple[float, float] | None = None  # the expected-count candidate's scale and decay
    if learn and len(val) >= MIN_GRADED_PHOTOS:
        if train is not None and len(train) >= MIN_GRADED_PHOTOS:
            cols, fitted, recipe, p = _fit_on_train(train, val, n)
            learned["logistic, fitted on the training split"] = (cols, fitted, recipe, 0.0)
            _score("logistic, fitted on the training split", p, p.argmax(axis=1))
            scored = classifier_probabilities(val.features)
            if scored.shape[1]:
                name = "logistic, fitted on the training split, pooled with the grade classifier"
                p = pooled(p, scored, POOL)
                learned[name] = (cols, fitted, recipe, POOL)
                _score(name, p, p.argmax(axis=1))
            # the expected count, scaled: one parameter fitted on the training split, graded by the rule's thresholds
            plain = replace(rule, thresholds=None)
            scale = fit_scale(np.expm1(train.features["expected"].to_numpy(float)), train.grades, plain)
            graded = plain.grade(scaled_counts(np.expm1(val.features["expected"].to_numpy(float)), scale))
            expected_fit = (scale, fit_decay(graded, truth, n))
            _score(EXPECTED, decay_rows(n, expected_fit[1])[graded], graded)
        if len(np.unique(val.groups)) >= 5:
            name = "logistic, cross-fitted on the validation split"
            p = _cross_fitted(val, n, seed=seed)
            _score(name, p, p.argmax(axis=1))
            recipe = _choose_recipe(val, n, seed=seed)
            cols, fitted = _fit(val, n, recipe)
            learned[name] = (cols, fitted, recipe, 0.0)
    table = pd.DataFrame(rows)
    chosen_name = "rule"
    rule_accuracy = float(table.accuracy.iloc[0]) if len(val) else np.nan
    scores = {r["candidate"]: r["accuracy"] for r in rows}
    best = table[table.candidate != "rule"].sort_values(["accuracy", "log_loss"], ascending=[False, True])
    best_name = str(best.candidate.iloc[0]) if len(best) else ""
    better = bool(best_name) and best.accuracy.iloc[0] > rule_accuracy
    evidence = beats(right[best_name], right["rule"], val.groups) if better else 1.0
    sources = len(set(source_keys(val.groups, len(val))))
    test = f"one-sided exact paired test over {sources} source photos" if sources < len(val) else "one-sided McNemar"
    if not len(val):  # no graded validation photo: the count's Poisson-binomial distribution
        chosen = GradeModel.rule(rule, reason="no validation photo has a true grade: the rule", validation=scores)
    elif not learn:
        chosen = GradeModel.rule(rule, threshold=threshold, decay=decay, reason="grading.model is rule")
    elif len(val) < MIN_GRADED_PHOTOS:
        reason = f"only {len(val)} validation photos with a true grade (fewer than {MIN_GRADED_PHOTOS}): the rule"
        chosen = GradeModel.rule(rule, threshold=threshold, decay=decay, reason=reason, validation=scores)
    elif not (better and evidence < SIGNIFICANCE):
        top = f"{best.accuracy.iloc[0]:.3f}" if best_name else "none fitted"
        why = f", {test} p {_p(evidence, 2)}" if better else ""
        reason = (
            f"no learned model beat the rule on {len(val)} validation photos (best {top}, rule {rule_accuracy:.3f}"
            f"{why}; a learned model is kept at p < {SIGNIFICANCE})"
        )
        chosen = GradeModel.rule(rule, threshold=threshold, decay=decay, reason=reason, validation=scores)
    else:
        chosen_name = best_name
        made_under = {  # what every learned model carries: the rule it was made under, where it counts, the evidence
            "names": tuple(rule.names),
            "rule_thresholds": tuple(float(t) for t in rule.rule_thresholds),
            "count_classes": rule.count_classes,
            "threshold": float(threshold),
            "ladder": tuple(float(t) for t in ladder),
            "classes": tuple(classes),
            "validation": scores,
        }
        why = (
            f"{best.accuracy.iloc[0]:.3f} of {len(val)} validation photos graded right, "
            f"against the rule's {rule_accuracy:.3f} ({test} p {_p(evidence, 3)})"
        )
        if best_name == EXPECTED and expected_fit is not None:
            chosen = GradeModel(
                kind="expected",
                thresholds=tuple(float(t) for t in rule.applied),  # the count rule's, as eval grades its count
                decay=expected_fit[1],
                scale=expected_fit[0],
                fitted_on="training split",
                reason=f"{best_name} (x {expected_fit[0]:.2f}): {why}",
                **made_under,
            )
        else:
            cols, fitted, recipe, pool = learned[best_name]
            chosen = GradeModel(
                kind="logistic",
                thresholds=tuple(float(t) for t in rule.applied),
                columns=tuple(cols),
                classifier=dict(classifier or {}),
                fitted=fitted,
                pool=pool,
                recipe=asdict(recipe),
                fitted_on=best_name.split("on the ", 1)[1].split(",", 1)[0],
                reason=f"{best_name}: {why}",
                **made_under,
            )
            if not chosen.uses_classifier:  # the classifier travels with a model only when its grades read it
                chosen = replace(chosen, classifier={})
    table["chosen"] = table.candidate == chosen_name
    return chosen, table
