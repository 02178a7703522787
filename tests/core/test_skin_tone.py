"""The ITA estimator against uniform patches of known CIELAB colour and against the synthetic
generator's true tones."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from acne_detection.core.skin_tone import BAND_NAMES, estimate_ita, ita_band, measure_tone


def _patch(lightness: float, a: float, b: float, size: int = 64) -> np.ndarray:
    lab = np.full((size, size, 3), (lightness, a, b), np.float32)
    return (np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("lightness", "a", "b"), [(75, 8, 16), (62, 12, 18), (55, 14, 20), (45, 14, 20), (30, 12, 15)])
def test_ita_of_a_uniform_patch_is_its_lab_ita(lightness: float, a: float, b: float) -> None:
    expected = math.degrees(math.atan((lightness - 50) / b))
    assert estimate_ita(_patch(lightness, a, b)) == pytest.approx(expected, abs=1.0)  # 8-bit rounding


def test_lesion_boxes_and_non_skin_pixels_are_left_out() -> None:
    skin = _patch(70, 10, 18, size=100)
    expected = estimate_ita(skin)
    marked = skin.copy()
    marked[0:70, 0:70] = (170, 90, 80)  # a large inflamed area, boxed (the median would follow it)
    marked[:, 90:] = (40, 90, 160)  # a blue background strip, not skin
    assert estimate_ita(marked, [(0, 0, 70, 70)], margin=0) == pytest.approx(expected, abs=0.5)
    assert abs(estimate_ita(marked) - expected) > 5  # unboxed, the redness is taken for skin
    assert math.isnan(estimate_ita(np.zeros((32, 32, 3), np.uint8)))  # no skin at all


def test_a_photo_whose_tone_cannot_be_measured_says_why() -> None:
    skin = _patch(65, 12, 18, size=100)
    gray = cv2.cvtColor(cv2.cvtColor(skin, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    _, jpeg = cv2.imencode(".jpg", gray)  # JPEG leaves a trace of colour in a gray photo
    gray_jpeg = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    cases = {
        "grayscale photo": gray_jpeg,
        "too dark": np.full((40, 40, 3), 8, np.uint8),
        "too bright": np.full((40, 40, 3), 253, np.uint8),
        "too little skin-coloured pixels": _patch(55, -20, -30),  # a blue wall
    }
    for reason, pixels in cases.items():
        tone = measure_tone(pixels)
        assert math.isnan(tone.ita) and tone.problem.startswith(reason), (reason, tone)
    covered = measure_tone(skin, [(0, 0, 100, 100)])
    assert math.isnan(covered.ita) and covered.problem.startswith("no skin outside the lesion boxes")


def test_boxes_crowding_the_photo_are_measured_as_drawn_before_giving_up() -> None:
    skin = _patch(65, 12, 18, size=100)
    expected = estimate_ita(skin)
    # boxes leave a 4 px frame (15 % of the photo); grown by 15 % they cover all of it
    crowded = measure_tone(skin, [(4, 4, 50, 50), (50, 4, 96, 50), (4, 50, 50, 96), (50, 50, 96, 96)])
    assert crowded.method == "outside the boxes as drawn" and crowded.problem == ""
    assert crowded.ita == pytest.approx(expected, abs=0.5)
    assert measure_tone(skin, [(40, 40, 60, 60)]).method == "outside the boxes grown 15%"


def test_bands_at_their_edges() -> None:
    assert [ita_band(v) for v in (60, 55, 41.5, 41, 30, 28, 12, 10, 0, -30, -31)] == [
        "very light",
        "light",
        "light",
        "intermediate",
        "intermediate",
        "tan",
        "tan",
        "brown",
        "brown",
        "dark",
        "dark",
    ]
    assert ita_band(float("nan")) == "" and len(BAND_NAMES) == 6


def test_estimates_against_the_synthetic_true_tones(tmp_path: Path) -> None:
    """On 60 synthetic photos (lighting gradient, vignette, mottling, pores, lesions boxed):
    most in the true band, and no error beyond the adjacent band."""
    import xml.etree.ElementTree as ET

    from acne_detection.core.synthetic import write_voc_export

    write_voc_export(tmp_path, n_images=60, size=256, seed=3)
    truth = pd.read_csv(tmp_path / "skin_tones.csv")
    hits, adjacent = 0, 0
    for row in truth.itertuples():
        pixels = np.asarray(Image.open(tmp_path / row.image).convert("RGB"))
        boxes = [
            [float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
            for o in ET.parse((tmp_path / row.image).with_suffix(".xml")).findall("object")
        ]
        true_band, found_band = (
            BAND_NAMES.index(ita_band(row.ita)),
            BAND_NAMES.index(ita_band(estimate_ita(pixels, boxes))),
        )
        hits += found_band == true_band
        adjacent += abs(found_band - true_band) == 1
        assert abs(found_band - true_band) <= 1, row.image
    assert truth.ita.map(ita_band).nunique() >= 4  # the generator spans the bands
    # measured: 60 of 60 in the true band here (mean error 1.8 degrees); on the default set (240 photos,
    # 640 px) 236 of 240, the other 4 in the adjacent band (mean error 1.6, largest 5.9 degrees)
    assert hits / len(truth) >= 0.9, (hits, adjacent)


def _texture(colour: tuple[int, int, int], size: tuple[int, int], kind: str, seed: int) -> np.ndarray:
    """A background as a phone photo shows it: a flat colour with shading and noise, grain for
    wood, strands for hair."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3)).copy()
    img *= (1 + 0.08 * (xx / w - 0.5))[..., None]
    if kind == "wood":
        img *= (1 - 0.15 * (np.sin(2 * np.pi * (xx / 23.0 + 0.4 * np.sin(yy / 60.0))) * 0.5 + 0.5))[..., None]
    if kind == "hair":
        strands = np.zeros((h, w), np.float32)
        for _ in range(300):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            cv2.line(
                strands, (int(x0), int(y0)), (int(x0 + rng.normal(0, 10)), int(y0 + 80)), float(rng.uniform(-1, 1)), 1
            )
        img *= (1 + 0.3 * strands)[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


# warm backgrounds the colour model rejects, and those it cannot tell from skin (kept as skin:
# tile skipping then costs time on them, never a lesion)
REJECTED = {
    "beige wall": ((245, 240, 215), "wall"),
    "white wall": ((236, 234, 230), "wall"),
    "mahogany wood": ((103, 30, 20), "wood"),
    "black hair": ((22, 20, 18), "hair"),
    "blue shirt": ((50, 80, 140), "wall"),
}
KEPT = {"pine wood": ((227, 192, 141), "wood"), "blonde hair": ((230, 206, 168), "hair")}


def test_the_skin_mask_keeps_skin_of_every_tone_and_rejects_warm_backgrounds() -> None:
    from acne_detection.core.skin_tone import skin_mask
    from acne_detection.core.synthetic import _SKIN_TONES, _skin

    for tone in range(len(_SKIN_TONES)):
        face = (np.clip(_skin(np.random.default_rng(tone), 256, tone_index=tone), 0, 1) * 255).astype(np.uint8)
        assert skin_mask(face)[0].mean() > 0.95, tone
    for name, (colour, kind) in {**REJECTED, **KEPT}.items():
        share = skin_mask(_texture(colour, (256, 256), kind, seed=1))[0].mean()
        assert share < 0.02 if name in REJECTED else share > 0.5, (name, share)


def test_tiles_of_background_alone_are_skipped_and_tiles_near_skin_kept() -> None:
    """Left half skin, right half one background: with 400 px tiles overlapping 80 px, the tiles
    within the overlap's reach of the skin are kept, those of beige wall beyond it are not; a
    photo with too little skin to trust its mask keeps every tile."""
    from acne_detection.core.skin_tone import tiles_on_skin
    from acne_detection.core.synthetic import _skin

    skin = (np.clip(_skin(np.random.default_rng(0), 1200, tone_index=3), 0, 1) * 255).astype(np.uint8)
    photo = np.concatenate([skin[:, :600], _texture(REJECTED["beige wall"][0], (1200, 1000), "wall", 2)], axis=1)
    tiles = [(x, y, x + 400, y + 400) for y in range(0, 1200, 400) for x in range(0, 1600, 400)]
    keep = tiles_on_skin(photo, tiles, grow=80, min_share=0.02)
    # columns at x 0, 400 hold skin; 600-680 is within reach of the column at 400..800 (its own)
    # and of nothing beyond: the columns at 800 and 1200 are wall alone
    assert [keep[i] for i in range(4)] == [True, True, False, False]
    assert sum(keep) == 6
    almost_none = photo.copy()
    almost_none[:, :560] = _texture(REJECTED["beige wall"][0], (1200, 560), "wall", 3)  # 40 px of skin: 2.5 %
    assert all(tiles_on_skin(almost_none, tiles, grow=80, min_share=0.02))


def test_the_skin_mask_keeps_the_skin_of_real_faces(acne04_sample: Path) -> None:
    """ACNE04 faces (the centre half of each photo, all face): the colour model keeps most of
    the skin; what it leaves is lesion heads, glare, shadow and grey casts, and a tile keeps
    far less than this (``min_skin`` 2 % of the mask grown by the overlap). Measured on the 48:
    median 0.80, lowest 0.50."""
    from acne_detection.core.skin_tone import skin_mask

    shares = []
    for path in sorted(acne04_sample.rglob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        h, w = pixels.shape[:2]
        shares.append(skin_mask(pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4])[0].mean())
    assert len(shares) == 48
    assert np.median(shares) > 0.7 and min(shares) > 0.4, np.percentile(shares, [0, 10, 50])
