"""Byte-identical copies: resolved after validation, grouped with their photo, and reconciled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from acne_detection.core.params import parse
from acne_detection.datasets import AnnotatedExport
from acne_detection.pipelines.data.report import describe_dataset
from acne_detection.pipelines.data.split import find_split_leaks, split_dataset
from acne_detection.pipelines.data.validation import summarise_quarantine
from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset
from tests.conftest import tree_digest, validated, write_image, write_voc


def _pair(root: Path, name: str, objects: list, *, seed: int | None = None, same_as: str | None = None) -> None:
    if same_as:
        shutil.copy(root / same_as, root / name)
    else:
        write_image(root / name, seed=seed)
    write_voc((root / name).with_suffix(".xml"), name, objects)


def _reason(report: pd.DataFrame, image: str) -> pd.Series:
    return report[(report.kind == "image") & (report.file.str.endswith(image))].iloc[0]


def test_a_valid_photo_survives_its_broken_twin(tmp_path: Path, data_params: dict) -> None:
    # "a_twin.jpg" sorts first, so the old rule kept it, quarantined it for its box, and lost the photo.
    _pair(tmp_path, "b_good.jpg", [("papules", 10, 10, 20, 20)], seed=1)
    _pair(tmp_path, "a_twin.jpg", [("papules", 10, 10, 90, 20)], same_as="b_good.jpg")  # past the edge
    images, boxes, report, counts = validated(AnnotatedExport(path=str(tmp_path)).load(), data_params)
    assert images.image_id.tolist() == ["b_good.jpg"]
    assert len(boxes) == 1 and boxes.iloc[0].x_max == 20
    assert _reason(report, "a_twin.jpg").reason == "invalid box"
    assert images.iloc[0].copies == "a_twin.jpg"
    assert counts["images_read"] == 2 == counts["images_accepted"] + counts["images_quarantined"]


def test_disagreeing_valid_copies_keep_the_fuller_one_and_say_so(tmp_path: Path, data_params: dict, caplog) -> None:
    _pair(tmp_path, "a.jpg", [("papules", 10, 10, 20, 20)], seed=1)
    _pair(tmp_path, "b.jpg", [("papules", 10, 10, 20, 20), ("pustules", 30, 10, 40, 20)], same_as="a.jpg")
    _pair(tmp_path, "c.jpg", [("papules", 10, 10, 20, 20), ("pustules", 30, 10, 40, 20)], same_as="a.jpg")
    images, boxes, report, _ = validated(AnnotatedExport(path=str(tmp_path)).load(), data_params)
    assert images.image_id.tolist() == ["b.jpg"]  # most boxes, then first by name (b before c)
    assert len(boxes) == 2
    a, c = _reason(report, "a.jpg"), _reason(report, "c.jpg")
    assert a.reason == c.reason == "byte-identical copy"
    assert a.detail == "same bytes as b.jpg, the copy kept; boxes differ (b.jpg: 2 boxes, this copy: 1)"
    assert c.detail == "same bytes as b.jpg, the copy kept"
    assert set(report[report.kind == "box"].detail) == {"byte-identical copy"}
    assert "1 byte-identical copies carry other boxes" in caplog.text


def test_a_renamed_copy_joins_its_photo_group_and_split(tmp_path: Path, data_params: dict) -> None:
    root = tmp_path / "export"
    root.mkdir()
    box = [("papules", 10, 10, 20, 20)]
    for photo in range(12):  # Roboflow groups of 3 copies (augmented, so different bytes)
        for copy in range(3):
            _pair(root, f"levle1_{photo}_jpg.rf.{photo:02d}{copy:030x}.jpg", box, seed=100 * photo + copy)
    # The same photo saved again under a phone's name, which sorts first and has the most boxes.
    _pair(root, "IMG_0042.jpg", [*box, ("pustules", 30, 10, 40, 20)], same_as=f"levle1_7_jpg.rf.07{0:030x}.jpg")
    before = tree_digest(root)
    images, boxes, report, counts = validated(AnnotatedExport(path=str(root)).load(), data_params)
    assert "IMG_0042.jpg" in set(images.image_id)  # kept: it has more boxes than its twin
    for seed in range(6):
        split = split_dataset(images, boxes, parse("data", {**data_params, "split": {"seed": seed}}))
        group = split.set_index("image_id").loc["IMG_0042.jpg", "group"]
        assert group == "levle1_7"
        assert split[split.group == "levle1_7"].split.nunique() == 1
        assert find_split_leaks(split).empty

    # Everything reconciles: reader, quarantine tables and the dataset report.
    manifest, ground_truth = plan_yolo_dataset(split, boxes, parse("data", data_params))
    report_all = describe_dataset(split, ground_truth, 64)
    report_all = report_all[report_all["class"] == "all"]
    assert report_all.images.sum() == counts["images_accepted"] == len(images) == len(manifest) == 36
    assert report_all.boxes.sum() == counts["boxes_accepted"] == len(ground_truth) == 37
    summary = summarise_quarantine(report)
    assert summary.set_index(["kind", "reason"])["count"].to_dict() == {
        ("image", "byte-identical copy"): 1,
        ("box", "image quarantined"): 1,
    }
    assert counts["images_read"] == counts["images_accepted"] + counts["images_quarantined"] == 37
    assert counts["boxes_read"] == counts["boxes_accepted"] + counts["boxes_quarantined"] == 38
    assert tree_digest(root) == before


def test_keep_source_split_reports_a_leak_through_a_renamed_copy(data_params: dict) -> None:
    images = pd.DataFrame(
        {
            "image_id": ["train/p_jpg.rf.aa.jpg", "valid/IMG_1.jpg", "test/q.jpg"],
            "source_split": ["train", "val", "test"],
            "copies": ["", "train/p_jpg.rf.bb.jpg", ""],
        }
    )
    split = split_dataset(
        images,
        pd.DataFrame(columns=["image_id", "class"]),
        parse("data", {**data_params, "split": {"keep_source_split": True}}),
    )
    leaks = find_split_leaks(split)
    assert leaks.to_dict("records") == [
        {"group": "p", "splits": "train, val", "images": "train/p_jpg.rf.aa.jpg; valid/IMG_1.jpg"}
    ]
