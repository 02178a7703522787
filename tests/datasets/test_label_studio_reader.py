"""``format: label_studio`` (the review loop's corrections) and merging them into an export, on
crafted Label Studio exports written as Label Studio 1.23 writes them; and a CVAT "COCO 1.0"
export read by the COCO reader. (The whole loop against a real Label Studio is
``tests/test_review_loop.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from acne_detection.core.review import box_results, photo_address, review_edits
from acne_detection.datasets import AnnotatedExport
from acne_detection.datasets.readers import read_coco
from tests.conftest import write_image, write_voc

# the model's boxes on a 100 x 50 photo, one per row
BOXES = pd.DataFrame(
    [
        ("papule", 0.9, 10.0, 8.0, 20.0, 16.0),
        ("pustule", 0.6, 40.0, 20.0, 52.0, 30.0),
        ("papule", 0.4, 70.0, 30.0, 75.0, 38.0),
    ],
    columns=["class", "confidence", "x_min", "y_min", "x_max", "y_max"],
)


def _task(task_id: int, photo: str, annotations: list[dict]) -> dict:
    predicted = box_results(BOXES, 100, 50) + [
        {"id": "grade", "type": "choices", "from_name": "grade", "to_name": "image", "value": {"choices": ["1"]}}
    ]
    return {
        "id": task_id,
        "data": {"image": photo_address(photo), "photo": photo},
        "annotations": annotations,
        "predictions": [{"model_version": "acne-detector/7", "score": 0.63, "result": predicted}],
    }


def _reviewed(task: dict) -> dict:
    """A reviewer's submission: box p0 kept, p1 moved 5 px right, p2 deleted, one added, grade 2."""
    kept, moved = (dict(r) for r in task["predictions"][0]["result"][:2])
    moved["value"] = {**moved["value"], "x": moved["value"]["x"] + 5.0}  # 5 % of 100 px
    added = dict(kept, id="n1", value={**kept["value"], "x": 80.0, "y": 60.0})
    grade = {"id": "g", "type": "choices", "from_name": "grade", "to_name": "image", "value": {"choices": ["2"]}}
    return {
        "id": 11,
        "result": [kept, moved, added, grade],
        "was_cancelled": False,
        "completed_by": {"id": 1, "email": "derm@clinic.example"},
        "updated_at": "2026-12-01T09:00:00Z",
    }


@pytest.fixture
def voc_and_review(tmp_path: Path) -> tuple[Path, Path]:
    """A 3-photo VOC export, and a Label Studio export reviewing one of its photos (the same
    file), skipping another, leaving a third, and pointing one task outside the photo root."""
    voc = tmp_path / "photos" / "export"
    voc.mkdir(parents=True)
    for i in range(3):
        write_image(voc / f"p{i}.jpg", (100, 50), seed=i)
        write_voc(voc / f"p{i}.xml", f"p{i}.jpg", [("papule", 1, 1, 9, 9)], size=(100, 50))
    first = _task(1, "export/p0.jpg", [])
    first["annotations"] = [_reviewed(first)]
    tasks = [
        first,
        _task(2, "export/p1.jpg", [{"id": 12, "result": [], "was_cancelled": True}]),
        _task(3, "export/p2.jpg", []),
        _task(4, "../../../etc/hostname", []),
    ]
    review = tmp_path / "reviewed"
    review.mkdir()
    (review / "label_studio_export.json").write_text(json.dumps(tasks))
    return voc, review


def test_only_submitted_reviews_are_read_in_pixels_with_grade_and_provenance(voc_and_review) -> None:
    voc, review = voc_and_review
    raw = AnnotatedExport(path=str(review), format="label_studio", photo_root=str(voc.parent)).load()
    assert raw.images.image_id.tolist() == ["export/p0.jpg"] and raw.images.width.tolist() == [100]
    boxes = raw.boxes.sort_values("x_min")
    assert boxes[["x_min", "y_min", "x_max", "y_max"]].round(6).values.tolist() == [
        [10.0, 8.0, 20.0, 16.0],  # kept
        [45.0, 20.0, 57.0, 30.0],  # moved 5 px
        [80.0, 30.0, 90.0, 38.0],  # added at 80 %, 60 %
    ]
    assert raw.grades.values.tolist() == [["export/p0.jpg", "2"]]
    assert raw.provenance.iloc[0].to_dict() == {
        "image_id": "export/p0.jpg",
        "task_id": "1",
        "annotator": "derm@clinic.example",
        "submitted_at": "2026-12-01T09:00:00Z",
        "model_version": "acne-detector/7",
    }
    reasons = raw.problems.set_index("detail").reason.to_dict()
    assert reasons == {
        "task 2: skipped by the reviewer": "not reviewed",
        "task 3: not reviewed yet": "not reviewed",
        "task 4: ../../../etc/hostname not found": "annotation without image",  # never outside the photo root
    }


def test_a_review_counts_kept_moved_deleted_added_and_the_grade(voc_and_review) -> None:
    _, review = voc_and_review
    edits = review_edits(json.loads((review / "label_studio_export.json").read_text()))
    assert edits.to_dict("records") == [
        {
            "photo": "export/p0.jpg",
            "task_id": 1,
            "annotator": "derm@clinic.example",
            "submitted_at": "2026-12-01T09:00:00Z",
            "model_version": "acne-detector/7",
            "predicted": 3,
            "reviewed": 3,
            "kept": 1,
            "moved": 1,  # IoU 7/17 with its prediction, under 0.9
            "deleted": 1,
            "added": 1,
            "true_positives": 1,  # the moved box is no longer a hit at IoU 0.5
            "grade_before": "1",
            "grade_after": "2",
        }
    ]


def test_reviewed_labels_replace_the_same_photo_in_the_export(voc_and_review) -> None:
    voc, review = voc_and_review
    raw = AnnotatedExport(path=str(voc), reviewed={"path": str(review), "photo_root": str(voc.parent)}).load()
    assert sorted(raw.images.image_id) == ["p1.jpg", "p2.jpg", "reviewed/export/p0.jpg"]
    assert set(raw.boxes.image_id) == {"p1.jpg", "p2.jpg", "reviewed/export/p0.jpg"}
    assert (raw.boxes.image_id == "reviewed/export/p0.jpg").sum() == 3  # the reviewer's, not the export's one
    replaced = raw.problems[raw.problems.reason == "replaced by its review"]
    assert replaced.file.tolist() == [str(voc / "p0.jpg")]
    assert raw.grades.values.tolist() == [["reviewed/export/p0.jpg", "2"]]
    assert raw.provenance.image_id.tolist() == ["reviewed/export/p0.jpg"]


def test_a_cvat_coco_export_reads_through_the_coco_reader(tmp_path: Path) -> None:
    """CVAT's "COCO 1.0" export: ``annotations/instances_default.json`` beside ``images/``, with
    CVAT's own fields (licenses, attributes, empty segmentation, category ids from 1)."""
    root = tmp_path / "cvat_task"
    write_image(root / "images" / "face.jpg", (100, 50), seed=3)
    document = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": 1, "name": "lesion", "supercategory": ""}],
        "images": [
            {
                "id": 1,
                "width": 100,
                "height": 50,
                "file_name": "face.jpg",
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [],
                "area": 80.0,
                "bbox": [10.0, 8.0, 10.0, 8.0],
                "iscrowd": 0,
                "attributes": {"occluded": False, "rotation": 0.0},
            }
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(document))
    images, boxes, problems = read_coco(root)
    assert images.image_id.tolist() == ["images/face.jpg"] and problems.empty
    assert boxes[["class_name", "x_min", "y_min", "x_max", "y_max"]].values.tolist() == [
        ["lesion", 10.0, 8.0, 20.0, 16.0]
    ]
