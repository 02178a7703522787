"""Skin tone of a photo as the Individual Typology Angle (ITA), the colorimetric measure
dermatology uses: ITA = arctan((L* - 50) / b*) x 180 / pi, in CIELAB.

Bands (Chardon et al., 1991; Del Bino et al.): very light > 55, light 41-55, intermediate
28-41, tan 10-28, brown -30-10, dark < -30 degrees.

Limits: ITA is measured on a photo, not on skin with a colorimeter, so lighting and the
camera's white balance move it (a brighter exposure raises L* and the ITA). It says nothing
about a person beyond the colour of the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

# (name, lowest ITA) from the lightest band down; a value belongs to the first band it reaches
BANDS: tuple[tuple[str, float], ...] = (
    ("very light", 55.0),
    ("light", 41.0),
    ("intermediate", 28.0),
    ("tan", 10.0),
    ("brown", -30.0),
    ("dark", -math.inf),
)
BAND_NAMES = tuple(name for name, _ in BANDS)


def ita_band(ita: float) -> str:
    """The band of an ITA value in degrees; ``""`` for NaN (no skin measured)."""
    if ita != ita:  # NaN
        return ""
    return next(name for name, low in BANDS if ita > low or low == -math.inf)


def ita_of_lab(lightness: float, b: float) -> float:
    """ITA in degrees from L* and b* (``atan2`` keeps the sign right where b* is small)."""
    return math.degrees(math.atan2(lightness - 50.0, b)) if b > 0 else float("nan")


class ToneEstimate(NamedTuple):
    """One photo's skin tone: ``ita`` in degrees (NaN when not measured), ``problem`` (why not,
    in words; "" when measured) and ``method`` (which pixels were used; "" when not measured)."""

    ita: float
    problem: str
    method: str


def estimate_ita(
    rgb: np.ndarray, boxes: Sequence[Sequence[float]] = (), *, max_side: int = 256, margin: float = 0.15
) -> float:
    """``measure_tone(...).ita``: the ITA of a photo's skin in degrees, NaN when not measured."""
    return measure_tone(rgb, boxes, max_side=max_side, margin=margin).ita


def measure_tone(
    rgb: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    *,
    max_side: int = 256,
    margin: float = 0.15,
    min_share: float = 0.05,
) -> ToneEstimate:
    """The ITA of a photo's skin, lesions and non-skin pixels left out, or why it cannot be told.

    Pixels are converted to CIELAB with OpenCV (sRGB, D65). Left out: every lesion box grown
    by ``margin`` of its size (redness around a lesion is not the skin's tone); very dark
    (L* < 15: shadows, hair, nostrils) and very bright (L* > 97: specular highlights) pixels;
    and pixels whose colour is not skin-like (a* <= 0 or b* <= 0: greenish, bluish or grey
    backgrounds, clothes). The ITA is computed from the medians of L* and b* of the rest,
    robust to freckles, pores and the odd stray pixel. The photo is measured at ``max_side``
    pixels (tone is a property of large areas, and it keeps this cheap on phone photos).

    Before giving up on a photo whose grown boxes leave under ``min_share`` of it (a face
    crowded with lesions), the skin outside the boxes as drawn is measured instead, and
    ``method`` says so. A photo is not measured (NaN, with the reason in ``problem``) when it has
    no colour (grayscale), is mostly too dark or too bright, or has too little skin outside
    its boxes.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB pixels.
        boxes: lesion boxes ``(x_min, y_min, x_max, y_max)`` in those pixels.
        max_side: the long side the photo is shrunk to before measuring.
        margin: how much each box is grown on every side, as a share of its size.
        min_share: the least share of the photo's pixels that must be skin.

    Returns:
        ``ToneEstimate(ita, problem, method)``.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = (
        cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if scale < 1
        else rgb
    )
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L in 0..100, a and b in CIE units
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    if float(np.percentile(np.hypot(a, b), 99)) < 2.0:  # 8-bit grey rounds to |a|, |b| well under 1
        exposure = _exposure_problem(lightness)
        return ToneEstimate(float("nan"), exposure or "grayscale photo: no colour to measure a skin tone from", "")
    skin = (lightness >= 15) & (lightness <= 97) & (a > 0) & (b > 0)
    for grow, method in ((margin, f"outside the boxes grown {margin:.0%}"), (0.0, "outside the boxes as drawn")):
        keep = skin & ~_box_mask(lab.shape[:2], boxes, scale, grow)
        if keep.mean() >= min_share:
            ita = ita_of_lab(float(np.median(lightness[keep])), float(np.median(b[keep])))
            return ToneEstimate(ita, "", method if len(boxes) else "whole photo")
    return ToneEstimate(float("nan"), _why_no_skin(lightness, skin, keep, min_share), "")


def _box_mask(shape: tuple[int, int], boxes: Sequence[Sequence[float]], scale: float, grow: float) -> np.ndarray:
    """Pixels inside any box grown by ``grow`` of its size, at the measured ``scale``."""
    inside = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        mx, my = (x1 - x0) * grow, (y1 - y0) * grow
        inside[
            max(0, int((y0 - my) * scale)) : int(math.ceil((y1 + my) * scale)),
            max(0, int((x0 - mx) * scale)) : int(math.ceil((x1 + mx) * scale)),
        ] = True
    return inside


def _exposure_problem(lightness: np.ndarray) -> str:
    """ "too dark"/"too bright" when most of the photo is beyond the measured L* range, else ""."""
    dark, bright = float((lightness < 15).mean()), float((lightness > 97).mean())
    if dark > 0.5:
        return f"too dark: {dark:.0%} of the photo is under L* 15"
    if bright > 0.5:
        return f"too bright: {bright:.0%} of the photo is over L* 97"
    return ""


def _why_no_skin(lightness: np.ndarray, skin: np.ndarray, outside: np.ndarray, min_share: float) -> str:
    """Why too few pixels were left to measure, in words."""
    exposure = _exposure_problem(lightness)
    if exposure:
        return exposure
    if skin.mean() >= min_share:
        return f"no skin outside the lesion boxes: {outside.mean():.1%} of the photo is left, under {min_share:.0%}"
    return f"too little skin-coloured pixels: {skin.mean():.1%} of the photo, under {min_share:.0%}"
