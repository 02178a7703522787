"""Every quarantine reason, each from a small crafted file, through the real reader and node."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest
from kedro.io import DatasetError
from PIL import Image

from acne_detection.core.params import parse
from acne_detection.datasets import AnnotatedExport
from acne_detection.pipelines.data.validation import summarise_quarantine
from tests.conftest import PHONE_HEIC, tree_digest, validated, write_image, write_png_bomb, write_voc

GOOD_BOX = [("papules", 10, 10, 20, 20)]


@pytest.fixture
def broken_voc(tmp_path: Path) -> Path:
    """A VOC export holding one example of every problem and every valid-but-unusual image."""
    root = tmp_path / "export"
    root.mkdir()

    def pair(name: str, objects=GOOD_BOX, *, seed: int, **kw) -> None:
        write_image(root / name, seed=seed, **kw)
        write_voc((root / name).with_suffix(".xml"), name, objects)

    pair("good.jpg", seed=1)
    shutil.copy(root / "good.jpg", root / "good_copy.jpg")
    write_voc(root / "good_copy.xml", "good_copy.jpg", GOOD_BOX)
    pair("gray.png", seed=2, mode="L")
    pair("rgba.png", seed=3, mode="RGBA")
    pair("palette.png", seed=4, mode="P")
    pair("deep16.png", seed=5, mode="I;16")
    pair("name with space é.jpg", seed=6)
    pair("background.jpg", [], seed=7)
    pair("edge_clip.jpg", [("papules", 50, 10, 64.8, 20)], seed=8)
    pair("edge_far.jpg", [("papules", 50, 10, 80, 20)], seed=9)
    pair("zero_width.jpg", [("papules", 10, 10, 10, 20)], seed=10)
    pair("nan.jpg", [("papules", "abc", 10, 20, 20)], seed=11)
    pair("unknown.jpg", [("papules", 10, 10, 20, 20), ("scar", 30, 10, 40, 20)], seed=12)
    pair("dupbox.jpg", [("papules", 10, 10, 20, 20), ("papules", 10, 10, 20, 20)], seed=13)
    # EXIF orientation 6: stored 64x48, displayed 48x64; the box is valid only when displayed.
    exif = Image.Exif()
    exif[0x0112] = 6
    pair("exif_rotated.jpg", [("pustules", 5, 40, 20, 60)], seed=14, exif=exif)
    (root / "zero.jpg").write_bytes(b"")
    write_voc(root / "zero.xml", "zero.jpg", GOOD_BOX)
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    write_voc(root / "truncated.xml", "truncated.jpg", GOOD_BOX)
    (root / "fake.jpg").write_text("this is not a picture")
    write_voc(root / "fake.xml", "fake.jpg", GOOD_BOX)
    pair("cmyk.jpg", seed=17, mode="CMYK")
    pair("bilevel.png", seed=18, mode="1")
    pair("upper.JPG", seed=19)
    pair("tiny.png", [("papules", 1, 1, 5, 5)], seed=22, size=(8, 8))
    mpo_frames = [Image.open(write_image(root / f"frame{i}.tmp", seed=20 + i, format="JPEG")) for i in range(2)]
    mpo_frames[0].save(root / "phone_multi_picture.jpg", format="MPO", save_all=True, append_images=mpo_frames[1:])
    write_voc(root / "phone_multi_picture.xml", "phone_multi_picture.jpg", GOOD_BOX)
    for frame in root.glob("frame*.tmp"):
        frame.unlink()
    (root / "photo.dng").write_bytes(b"II*\x00\x08\x00\x00\x00")  # a camera raw: a format the pipeline does not read
    shutil.copy(PHONE_HEIC, root / "IMG_0042.HEIC")  # a phone's default format
    write_voc(root / "IMG_0042.xml", "IMG_0042.HEIC", GOOD_BOX, size=(320, 320))
    pair("modern.avif", seed=23, format="AVIF")
    (root / "notes.jpg").write_text("visit 3: papules on the left cheek\n")
    write_voc(root / "notes.xml", "notes.jpg", GOOD_BOX)
    write_png_bomb(root / "bomb.png", 30_000)  # 900 MP declared, under 1 MB on disk
    write_voc(root / "bomb.xml", "bomb.png", GOOD_BOX)
    (root / "not_voc.jpg").write_bytes((root / "good.jpg").read_bytes()[:-1] + b"\xd9")  # same pixels, other bytes
    (root / "not_voc.xml").write_text("<labelme><shape/></labelme>")
    write_voc(root / "orphan.xml", "orphan.jpg", GOOD_BOX)
    write_image(root / "no_annotation.jpg", seed=15)
    write_image(root / "broken_xml.jpg", seed=16)
    (root / "broken_xml.xml").write_text("<annotation><object>")
    return root


def _reason(report: pd.DataFrame, needle: str) -> set[str]:
    return set(report.loc[report.file.str.contains(needle, regex=False), "reason"])


def test_every_problem_gets_its_reason_and_counts_reconcile(broken_voc: Path, data_params: dict) -> None:
    before = tree_digest(broken_voc)
    raw = AnnotatedExport(path=str(broken_voc), format="auto").load()
    images, boxes, report, counts = validated(raw, data_params)

    assert _reason(report, "zero.jpg") == {"zero-byte file"}
    assert _reason(report, "truncated.jpg") == {"truncated image"}
    assert _reason(report, "fake.jpg") == {"not an image"}
    assert _reason(report, "orphan.xml") == {"annotation without image"}
    assert _reason(report, "no_annotation.jpg") == {"image without annotation"}
    assert _reason(report, "broken_xml.xml") == {"unparseable annotation file"}
    assert _reason(report, "not_voc.xml") == {"unparseable annotation file"}
    assert _reason(report, "photo.dng") == {"unsupported image format"}
    assert _reason(report, "notes.jpg") == {"not an image"}
    notes = report.loc[report.file.str.endswith("notes.jpg"), "detail"].iloc[0]
    assert notes.startswith("the file starts with text") and "Error" not in notes  # words, not an exception
    assert _reason(report, "bomb.png") == {"too many pixels"}
    assert "900 MP, over the limit of 200 MP" in report.loc[report.file.str.endswith("bomb.png"), "detail"].iloc[0]
    assert _reason(report, "tiny.png") == {"image too small"}
    assert _reason(report, "good_copy.jpg") == {"byte-identical copy"}
    assert "invalid box" in _reason(report, "edge_far") and "box past the image edge" in _reason(report, "edge_far.xml")
    assert "zero or negative width or height" in _reason(report, "zero_width.xml")
    assert "non-numeric or NaN value" in _reason(report, "nan.xml")
    assert _reason(report, "unknown.xml") == {"unknown class"}
    assert _reason(report, "dupbox.xml") == {"duplicate box"}

    accepted = set(images.image_id)
    assert {
        "good.jpg",
        "gray.png",
        "rgba.png",
        "palette.png",
        "deep16.png",
        "name with space é.jpg",
        "background.jpg",
        "edge_clip.jpg",
        "unknown.jpg",
        "dupbox.jpg",
        "exif_rotated.jpg",
        "cmyk.jpg",
        "bilevel.png",
        "upper.JPG",
        "phone_multi_picture.jpg",
        "IMG_0042.HEIC",
        "modern.avif",
    } == accepted
    rotated = images.set_index("image_id").loc["exif_rotated.jpg"]
    assert (rotated.width, rotated.height, rotated.orientation) == (48, 64, 6)
    clipped = boxes[boxes.image_id == "edge_clip.jpg"].iloc[0]
    assert clipped.x_max == 64.0
    assert len(boxes[boxes.image_id == "dupbox.jpg"]) == 1

    heic = images.set_index("image_id").loc["IMG_0042.HEIC"]
    assert (heic.width, heic.height, heic["mode"]) == (320, 320, "RGB")
    assert counts["images_read"] == counts["images_accepted"] + counts["images_quarantined"] == 31
    assert counts["boxes_read"] == counts["boxes_accepted"] + counts["boxes_quarantined"]
    assert counts["files_quarantined"] == 1  # orphan.xml; broken_xml.jpg is a quarantined image
    assert tree_digest(broken_voc) == before  # source files are never modified

    summary = summarise_quarantine(report)
    assert summary["count"].sum() == len(report)


def test_strict_mode_turns_any_quarantine_into_an_error(broken_voc: Path, data_params: dict) -> None:
    raw = AnnotatedExport(path=str(broken_voc)).load()
    with pytest.raises(DatasetError, match="strict mode"):
        validated(raw, {**data_params, "strict": True})


def test_unmapped_class_can_be_an_error_naming_file_and_class(broken_voc: Path, data_params: dict) -> None:
    raw = AnnotatedExport(path=str(broken_voc)).load()
    with pytest.raises(DatasetError, match=r"unknown\.xml: class 'scar'"):
        validated(raw, {**data_params, "unmapped_class": "error"})


def test_a_typo_in_parameters_fails_with_the_key(broken_voc: Path, data_params: dict) -> None:
    raw = AnnotatedExport(path=str(broken_voc)).load()
    with pytest.raises(ValueError, match="edge_tolerence_px"):
        validated(raw, {**data_params, "edge_tolerence_px": 2})


def test_unusual_images_reach_the_yolo_folder_as_displayed(broken_voc: Path, data_params: dict, tmp_path: Path) -> None:
    from acne_detection.datasets import YoloDatasetFolder
    from acne_detection.pipelines.data.split import split_dataset
    from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset

    images, boxes, _, _ = validated(AnnotatedExport(path=str(broken_voc)).load(), data_params)
    manifest, _ = plan_yolo_dataset(
        split_dataset(images, boxes, parse("data", data_params)), boxes, parse("data", data_params)
    )
    folder = YoloDatasetFolder(path=str(tmp_path / "yolo"), names=data_params["classes"])
    folder.save(manifest)
    size = images.set_index("image_id")[["width", "height"]]
    for row in manifest.itertuples():
        pixels = cv2.imread(str(tmp_path / "yolo" / row.image))  # how Ultralytics' loader reads it
        assert pixels is not None and pixels.shape == (
            size.loc[row.image_id, "height"],
            size.loc[row.image_id, "width"],
            3,
        ), row.image_id
        assert (tmp_path / "yolo" / row.label).read_text().count("\n") == len(boxes[boxes.image_id == row.image_id])
    rotated = manifest.set_index("image_id").loc["exif_rotated.jpg", "image"]
    assert rotated.endswith(".png")  # rewritten upright, not linked
