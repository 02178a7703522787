"""Readers of the three export formats, on crafted exports and on the real ACNE04 sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acne_detection.core.params import parse
from acne_detection.datasets import AnnotatedExport, YoloDatasetFolder
from acne_detection.datasets.readers import detect_format
from acne_detection.pipelines.data.split import split_dataset
from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset
from tests.conftest import tree_digest, validated, write_image, write_voc


def _yolo_export(root: Path) -> Path:
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("names: ['0 comedone', 'Papule', 'pustule', 'nodule']\n")
    for split in ("train", "valid"):
        write_image(root / split / "images" / f"a_{split}.jpg", (100, 50), seed=len(split))
        (root / split / "labels").mkdir(parents=True)
        (root / split / "labels" / f"a_{split}.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n")
    write_image(root / "train" / "images" / "bg.jpg", (100, 50), seed=9)
    (root / "train" / "labels" / "bg.txt").write_text("")
    write_image(root / "train" / "images" / "cols.jpg", (100, 50), seed=10)
    (root / "train" / "labels" / "cols.txt").write_text("1 0.5 0.5 0.2\n")
    write_image(root / "train" / "images" / "nan.jpg", (100, 50), seed=11)
    (root / "train" / "labels" / "nan.txt").write_text("1 nan 0.5 0.2 0.2\n")
    (root / "train" / "labels" / "lonely.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    write_image(root / "train" / "images" / "unlabelled.jpg", (100, 50), seed=12)
    return root


def test_yolo_reader_scales_boxes_and_names_problems(tmp_path: Path, data_params: dict) -> None:
    root = _yolo_export(tmp_path / "yolo")
    assert detect_format(root) == "yolo"
    raw = AnnotatedExport(path=str(root)).load()
    box = raw.boxes[(raw.boxes.image_id == "train/images/a_train.jpg") & (raw.boxes.class_name == "Papule")].iloc[0]
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((40, 15, 60, 35))
    assert set(raw.images.source_split) == {"train", "val"}
    problems = dict(zip(raw.problems.file.map(lambda f: Path(f).name), raw.problems.reason))
    assert problems == {
        "cols.txt": "wrong column count",
        "lonely.txt": "annotation without image",
        "unlabelled.jpg": "image without annotation",
    }
    images, boxes, report, counts = validated(raw, {**data_params, "class_map": {"0 comedone": "comedone"}})
    assert images.set_index("image_id").loc["train/images/bg.jpg", "background"]
    assert set(boxes["class"]) == {"comedone", "papule"}
    assert "non-numeric or NaN value" in set(report.reason)
    assert counts["images_read"] == counts["images_accepted"] + counts["images_quarantined"] == 6


def test_coco_reader(tmp_path: Path, data_params: dict) -> None:
    root = tmp_path / "coco" / "train"
    write_image(root / "x.jpg", (80, 60), seed=1)
    write_image(root / "empty.jpg", (80, 60), seed=2)
    doc = {
        "categories": [{"id": 0, "name": "acne"}, {"id": 1, "name": "pustules"}],
        "images": [
            {"id": 5, "file_name": "x.jpg", "width": 80, "height": 60},
            {"id": 6, "file_name": "empty.jpg", "width": 80, "height": 60},
            {"id": 7, "file_name": "gone.jpg", "width": 80, "height": 60},
        ],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [10, 20, 30, 15]}],
    }
    (root / "_annotations.coco.json").write_text(json.dumps(doc))
    raw = AnnotatedExport(path=str(tmp_path / "coco")).load()
    assert raw.format == "coco"
    assert raw.boxes[["x_min", "y_min", "x_max", "y_max"]].iloc[0].tolist() == [10, 20, 40, 35]
    assert raw.problems.reason.tolist() == ["annotation without image"]
    images, boxes, _, _ = validated(raw, data_params)
    assert boxes["class"].tolist() == ["pustule"]
    assert images.set_index("image_id").loc["train/empty.jpg", "background"]


def test_acne04_sample_reads_as_voc_with_its_quirks(acne04_sample: Path, data_params: dict) -> None:
    before = tree_digest(acne04_sample)
    raw = AnnotatedExport(path=str(acne04_sample), format="auto").load()
    assert raw.format == "voc"
    assert len(raw.images) == 48 and raw.problems.empty
    images, boxes, report, counts = validated(raw, data_params)
    assert set(boxes["class"]) <= {"comedone", "papule", "pustule", "nodule"}
    assert "unknown class" not in set(report.reason)
    assert (raw.boxes.x_max > 640).any() or (raw.boxes.y_max > 640).any()  # the sample's 641 px quirk...
    assert (boxes.x_max <= 640).all() and (boxes.y_max <= 640).all()  # ...clipped within tolerance
    split = split_dataset(images, boxes, parse("data", {**data_params}))
    assert (split.groupby("group")["split"].nunique() == 1).all()  # Roboflow copies never straddle splits
    assert split.group.str.match(r"^levle\d_\d+$").all()
    assert tree_digest(acne04_sample) == before


def test_voc_to_yolo_round_trip_keeps_every_box(tmp_path: Path, data_params: dict) -> None:
    src = tmp_path / "voc"
    rng = np.random.default_rng(0)
    for i in range(12):
        write_image(src / f"img{i}.jpg", (96, 64), seed=i)
        objects = [
            (
                ["papules", "pustules", "nodules and cysts"][i % 3],
                *sorted(rng.uniform(0, 96, 2)),
                *sorted(rng.uniform(0, 64, 2)),
            )
        ]
        objects = [(n, a, c, b, d) for n, a, b, c, d in objects]
        write_voc(src / f"img{i}.xml", f"img{i}.jpg", objects)
    images, boxes, _, _ = validated(AnnotatedExport(path=str(src)).load(), data_params)
    manifest, ground_truth = plan_yolo_dataset(
        split_dataset(images, boxes, parse("data", data_params)), boxes, parse("data", data_params)
    )
    YoloDatasetFolder(path=str(tmp_path / "yolo"), names=data_params["classes"]).save(manifest)
    again = AnnotatedExport(path=str(tmp_path / "yolo"), format="yolo").load()
    assert again.problems.empty
    back = again.boxes.sort_values("x_min", ignore_index=True)
    expected = ground_truth.sort_values("x_min", ignore_index=True)
    assert back[["x_min", "y_min", "x_max", "y_max"]].to_numpy() == pytest.approx(
        expected[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), abs=1e-3
    )
    assert back.class_name.tolist() == expected["class"].tolist()
    # Hard links, not copies, for plain JPEGs.
    linked = tmp_path / "yolo" / manifest.image.iloc[0]
    assert linked.stat().st_ino == Path(manifest.file.iloc[0]).stat().st_ino


def test_yolo_folder_rewrites_only_what_changed(tmp_path: Path, data_params: dict) -> None:
    src = tmp_path / "voc"
    for i in range(6):
        write_image(src / f"img{i}.png", (32, 32), seed=i)
        write_voc(src / f"img{i}.xml", f"img{i}.png", [("papules", 1, 1, 9, 9)])
    images, boxes, _, _ = validated(AnnotatedExport(path=str(src)).load(), data_params)
    manifest, _ = plan_yolo_dataset(
        split_dataset(images, boxes, parse("data", data_params)), boxes, parse("data", data_params)
    )
    folder = YoloDatasetFolder(path=str(tmp_path / "yolo"), names=data_params["classes"])
    folder.save(manifest)
    labels = sorted((tmp_path / "yolo").rglob("*.txt"))
    stamps = {p: p.stat().st_mtime_ns for p in labels}
    changed = manifest.assign(labels=np.where(manifest.index == 0, "2 0.5 0.5 0.1 0.1", manifest.labels))
    folder.save(pd.DataFrame(changed))
    moved = [p for p in labels if p.stat().st_mtime_ns != stamps[p]]
    assert [p.name for p in moved] == [Path(manifest.label.iloc[0]).name]
    loaded = folder.load()
    assert len(loaded.images("train")) + len(loaded.images("val")) + len(loaded.images("test")) == 6


def test_darknet_flat_yolo_with_classes_txt_and_bom(tmp_path: Path) -> None:
    """LabelImg/darknet layout: X.jpg beside X.txt, names in classes.txt; Windows tools add a BOM."""
    root = tmp_path / "flat"
    write_image(root / "a.jpg", (100, 50), seed=1)
    (root / "a.txt").write_text("\ufeff2 0.5 0.5 0.2 0.4\r\n", encoding="utf-8")
    write_image(root / "b.jpg", (100, 50), seed=2)
    (root / "classes.txt").write_text("\ufeffcomedone\npapule\npustule\nnodule\n", encoding="utf-8")
    (root / "README.txt").write_text("exported by hand\n")
    (root / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert detect_format(root) == "yolo"
    raw = AnnotatedExport(path=str(root)).load()
    assert raw.boxes.class_name.tolist() == ["pustule"]
    assert raw.boxes[["x_min", "y_min", "x_max", "y_max"]].iloc[0].tolist() == pytest.approx([40, 15, 60, 35])
    problems = dict(zip(raw.problems.file.map(lambda f: Path(f).name), raw.problems.reason))
    assert problems == {"b.jpg": "image without annotation", "stray.txt": "annotation without image"}


def test_coco_annotations_that_point_nowhere_are_reported_not_dropped(tmp_path: Path, data_params: dict) -> None:
    root = tmp_path / "coco"
    write_image(root / "x.jpg", (80, 60), seed=1)
    doc = {
        "categories": [{"id": 1, "name": "papules"}],
        "images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "x.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 11, "image_id": 99, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": None},
        ],
    }
    (root / "instances_train.json").write_text(json.dumps(doc), encoding="utf-8-sig")
    raw = AnnotatedExport(path=str(root)).load()
    assert sorted(raw.problems.reason) == ["annotation without image", "duplicate image entry"]
    assert "annotation 11 refers to image id 99" in " ".join(raw.problems.detail)
    _, _, report, counts = validated(raw, data_params)
    assert "non-numeric or NaN value" in set(report.reason)  # the box without a bbox
    assert counts["boxes_read"] == counts["boxes_accepted"] + counts["boxes_quarantined"] == 2


def test_worker_processes_give_the_same_tables_as_one_process(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(300):  # above the size at which the loader starts worker processes
        write_image(root / f"img{i:03d}.jpg", (16, 16), seed=i, quality=70)
        write_voc(root / f"img{i:03d}.xml", f"img{i:03d}.jpg", [("papules", 1, 1, 9, 9 + i % 5)], size=(16, 16))
    (root / "img007.jpg").write_bytes((root / "img007.jpg").read_bytes()[:-40])
    pooled = AnnotatedExport(path=str(root), workers=2).load()
    serial = AnnotatedExport(path=str(root), workers=1).load()
    pd.testing.assert_frame_equal(pooled.images, serial.images)
    pd.testing.assert_frame_equal(pooled.boxes, serial.boxes)
    assert pooled.images.set_index("image_id").loc["img007.jpg", "image_problem"] == "truncated image"


def test_coco_file_names_from_another_machine_are_found_by_name(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    write_image(root / "images" / "x.jpg", (80, 60), seed=1)
    write_image(root / "images" / "y.jpg", (80, 60), seed=2)
    doc = {
        "categories": [{"id": 1, "name": "papules"}],
        "images": [
            {"id": 1, "file_name": "/content/drive/MyDrive/acne/x.jpg"},
            {"id": 2, "file_name": "../images/y.jpg"},
        ],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    raw = AnnotatedExport(path=str(root)).load()
    assert raw.problems.empty
    assert sorted(raw.images.image_id) == ["images/x.jpg", "images/y.jpg"]
    assert raw.boxes.image_id.tolist() == ["images/x.jpg"]


@pytest.mark.parametrize("fmt", ["voc", "yolo", "coco", "auto"])
def test_an_empty_export_says_which_folder_what_was_found_and_what_to_do(tmp_path: Path, fmt: str) -> None:
    from kedro.io import DatasetError

    from acne_detection.datasets import AnnotatedExport

    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(DatasetError) as err:
        AnnotatedExport(path=str(tmp_path), format=fmt).load()
    message = str(err.value)
    assert str(tmp_path.resolve()) in message and "raw_export.path" in message
    if fmt != "auto":
        assert "no photo found" in message and "Found: 1 .md" in message and "Expected:" in message
    else:  # no annotation of any kind: the format cannot even be told
        assert "cannot tell the annotation format" in message


def test_a_missing_or_non_folder_export_is_named(tmp_path: Path) -> None:
    from kedro.io import DatasetError

    from acne_detection.datasets import AnnotatedExport

    with pytest.raises(DatasetError, match="the export folder does not exist"):
        AnnotatedExport(path=str(tmp_path / "nowhere"), format="voc").load()
    (tmp_path / "file.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        AnnotatedExport(path=str(tmp_path / "file.zip"), format="voc").load()


def test_a_new_export_format_is_one_entry_in_the_readers_module(tmp_path: Path, monkeypatch) -> None:
    """Adding a format is ``readers.READERS`` (its reader) and, optionally, ``EXPECTED_LAYOUTS``:
    nothing else in the package lists formats (an empty export of it is explained, not a KeyError)."""
    from kedro.io import DatasetError

    from acne_detection.datasets import readers

    monkeypatch.setitem(readers.READERS, "labelme", readers.read_voc)  # a stand-in reader
    with pytest.raises(DatasetError, match="format labelme.*the layout the 'labelme' reader documents"):
        AnnotatedExport(path=str(tmp_path), format="labelme").load()
    write_image(tmp_path / "a.jpg")
    write_voc(tmp_path / "a.xml", "a.jpg", [("papules", 4, 4, 20, 20)])
    raw = AnnotatedExport(path=str(tmp_path), format="labelme").load()
    assert raw.images.image_id.tolist() == ["a.jpg"] and len(raw.boxes) == 1
