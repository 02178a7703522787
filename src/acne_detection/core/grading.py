"""Acne severity from lesion counts: the count→grade rule, where true grades come from, and
how well predicted grades agree with them.

The convention is ACNE04's (Wu et al., "Joint Acne Image Grading and Counting via Label
Distribution Learning", ICCV 2019), whose own code grades a photo by its lesion count:
0-5 lesions → 0 (mild), 6-20 → 1 (moderate), 21-50 → 2 (severe), more than 50 → 3 (very
severe). Hayashi's clinical criterion uses the same thresholds on inflammatory lesions
(papules and pustules) only; ``count_classes`` does that. The published grading accuracy on
ACNE04 is 84.1 %.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

ACNE04_THRESHOLDS = (5, 20, 50)
ACNE04_GRADE_NAMES = ("mild", "moderate", "severe", "very severe")


def severity_grade(
    counts: Sequence[int] | np.ndarray | int, thresholds: Sequence[int] = ACNE04_THRESHOLDS
) -> np.ndarray:
    """The severity grade of each lesion count: how many thresholds the count exceeds.

    With ACNE04's thresholds (5, 20, 50): 0-5 → 0, 6-20 → 1, 21-50 → 2, 51 or more → 3.

    Args:
        counts: lesions per photo (non-negative integers), a scalar or an array.
        thresholds: the largest count of each grade but the last, ascending.

    Returns:
        An integer array of grades, the shape of ``counts``.
    """
    return np.searchsorted(np.asarray(thresholds), np.asarray(counts), side="left").astype(int)


@dataclass(frozen=True)
class GradingRule:
    """The grading rule as everything downstream uses it: eval's grading table, predict's summary,
    report and annotated copies, the served model's answer and its registered configuration. A
    rule set only in config (``grading`` parameters: any number of grades) reaches all of them
    through this one object.

    ``rule_thresholds`` are the rule on true lesion counts (what the legend states);
    ``thresholds`` grade a model's own count: the rule's, or eval's count correction of them.
    """

    rule_thresholds: tuple[float, ...] = ACNE04_THRESHOLDS
    names: tuple[str, ...] = ACNE04_GRADE_NAMES
    count_classes: tuple[str, ...] | None = None
    thresholds: tuple[float, ...] | None = None  # None: the rule's own

    def __post_init__(self) -> None:
        if len(self.names) != len(self.rule_thresholds) + 1:
            raise ValueError(f"{len(self.rule_thresholds)} thresholds need {len(self.rule_thresholds) + 1} grade names")
        if self.thresholds is not None and len(self.thresholds) != len(self.rule_thresholds):
            raise ValueError(f"corrected thresholds {list(self.thresholds)} do not match the rule's grades")
        if self.thresholds is not None and tuple(map(float, self.thresholds)) == tuple(
            map(float, self.rule_thresholds)
        ):
            object.__setattr__(self, "thresholds", None)  # no correction: one way to say it

    @classmethod
    def from_params(cls, grading: Any, corrected: Sequence[float] | None = None) -> GradingRule:
        """From the ``grading`` parameters (a ``GradingParams``), with eval's corrected thresholds if any."""
        return cls(
            rule_thresholds=tuple(grading.thresholds),
            names=tuple(grading.names),
            count_classes=tuple(grading.count_classes) if grading.count_classes else None,
            thresholds=tuple(float(t) for t in corrected) if corrected else None,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GradingRule:
        """From a registered model's configuration (``to_config``'s keys); missing keys: the defaults."""
        rule = tuple(config.get("rule_thresholds") or config.get("thresholds") or ACNE04_THRESHOLDS)
        return cls(
            rule_thresholds=rule,
            names=tuple(config.get("names") or ACNE04_GRADE_NAMES),
            count_classes=tuple(config.get("count_classes") or ()) or None,
            thresholds=tuple(config["thresholds"]) if config.get("thresholds") else None,
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.applied),
            "rule_thresholds": list(self.rule_thresholds),
            "names": list(self.names),
            "count_classes": list(self.count_classes) if self.count_classes else None,
        }

    @property
    def applied(self) -> tuple[float, ...]:
        """The thresholds a model's count is graded by."""
        return self.thresholds if self.thresholds is not None else self.rule_thresholds

    def grade(self, counts: Sequence[int] | np.ndarray | int) -> np.ndarray:
        return severity_grade(counts, self.applied)

    def counted(self, boxes: pd.DataFrame) -> pd.DataFrame:
        """The boxes of the classes that count."""
        return counted_boxes(boxes, self.count_classes)

    def count(self, boxes: pd.DataFrame, images: pd.Series) -> pd.Series:
        return count_lesions(boxes, images, self.count_classes)

    def probabilities(self, candidates: pd.DataFrame, images: pd.Series) -> np.ndarray:
        return photo_grade_probabilities(candidates, images, self.applied, self.count_classes)

    def legend(self) -> str:
        """``"0-5 mild, 6-20 moderate, 21-50 severe, more than 50 very severe"`` (the rule on true counts)."""
        parts, low = [], 0
        for limit, name in zip(self.rule_thresholds, self.names, strict=False):
            high = int(np.floor(limit))
            parts.append(f"{low}-{high} {name}" if high > low else f"{low} {name}")
            low = high + 1
        parts.append(
            f"more than {int(np.floor(self.rule_thresholds[-1]))} {self.names[-1]}"
            if self.rule_thresholds
            else f"any count {self.names[-1]}"
        )
        return ", ".join(parts)

    def colours(self) -> list[str]:
        """One colour per grade, green (the mildest) through amber to red (the most severe)."""
        stops = np.array([[0x33, 0xAA, 0x33], [0xDD, 0xBB, 0x33], [0xEE, 0x77, 0x33], [0xCC, 0x22, 0x22]], float)
        at = np.linspace(0, len(stops) - 1, len(self.names))  # each grade's place along the stops
        rgb = np.stack([np.interp(at, np.arange(len(stops)), stops[:, c]) for c in range(3)], axis=1)
        return ["#" + "".join(f"{round(v):02x}" for v in c) for c in rgb]


def count_distribution(probabilities: Sequence[float] | np.ndarray) -> np.ndarray:
    """The distribution of a photo's lesion count when each detection is a true lesion with its
    own probability, independently: the Poisson-binomial distribution.

    Computed by the standard recurrence (one convolution with ``[1 - p, p]`` per detection,
    O(n^2), exact in floating point for the few hundred detections a photo has); no library
    the project uses provides it (scipy has the binomial only), and the tests hold it equal to
    enumerating every subset of detections.

    Args:
        probabilities: each detection's probability of being a true lesion, in [0, 1].

    Returns:
        ``pmf[k]`` = P(count = k), for k = 0..n; sums to 1.
    """
    p = np.clip(np.asarray(probabilities, dtype=float).ravel(), 0.0, 1.0)
    pmf = np.zeros(p.size + 1)
    pmf[0] = 1.0
    for i, q in enumerate(p, start=1):
        pmf[1 : i + 1] = pmf[1 : i + 1] * (1 - q) + pmf[:i] * q
        pmf[0] *= 1 - q
    return pmf


def grade_probabilities(
    probabilities: Sequence[float] | np.ndarray, thresholds: Sequence[int] = ACNE04_THRESHOLDS
) -> np.ndarray:
    """The probability of each severity grade, from the count's distribution (``count_distribution``)
    and the count→grade rule (``severity_grade``).

    Args:
        probabilities: each detection's probability of being a true lesion.
        thresholds: the grading rule's thresholds.

    Returns:
        One probability per grade (``len(thresholds) + 1``), summing to 1.
    """
    pmf = count_distribution(probabilities)
    grades = severity_grade(np.arange(pmf.size), thresholds)
    return np.bincount(grades, weights=pmf, minlength=len(thresholds) + 1)


def photo_grade_probabilities(
    candidates: pd.DataFrame,
    images: pd.Series,
    thresholds: Sequence[int],
    count_classes: tuple[str, ...] | None,
) -> np.ndarray:
    """Each photo's grade probabilities from its candidate detections' probabilities of being
    true lesions (``grade_probabilities``), of the classes that count.

    Args:
        candidates: boxes with calibrated ``confidence`` (``image``, ``class``).
        images: the photos, lesion-free ones too.
        thresholds: the grading rule.
        count_classes: the classes counted (``None``: all).

    Returns:
        One row per photo, one column per grade; rows sum to 1.
    """
    counted = counted_boxes(candidates, count_classes)
    by_image = {image: group.confidence.to_numpy(float) for image, group in counted.groupby("image")}
    return np.array([grade_probabilities(by_image.get(image, np.zeros(0)), thresholds) for image in images]).reshape(
        len(images), len(thresholds) + 1
    )


def describe_grade_probabilities(probabilities: Sequence[float], names: Sequence[str], *, least: float = 0.01) -> str:
    """``"moderate 72 %, severe 26 %"``: the grades of at least ``least`` probability, likeliest first."""
    ranked = sorted(zip(probabilities, names, strict=True), key=lambda pair: -pair[0])
    return ", ".join(f"{name} {p:.0%}".replace("%", " %") for p, name in ranked if p >= least)


def counted_boxes(boxes: pd.DataFrame, count_classes: tuple[str, ...] | None) -> pd.DataFrame:
    """The boxes of the classes that count (all when ``count_classes`` is ``None``)."""
    return boxes if count_classes is None else boxes[boxes["class"].isin(count_classes)]


def count_lesions(boxes: pd.DataFrame, images: pd.Series, count_classes: tuple[str, ...] | None) -> pd.Series:
    """Lesions per image, of the classes that count (all when ``count_classes`` is ``None``).

    Args:
        boxes: one row per lesion (``image``, ``class``).
        images: every image to count on, including those without a box.
        count_classes: the classes counted (Hayashi counts papules and pustules).

    Returns:
        The count per image, aligned with ``images``.
    """
    return images.map(counted_boxes(boxes, count_classes).groupby("image").size()).fillna(0).astype(int)


def grade_photos(
    predictions: pd.DataFrame,
    true_boxes: pd.DataFrame,
    photos: pd.DataFrame,
    true_grades: pd.Series,
    *,
    threshold: float,
    thresholds: Sequence[int],
    count_classes: tuple[str, ...] | None,
) -> pd.DataFrame:
    """Count and grade photos from their true boxes and from the detector's, at a threshold.

    Args:
        predictions: predicted boxes (``image``, ``class``, ``confidence``).
        true_boxes: the true boxes of these photos.
        photos: one row per photo (``image``, ``image_id``), lesion-free ones too.
        true_grades: each photo's true grade, indexed by ``image_id`` (missing: unknown).
        threshold: predictions below this confidence are not counted.
        thresholds: the grading rule.
        count_classes: the classes counted (``None``: all).

    Returns:
        ``photos`` with ``true_count``, ``pred_count``, ``true_grade`` (``<NA>`` where unknown),
        ``count_grade`` (the grade of the true count) and ``pred_grade``.
    """
    photos = photos[["image", "image_id"]].reset_index(drop=True)
    kept = predictions[predictions.confidence >= threshold]
    graded = photos.assign(
        true_count=count_lesions(true_boxes, photos.image, count_classes),
        pred_count=count_lesions(kept, photos.image, count_classes),
    )
    grade = pd.to_numeric(photos.image_id.map(true_grades), errors="coerce")
    graded["true_grade"] = grade.astype("Int64")
    graded["count_grade"] = severity_grade(graded.true_count, thresholds)
    graded["pred_grade"] = severity_grade(graded.pred_count, thresholds)
    return graded


MIN_CORRECTION_PHOTOS = 20  # fewer validation photos with a true grade cannot choose between two gradings


def fit_count_correction(
    pred_counts: np.ndarray, true_counts: np.ndarray, true_grades: np.ndarray, thresholds: Sequence[int]
) -> dict[str, Any]:
    """A scale from the detector's lesion count to the true count (least squares through the
    origin), and whether grading the scaled count grades photos better than the rule itself.

    A detector that misses a third of the lesions counts 14 where there are 21: the rule calls
    the photo moderate, the truth is severe. Scaling the count by ``s`` is grading the detector's
    own count with thresholds ``t / s``, so the correction is stored as those thresholds and the
    grade probabilities (``grade_probabilities``) use them too: one grade, one distribution.

    Args:
        pred_counts: the detector's count per photo (validation photos).
        true_counts: the true count per photo.
        true_grades: each photo's true grade (``-1`` where unknown; those photos are not scored).
        thresholds: the grading rule.

    Returns:
        ``scale``, ``thresholds`` (on the detector's count), ``photos`` scored,
        ``accuracy_rule`` and ``accuracy_corrected`` on them, and ``used`` (only when strictly
        better on at least ``MIN_CORRECTION_PHOTOS`` photos), with ``reason``.
    """
    pred, true = np.asarray(pred_counts, float), np.asarray(true_counts, float)
    graded = np.asarray(true_grades) >= 0
    denominator = float((pred**2).sum())
    scale = float((pred * true).sum() / denominator) if denominator > 0 else 1.0
    record: dict[str, Any] = {"scale": scale, "photos": int(graded.sum())}
    if scale <= 0 or not graded.any():
        return {
            **record,
            "thresholds": list(thresholds),
            "used": False,
            "reason": "no validation photo with a true grade and a detection" if scale > 0 else "no positive scale",
        }
    adjusted = [float(t) / scale for t in thresholds]
    truth = np.asarray(true_grades)[graded]
    rule = float((severity_grade(pred[graded], thresholds) == truth).mean())
    corrected = float((severity_grade(pred[graded], adjusted) == truth).mean())
    enough = int(graded.sum()) >= MIN_CORRECTION_PHOTOS
    used = corrected > rule and enough
    return {
        **record,
        "thresholds": adjusted if used else list(thresholds),
        "accuracy_rule": rule,
        "accuracy_corrected": corrected,
        "used": used,
        "reason": (
            f"grades {corrected:.3f} of the validation photos right against the rule's {rule:.3f}"
            if used
            else f"not better on validation ({corrected:.3f} against the rule's {rule:.3f})"
            if enough
            else f"only {int(graded.sum())} validation photos with a true grade (fewer than {MIN_CORRECTION_PHOTOS})"
        ),
    }


def grades_from_names(image_ids: pd.Series, pattern: str | None) -> pd.Series:
    """The grade a file name states, as ACNE04's ``levle2_49.jpg`` does.

    Args:
        image_ids: image paths relative to the export.
        pattern: a regex searched in the path; its ``grade`` named group (or its first group)
            is the grade. ``None`` or empty: no grade from names.

    Returns:
        The grade per image, as a nullable integer (``<NA>`` where the name has none).
    """
    if not pattern:
        return pd.Series(pd.NA, index=image_ids.index, dtype="Int64")
    regex = re.compile(pattern)

    def _grade(image_id: str) -> int | None:
        match = regex.search(PurePosixPath(image_id).name) or regex.search(image_id)
        if not match:
            return None
        value = match.groupdict().get("grade") or match.group(1)
        return int(value) if str(value).isdigit() else None

    return image_ids.map(_grade).astype("Int64")


def parse_grades_file(
    table: pd.DataFrame, image_ids: pd.Series, *, n_grades: int, file: str
) -> tuple[pd.Series, pd.DataFrame]:
    """Grades from a ``grades.csv`` (columns ``image``, ``grade``) matched to the export's images.

    ``image`` may be the image's path in the export, its file name or its stem.

    Args:
        table: the file's rows, as read (strings).
        image_ids: the export's image paths.
        n_grades: grades run 0..n_grades-1.
        file: the file's name, for the report.

    Returns:
        The grade per image (``<NA>`` where the file has none), and the file's problems: one row
        per unusable line (``file``, ``image_id``, ``reason``, ``detail``).
    """
    from acne_detection.core.ingestion import PROBLEM_COLUMNS  # the export readers' problem rows, same columns

    grades = pd.Series(pd.NA, index=image_ids.index, dtype="Int64")
    problems: list[dict[str, str]] = []
    if table.empty:
        return grades, pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    if not {"image", "grade"} <= set(table.columns):
        problems.append(
            {
                "file": file,
                "image_id": "",
                "reason": "unparseable grades file",
                "detail": f"columns {list(table.columns)}; expected image, grade",
            }
        )
        return grades, pd.DataFrame(problems)
    keys = {}
    for index, image_id in image_ids.items():
        path = PurePosixPath(image_id)
        for key in (image_id, path.name, path.stem):
            keys.setdefault(key, []).append(index)
    for row in table.itertuples():
        name, raw = str(row.image).strip(), str(row.grade).strip()
        targets = keys.get(name, [])
        if not targets:
            problems.append(
                {
                    "file": file,
                    "image_id": name,
                    "reason": "grade for an unknown image",
                    "detail": f"'{name}' is not an image of the export",
                }
            )
        elif not (raw.isdigit() and int(raw) < n_grades):
            problems.append(
                {
                    "file": file,
                    "image_id": name,
                    "reason": "unparseable grade",
                    "detail": f"grade '{raw}' is not one of 0..{n_grades - 1}",
                }
            )
        else:
            grades[targets] = int(raw)
    return grades, pd.DataFrame(problems, columns=PROBLEM_COLUMNS)


BOOTSTRAP_RESAMPLES = 9999  # the grade accuracy's bootstrap over source photos (seeded: the same figures each run)
MIN_BOOTSTRAP_SOURCES = 10  # fewer source photos: Wilson's interval over the sources, not a bootstrap


def source_keys(sources: Sequence[Any] | pd.Series | np.ndarray | None, n: int) -> np.ndarray:
    """Each photo's source photo as a text key; a photo with none (``None``, NaN) is its own source."""
    own = pd.Series([f"photo:{i}" for i in range(n)], dtype=object)
    if sources is None:
        return own.to_numpy()
    keys = pd.Series(np.asarray(sources, dtype=object), dtype=object)
    return keys.where(keys.notna(), own).astype(str).to_numpy(dtype=object)


def accuracy_interval(right: np.ndarray, sources: Sequence[Any] | pd.Series | None = None) -> tuple[float, float, int]:
    """A 95 % interval for the share of photos graded right, and the number of source photos behind it.

    Where every photo is its own source, the Wilson interval over photos. Where some photos are
    copies of one source photo (a Roboflow export holds three of each, augmented), the copies are
    not independent, and the Wilson interval over photos is too narrow (on ACNE04's dev slice, 213
    test photos are 83 sources: 0.69-0.80 against 0.66-0.84): a percentile bootstrap that resamples
    source photos, each with all its copies (scipy's ``bootstrap``, paired, of the ratio of photos
    right to photos; seeded). With fewer than ``MIN_BOOTSTRAP_SOURCES`` sources, or sources all
    graded alike (every one right), a bootstrap cannot show its own width: Wilson's over the sources.

    Args:
        right: per photo, whether it was graded right.
        sources: each photo's source photo; ``None``: every photo is its own.

    Returns:
        The interval's low and high ends, and how many source photos there are.
    """
    from scipy.stats import binomtest, bootstrap

    right = np.asarray(right, bool)
    n = len(right)
    per_source = (
        pd.DataFrame({"right": right.astype(float), "photos": 1.0, "source": source_keys(sources, n)})
        .groupby("source")[["right", "photos"]]
        .sum()
    )
    n_sources = len(per_source)
    if n_sources == n:
        wilson = binomtest(int(right.sum()), n).proportion_ci(confidence_level=0.95, method="wilson")
        return float(wilson.low), float(wilson.high), n_sources
    if n_sources < MIN_BOOTSTRAP_SOURCES or (per_source.right / per_source.photos).nunique() == 1:
        # a bootstrap of a few sources, or of sources all alike (every one right), cannot show its own width:
        # Wilson's over the sources instead, as if each were one photo (its copies add no evidence)
        hits = int(round(right.mean() * n_sources))
        wilson = binomtest(hits, n_sources).proportion_ci(confidence_level=0.95, method="wilson")
        return float(wilson.low), float(wilson.high), n_sources
    result = bootstrap(
        (per_source.right.to_numpy(), per_source.photos.to_numpy()),
        lambda hits, photos, axis=-1: hits.sum(axis=axis) / photos.sum(axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=BOOTSTRAP_RESAMPLES,
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high), n_sources


def interval_words(metrics: dict[str, Any]) -> str:
    """What ``grading_metrics``' accuracy interval is, in words: "95 % Wilson interval", or, where
    photos are copies of fewer source photos, "95 % interval over 83 source photos" (bootstrap)."""
    sources, photos = metrics.get("grade_sources"), metrics.get("photos_graded")
    if sources is not None and photos is not None and 2 <= sources < photos:
        return f"95 % interval over {sources:.0f} source photos"
    return "95 % Wilson interval"


def grading_metrics(photos: pd.DataFrame, *, names: Sequence[str]) -> tuple[dict[str, float], pd.DataFrame]:
    """Grading accuracy, recall per grade, counting error and the ceiling, on photos with a true grade.

    Args:
        photos: one row per photo: ``true_grade`` (``<NA>``: unknown, left out), ``pred_grade``,
            ``true_count``, ``pred_count`` and ``count_grade`` (the grade of the true count);
            optionally ``source``, the source photo it is a copy of (``accuracy_interval``).
        names: the grades' names, in order.

    Returns:
        The metrics: ``grade_accuracy`` with its 95 % interval (``_low``, ``_high``; ``accuracy_interval``:
        over the source photos where some have several copies, ``grade_sources`` of them),
        ``grade_ceiling`` (accuracy of grading the *true* counts: what a perfect counter
        would reach), ``grade_within_one`` (the share graded at most one grade off), ``count_mae``
        and ``count_rmse`` (ACNE04's counting protocol) of the lesions found, ``count_mae_estimated`` and
        ``count_rmse_estimated`` of the grade model's estimated count where ``photos`` carry one,
        ``grade_recall.<name>`` and ``photos_graded``; and the grade confusion matrix (rows true,
        columns predicted, counts).
    """
    graded = photos[photos.true_grade.notna()]
    n = len(graded)
    labels = list(names)
    truth, pred = graded.true_grade.astype(int).to_numpy(), graded.pred_grade.astype(int).to_numpy()
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (truth, pred), 1)
    confusion = pd.DataFrame(matrix, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))
    metrics: dict[str, float] = {"photos_graded": float(n)}
    if n:
        sources = graded["source"] if "source" in graded else None
        low, high, n_sources = accuracy_interval(truth == pred, sources)
        metrics.update(
            grade_accuracy=float((truth == pred).mean()),
            grade_accuracy_low=low,
            grade_accuracy_high=high,
            grade_sources=float(n_sources),
            grade_ceiling=float((graded.count_grade.astype(int).to_numpy() == truth).mean()),
            grade_within_one=float((np.abs(truth - pred) <= 1).mean()),
        )
        for g, name in enumerate(labels):
            if (truth == g).any():
                metrics[f"grade_recall.{name}"] = float(matrix[g, g] / matrix[g].sum())
    error = (photos.pred_count - photos.true_count).to_numpy(float)
    if len(error):
        metrics.update(count_mae=float(np.abs(error).mean()), count_rmse=float(np.sqrt((error**2).mean())))
    if "estimated_count" in photos and photos.estimated_count.notna().all() and len(photos):
        off = (photos.estimated_count.astype(float) - photos.true_count).to_numpy(float)
        metrics.update(
            count_mae_estimated=float(np.abs(off).mean()), count_rmse_estimated=float(np.sqrt((off**2).mean()))
        )
    return metrics, confusion
