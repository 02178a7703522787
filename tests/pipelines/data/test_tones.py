"""Skin tone per source photo in the data pipeline: copies share their photo's tone, the split
is stratified by tone band, and the report counts reconcile."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from acne_detection.core.params import parse
from acne_detection.core.skin_tone import ita_band, ita_of_lab
from acne_detection.pipelines.data.split import split_dataset
from acne_detection.pipelines.data.tones import describe_skin_tones, measure_skin_tones, plot_skin_tones
from tests.conftest import validated, write_voc

PARAMS = {
    "classes": ["comedone", "papule", "pustule", "nodule"],
    "class_map": {
        "whitehead and blackhead": "comedone",
        "papules": "papule",
        "pustules": "pustule",
        "nodules and cysts": "nodule",
    },
}


def _skin_photo(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb, float) + rng.normal(0, 3, (80, 80, 3)), 0, 255).astype(np.uint8)
    pixels[30:50, 30:50] = (170, 40, 40)  # a boxed red lesion
    Image.fromarray(pixels).save(path)


def test_copies_of_one_photo_share_its_tone_and_nothing_is_dropped(tmp_path: Path, caplog) -> None:
    """Three Roboflow copies of one photo, brightened and darkened as its augmentation does: each
    copy's own ITA lands in a different band; the photo's tone is their median, for all three."""
    raw = tmp_path / "raw"
    raw.mkdir()
    base = np.array([200, 150, 120])
    for i, (name, gain) in enumerate(
        (("face_jpg.rf.aa01", 1.0), ("face_jpg.rf.bb02", 1.22), ("face_jpg.rf.cc03", 0.7))
    ):
        _skin_photo(raw / f"{name}.png", tuple(np.clip(base * gain, 0, 255).astype(int)), seed=i)
        write_voc(raw / f"{name}.xml", f"{name}.png", [("papules", 30, 30, 50, 50)], size=(80, 80))
    _skin_photo(raw / "other.png", (120, 80, 55), seed=9)
    write_voc(raw / "other.xml", "other.png", [("papules", 30, 30, 50, 50)], size=(80, 80))
    Image.fromarray(np.full((80, 80, 3), (40, 90, 160), np.uint8)).save(raw / "blue.png")  # no skin at all
    write_voc(raw / "blue.xml", "blue.png", [], size=(80, 80))
    from acne_detection.datasets import AnnotatedExport

    images, boxes, _, _ = validated(AnnotatedExport(path=str(raw)).load(), PARAMS)
    with caplog.at_level(logging.WARNING):
        toned = measure_skin_tones(images, boxes, parse("data", PARAMS)).set_index("image_id")
    assert len(toned) == len(images) == 5  # nothing dropped
    copies = toned.loc[[i for i in toned.index if i.startswith("face")]]
    assert copies["ita_image"].map(ita_band).nunique() == 3  # per copy: three different bands
    assert copies["ita"].nunique() == 1 and copies["ita"].iloc[0] == np.median(copies["ita_image"])
    assert ita_band(copies["ita"].iloc[0]) == ita_band(copies.loc["face_jpg.rf.aa01.png", "ita_image"])
    lab = cv2.cvtColor(np.array([[[120, 80, 55]]], np.float32) / 255, cv2.COLOR_RGB2LAB)[0, 0]
    assert toned.loc["other.png", "ita"] == pytest.approx(ita_of_lab(lab[0], lab[2]), abs=1.0)  # its lesion left out
    assert toned.loc["blue.png", "tone_band"] == "" and "no measurable skin" in caplog.text
    assert measure_skin_tones(images, boxes, parse("data", {**PARAMS, "skin_tone": {"measure": False}})).equals(images)


def test_default_synthetic_split_has_every_tone_in_test(tmp_path: Path) -> None:
    """The default generator (240 photos; drawn here at 128 px, same tones) through the nodes: the
    test split holds >= 15 photos in four bands and some of every band; the report reconciles."""
    from acne_detection.core.synthetic import write_voc_export
    from acne_detection.datasets import AnnotatedExport
    from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset

    write_voc_export(tmp_path / "raw", n_images=240, size=128, seed=0)
    params = {**PARAMS, "split": {"train": 0.5, "val": 0.15, "test": 0.35}}
    images, boxes, _, _ = validated(AnnotatedExport(path=str(tmp_path / "raw")).load(), params)
    split = split_dataset(measure_skin_tones(images, boxes, parse("data", params)), boxes, parse("data", params))
    test_bands = split[split.split == "test"]["tone_band"].value_counts()
    assert (test_bands >= 15).sum() >= 4 and len(test_bands) == 6, test_bands.to_dict()
    truth = pd.read_csv(tmp_path / "raw" / "skin_tones.csv").set_index("image")["ita"].map(ita_band)
    assert (split["image_id"].map(truth) == split["tone_band"]).mean() >= 0.95
    _, ground_truth = plan_yolo_dataset(split, boxes, parse("data", params))
    report = describe_skin_tones(split, ground_truth)
    per_split = report[report.split != "all"].groupby("split")["photos"].sum()
    assert per_split.to_dict() == split["split"].value_counts().to_dict()
    assert report[report.split == "all"]["lesions"].sum() == len(boxes)
    assert report[report.split == "test"]["share_of_split"].sum() == pytest.approx(1.0)
    assert len(plot_skin_tones(report, split).axes) == 2


def test_split_without_tones_still_works(tiny_yolo) -> None:
    """No ``tone_band`` column (tone not measured): the report is empty and says so in the plot."""
    dataset, ground_truth = tiny_yolo
    split = dataset.manifest.assign(group=dataset.manifest.image_id)
    assert describe_skin_tones(split, ground_truth).empty
    assert plot_skin_tones(describe_skin_tones(split, ground_truth), split).axes[0].texts
