"""Skin tone of a photo as the Individual Typology Angle (ITA), the colorimetric measure
dermatology uses: ITA = arctan((L* - 50) / b*) x 180 / pi, in CIELAB.

Bands (Chardon et al., 1991; Del Bino et al.): very light > 55, light 41-55, intermediate
28-41, tan 10-28, brown -30-10, dark < -30 degrees.

Limits: ITA is measured on a photo, not on skin with a colorimeter, so lighting and the
camera's white balance move it (a brighter exposure raises L* and the ITA). It says nothing
about a person beyond the colour of the pixels.

Which pixels are skin is one colour model (``skin_pixels``), used by the tone estimator and by
sliced prediction's tile skipping (``skin_mask``, ``tiles_on_skin``).
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


# The skin colour model, in CIELAB (OpenCV's sRGB, D65: L* 0..100, a* and b* in CIE units).
# A pixel is skin-coloured when all hold:
# * 15 <= L* <= 97: not a shadow, black hair or a nostril (darker), not a specular highlight;
# * a* > 0 and b* > 0: red and yellow both, which skin of every tone is (blood and melanin):
#   blue and green backgrounds and clothes fail it;
# * chroma C* >= 3: some colour at all; white and grey walls have none (JPEG noise alone moves
#   their a* and b* by 1-2 units). Grey-cast photos keep most of their skin: in the greyest
#   ACNE04 photo seen, skin's median C* is 5.5;
# * hue angle h = atan2(b*, a*) <= 85 degrees: skin is orange (h about 45-65 on real ACNE04
#   faces, 95th percentile 74; up to 81 on the yellowest synthetic tone); beige walls (h about
#   100-110) are yellower (a "wheat" wall, h 86, is at the edge: partly kept);
# * chroma C* <= 1.5 L*: no skin is that saturated for its lightness; dark varnished woods
#   (mahogany C*/L* 2.3) and saturated red or orange fabrics are.
# What colour cannot tell from skin (pine, oak and walnut wood, tan and blonde hair, a wall
# painted in a skin tone) is kept as skin: for tile skipping that costs time, never a lesion.
# On the 48 ACNE04 sample faces (the centre half of each photo) ``skin_mask`` keeps a median
# 80 % of pixels, 50 % at the lowest: the rest are lesion heads, glare, shadow and grey casts.
SKIN_LIGHTNESS = (15.0, 97.0)
SKIN_MIN_CHROMA = 3.0
SKIN_MAX_HUE = 85.0
SKIN_MAX_CHROMA_PER_LIGHTNESS = 1.5


def skin_pixels(lab: np.ndarray) -> np.ndarray:
    """Which pixels of a CIELAB image (float, OpenCV's scale) are skin-coloured: the model above."""
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    return (
        (lightness >= SKIN_LIGHTNESS[0])
        & (lightness <= SKIN_LIGHTNESS[1])
        & (a > 0)
        & (b > 0)
        & (b <= a * math.tan(math.radians(SKIN_MAX_HUE)))  # hue angle <= SKIN_MAX_HUE
        & (chroma >= SKIN_MIN_CHROMA)
        & (chroma <= SKIN_MAX_CHROMA_PER_LIGHTNESS * lightness)
    )


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB to CIELAB (float32; L* 0..100, a* and b* in CIE units), OpenCV's sRGB D65."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The photo at most ``max_side`` pixels long (area averaging), and its scale."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1:
        return rgb, 1.0
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA), scale


def skin_mask(rgb: np.ndarray, *, max_side: int = 512) -> tuple[np.ndarray, float]:
    """Where a photo's skin is, at reduced size (skin is a property of large areas): the colour
    model's pixels, cleaned of specks (a 5 px median filter at ``max_side``: stray pixels of a
    wall or a shirt that pass the colour test alone are not skin).

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB pixels.
        max_side: the long side of the mask (the photo is shrunk with area averaging first).

    Returns:
        The boolean mask (``skin_pixels`` of the shrunk photo) and its scale (mask pixels per
        photo pixel).
    """
    small, scale = shrink(rgb, max_side)
    return cv2.medianBlur(skin_pixels(to_lab(small)).astype(np.uint8), 5).astype(bool), scale


def tiles_on_skin(
    rgb: np.ndarray,
    tiles: Sequence[Sequence[int]],
    *,
    grow: float,
    min_share: float,
    min_photo_share: float = 0.05,
    max_side: int = 512,
) -> list[bool]:
    """Which tiles of a photo to predict: those with skin in or near them.

    The skin mask is dilated by ``grow`` photo pixels first (sliced prediction passes the tile
    overlap), so a lesion at the edge of the skin, or one whose own colour is not skin's (a
    pustule's white head), is inside a kept tile. A tile is kept when at least ``min_share``
    of it is dilated skin. When the whole photo holds under ``min_photo_share`` of skin (a
    grayscale photo, a strong colour cast, a close-up in odd light) the mask is not trusted
    and every tile is kept: skipping saves time and must never cost a lesion.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB pixels.
        tiles: ``(x_min, y_min, x_max, y_max)`` in photo pixels (``sahi.slicing.get_slice_bboxes``).
        grow: dilation radius in photo pixels.
        min_share: the least share of a tile that must be (dilated) skin.
        min_photo_share: below this share of skin in the whole photo, every tile is kept.
        max_side: the mask's long side.

    Returns:
        One flag per tile, ``True`` to predict it.
    """
    mask, scale = skin_mask(rgb, max_side=max_side)
    if mask.mean() < min_photo_share:
        return [True] * len(tiles)
    radius = int(math.ceil(grow * scale))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    total = cv2.integral(mask.astype(np.uint8))  # (h+1, w+1) running sums: any tile's count in 4 lookups
    mh, mw = mask.shape
    keep = []
    for x0, y0, x1, y1 in tiles:
        c0, r0 = min(int(x0 * scale), mw - 1), min(int(y0 * scale), mh - 1)
        c1, r1 = max(min(int(math.ceil(x1 * scale)), mw), c0 + 1), max(min(int(math.ceil(y1 * scale)), mh), r0 + 1)
        inside = total[r1, c1] - total[r0, c1] - total[r1, c0] + total[r0, c0]
        keep.append(bool(inside >= min_share * (r1 - r0) * (c1 - c0)))
    return keep


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
    and pixels whose colour is not skin's (``skin_pixels``: greenish, bluish or grey
    backgrounds and clothes, beige walls, dark varnished wood, strong redness). The ITA is
    computed from the medians of L* and b* of the rest, robust to freckles, pores and the odd
    stray pixel. The photo is measured at ``max_side`` pixels (tone is a property of large
    areas, and it keeps this cheap on phone photos).

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
    small, scale = shrink(rgb, max_side)
    lab = to_lab(small)
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    if float(np.percentile(np.hypot(a, b), 99)) < 2.0:  # 8-bit grey rounds to |a|, |b| well under 1
        exposure = _exposure_problem(lightness)
        return ToneEstimate(float("nan"), exposure or "grayscale photo: no colour to measure a skin tone from", "")
    skin = skin_pixels(lab)
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
