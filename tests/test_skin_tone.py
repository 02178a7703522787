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
