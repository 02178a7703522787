"""Nodes of the ``review`` pipeline: predict's results as Label Studio tasks and a CVAT file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.params import GradingParams, ReviewParams
from acne_detection.core.review import label_config, review_task
from acne_detection.datasets import Photos

logger = logging.getLogger(__name__)


def model_classes(model_info: dict[str, Any]) -> list[str]:
    """The class names of the model predict used, in id order: the review's labels."""
    from ultralytics import YOLO

    names = YOLO(model_info["checkpoint"]).names
    return [names[i] for i in sorted(names)]


def build_review_tasks(
    summary: pd.DataFrame,
    lesions: pd.DataFrame,
    model_info: dict[str, Any],
    classes: list[str],
    photos: Photos,
    grading: GradingParams,
    review: ReviewParams,
) -> dict[str, Any]:
    """One Label Studio task per predicted photo, pre-annotated with the model's boxes (and
    their calibrated confidences) and the grade predict gave it (its grade model's most probable).

    Args:
        summary: predict's photo summary (size and grade of each predicted photo).
        lesions: predict's lesions (boxes in the photo's pixels, at the model's own threshold).
        model_info: predict's ``choose_model`` result (the model version).
        classes: the model's class names (``model_classes``).
        photos: the photo folder.
        grading: the grading rule (the grade choices).
        review: where Label Studio's document root is.

    Returns:
        ``label_config``, ``photo_folder`` and ``tasks``, what ``LabelStudioProject`` saves.

    Raises:
        ValueError: the photo folder is not under the document root (Label Studio could not serve it).
    """
    root, folder = Path(review.document_root).resolve(), Path(photos.root).resolve()
    if not folder.is_relative_to(root):
        raise ValueError(
            f"{folder}: the photo folder is not under Label Studio's document root {root} "
            "(review.document_root, and make labelstudio's --document-root): it could not serve the photos"
        )
    by_photo = dict(tuple(lesions.groupby("image")))
    empty = lesions.iloc[:0]
    tasks = [
        review_task(
            (folder / row.photo).relative_to(root).as_posix(),
            by_photo.get(row.photo, empty),
            int(row.width),
            int(row.height),
            grade=int(row.grade),
            model_version=str(model_info.get("model_version", "")),
        )
        for row in summary.itertuples(index=False)
    ]
    logger.info("Review: %d photos pre-annotated by %s", len(tasks), model_info.get("model_version", "?"))
    return {
        "label_config": label_config(classes, grading.names),
        "photo_folder": str(folder),
        "tasks": tasks,
    }


def write_cvat_coco(
    summary: pd.DataFrame, lesions: pd.DataFrame, model_info: dict[str, Any], classes: list[str]
) -> dict[str, Any]:
    """The same pre-annotations as a COCO 1.0 file, which CVAT imports (Upload annotations,
    "COCO 1.0") onto a task made of the same photos; each box's confidence in ``attributes``.

    Returns:
        The COCO document (``images`` named by their path in the photo folder).
    """
    ids = {name: i + 1 for i, name in enumerate(classes)}
    images = [
        {"id": i + 1, "file_name": row.photo, "width": int(row.width), "height": int(row.height)}
        for i, row in enumerate(summary.itertuples(index=False))
    ]
    image_ids = {image["file_name"]: image["id"] for image in images}
    annotations = []
    for i, (photo, name, confidence, x0, y0, x1, y1) in enumerate(
        zip(*(lesions[c].tolist() for c in ("image", "class", "confidence", "x_min", "y_min", "x_max", "y_max")))
    ):
        w, h = float(x1 - x0), float(y1 - y0)
        annotations.append(
            {
                "id": i + 1,
                "image_id": image_ids[photo],
                "category_id": ids[name],
                "bbox": [round(float(x0), 2), round(float(y0), 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "segmentation": [],
                "attributes": {"occluded": False, "score": round(float(confidence), 4)},
            }
        )
    return {
        "info": {"description": f"acne-detection pre-annotations by {model_info.get('model_version', '?')}"},
        "licenses": [],
        "categories": [{"id": ids[name], "name": name, "supercategory": ""} for name in classes],
        "images": images,
        "annotations": annotations,
    }
