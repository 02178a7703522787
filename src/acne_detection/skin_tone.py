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


def estimate_ita(
    rgb: np.ndarray, boxes: Sequence[Sequence[float]] = (), *, max_side: int = 256, margin: float = 0.15
) -> float:
    """The ITA of a photo's skin, lesions and non-skin pixels left out.

    Pixels are converted to CIELAB with OpenCV (sRGB, D65). Left out: every lesion box grown
    by ``margin`` of its size (redness around a lesion is not the skin's tone); very dark
    (L* < 15: shadows, hair, nostrils) and very bright (L* > 97: specular highlights) pixels;
    and pixels whose colour is not skin-like (a* <= 0 or b* <= 0: greenish, bluish or grey
    backgrounds, clothes). The ITA is computed from the medians of L* and b* of the rest,
    robust to freckles, pores and the odd stray pixel. The photo is measured at ``max_side``
    pixels (tone is a property of large areas, and it keeps this cheap on phone photos).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB pixels.
        boxes: lesion boxes ``(x_min, y_min, x_max, y_max)`` in those pixels.
        max_side: the long side the photo is shrunk to before measuring.
        margin: how much each box is grown on every side, as a share of its size.

    Returns:
        ITA in degrees; NaN when fewer than 5 % of the pixels are skin.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = (
        cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if scale < 1
        else rgb
    )
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L in 0..100, a and b in CIE units
    keep = (lab[..., 0] >= 15) & (lab[..., 0] <= 97) & (lab[..., 1] > 0) & (lab[..., 2] > 0)
    for x0, y0, x1, y1 in boxes:
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        keep[
            max(0, int((y0 - my) * scale)) : int(math.ceil((y1 + my) * scale)),
            max(0, int((x0 - mx) * scale)) : int(math.ceil((x1 + mx) * scale)),
        ] = False
    if keep.mean() < 0.05:
        return float("nan")
    return ita_of_lab(float(np.median(lab[..., 0][keep])), float(np.median(lab[..., 2][keep])))
