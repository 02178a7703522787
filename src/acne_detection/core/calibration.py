"""Calibrated confidence: how far a detector's confidence is from the share of its detections
that are true lesions, and a monotone recalibration that closes the gap.

**D-ECE** (detection expected calibration error, Küppers et al., "Multivariate Confidence
Calibration for Object Detection", CVPR Workshops 2020) bins detections by confidence and
averages, weighted by bin size, the gap between each bin's mean confidence and its precision
(the share of its detections matched to a true box at the evaluation IoU). It is computed here
on confidence alone, with equal-width bins; the tests hold it equal to ``netcal``'s
``ECE(detection=True)`` on the same input. The project computes it itself because netcal
brings pyro, gpytorch and tensorboard with it, too much for a runtime dependency of a
pipeline that only needs one weighted mean.

**Recalibration** is Platt's logistic scaling of the confidence's logit,
``p = sigmoid(a * logit(c) + b)`` with ``a > 0``, fitted by maximum likelihood on the
validation split's detections (matched or not). It is strictly increasing, so every ranking
(and with it AP at every IoU) is unchanged; only what the numbers mean changes. A fit that is
not increasing, or that has too few detections or only one outcome, is refused and the
identity is kept, with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

_EPS = 1e-6
MIN_DETECTIONS = 30  # fewer matched-or-not detections than this on validation: no recalibration


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


@dataclass(frozen=True)
class Calibration:
    """A monotone map from the detector's confidence to the probability that a detection is a
    true lesion, and the confidence floor it was fitted above.

    Attributes:
        a: slope on the logit (``> 0``); 1 with ``b`` 0 is the identity.
        b: offset on the logit.
        min_conf: detections below this raw confidence were not seen by the fit (grade
            probabilities use the detections at or above it).
        method: ``platt`` or ``identity``.
        reason: why the identity was kept, when it was.
        detections: how many validation detections the fit saw.
    """

    a: float = 1.0
    b: float = 0.0
    min_conf: float = 0.05
    method: str = "identity"
    reason: str = ""
    detections: int = 0

    def apply(self, confidence: np.ndarray | pd.Series | float) -> np.ndarray:
        """The calibrated probability of each raw confidence."""
        if self.method == "identity":
            return np.asarray(confidence, dtype=float)
        return _sigmoid(self.a * _logit(confidence) + self.b)

    def raw_threshold(self, calibrated: float) -> float:
        """The raw confidence whose calibrated value is ``calibrated`` (the inverse map), so a
        detector can be asked for exactly the boxes a calibrated threshold keeps."""
        if self.method == "identity":
            return float(calibrated)
        return float(_sigmoid((_logit(calibrated) - self.b) / self.a))

    def detector_floor(self, threshold: float) -> float:
        """The raw confidence to ask the detector for: low enough for every box the calibrated
        ``threshold`` keeps, and for every candidate of the grade probabilities (``min_conf``)."""
        return min(self.raw_threshold(threshold), self.min_conf)

    def split(self, boxes: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Calibrate raw boxes, then split them into those counted and those the grade
        probabilities use.

        Args:
            boxes: predicted boxes with raw ``confidence`` (asked for at ``detector_floor``).
            threshold: the operating point, a calibrated confidence.

        Returns:
            The counted boxes (calibrated ``confidence`` >= ``threshold``) and the candidates (raw
            confidence >= ``min_conf``), both with the calibrated ``confidence``.
        """
        raw = boxes.confidence.to_numpy(float)
        calibrated = boxes.assign(confidence=self.apply(raw))
        return calibrated[calibrated.confidence >= threshold], calibrated[raw >= self.min_conf]

    @property
    def warning(self) -> str:
        """What a reader of an uncalibrated model's numbers must know ("" when calibrated)."""
        if self.method != "identity":
            return ""
        return f"confidences and grade probabilities are not calibrated ({self.reason or 'no calibration'})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> Calibration:
        """A stored calibration; ``None`` or ``{}``: the identity (not calibrated)."""
        if not record:
            return cls(reason="no calibration recorded for this model")
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})


def fit_platt(confidence: np.ndarray, matched: np.ndarray, *, min_conf: float) -> Calibration:
    """Fit Platt scaling on detections at or above ``min_conf``.

    Args:
        confidence: each detection's raw confidence.
        matched: whether it matched a true box.
        min_conf: the floor (lower detections are not fitted and not recalibrated).

    Returns:
        The fitted ``Calibration``, or the identity with its reason.
    """
    from scipy.optimize import minimize

    c = np.asarray(confidence, dtype=float)
    y = np.asarray(matched, dtype=float)
    keep = c >= min_conf
    c, y = c[keep], y[keep]
    if len(c) < MIN_DETECTIONS:
        return Calibration(
            min_conf=min_conf, reason=f"{len(c)} validation detections (fewer than {MIN_DETECTIONS})", detections=len(c)
        )
    if y.min() == y.max():
        outcome = "matched" if y[0] else "unmatched"
        return Calibration(min_conf=min_conf, reason=f"every validation detection is {outcome}", detections=len(c))
    x = _logit(c)

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * x + ab[1]
        p = _sigmoid(z)
        nll = np.sum(np.logaddexp(0, z) - y * z)  # -log-likelihood, stable
        grad = np.array([np.sum((p - y) * x), np.sum(p - y)])
        return float(nll), grad

    fit = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a, b = (float(v) for v in fit.x)
    if not fit.success or not a > 0:
        return Calibration(min_conf=min_conf, reason=f"the fit is not increasing (slope {a:.3f})", detections=len(c))
    return Calibration(a=a, b=b, min_conf=min_conf, method="platt", detections=len(c))


def reliability_table(confidence: np.ndarray, matched: np.ndarray, *, bins: int = 10) -> pd.DataFrame:
    """Detections per equal-width confidence bin: count, mean confidence and precision.

    Args:
        confidence: each detection's confidence, in [0, 1].
        matched: whether it matched a true box.
        bins: number of bins over [0, 1].

    Returns:
        One row per bin: ``low``, ``high``, ``detections``, ``confidence`` (mean) and
        ``precision`` (NaN for an empty bin).
    """
    c = np.asarray(confidence, dtype=float)
    y = np.asarray(matched, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(c, edges[1:-1], right=False), 0, bins - 1)  # bin i holds [edge_i, edge_i+1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=c, minlength=bins) / count
        precision = np.bincount(index, weights=y, minlength=bins) / count
    return pd.DataFrame(
        {"low": edges[:-1], "high": edges[1:], "detections": count, "confidence": mean_conf, "precision": precision}
    )


def dece(confidence: np.ndarray, matched: np.ndarray, *, bins: int = 10) -> float:
    """D-ECE on confidence alone: the bin-size-weighted mean |precision - confidence|.

    Returns:
        The error in [0, 1]; NaN when there is no detection.
    """
    table = reliability_table(confidence, matched, bins=bins)
    n = table.detections.sum()
    if not n:
        return float("nan")
    filled = table[table.detections > 0]
    return float((filled.detections * (filled.precision - filled.confidence).abs()).sum() / n)
