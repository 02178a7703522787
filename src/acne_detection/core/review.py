"""The review loop's data: the model's boxes as Label Studio pre-annotations, a reviewer's
corrections read back as boxes in pixels, and what the review changed.

Label Studio stores a rectangle in percent of the photo as displayed (``x``, ``y``, ``width``,
``height``, 0-100, top-left origin) beside the photo's ``original_width``/``original_height``;
the project keeps boxes in pixel corners. A region the reviewer kept or edited keeps the ``id``
of the pre-annotation it came from (Label Studio copies the prediction into the annotation),
so each predicted box is either kept (IoU >= ``MOVED_IOU`` with its prediction, same class),
moved (edited below that, or relabelled) or deleted, and a region with a new ``id`` was added.

Nothing here knows Kedro, MLflow or Label Studio's server: the ``review`` pipeline and the
``LabelStudioProject`` dataset call these functions.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

from acne_detection.core.metrics import box_iou, match_detections

# Label Studio serves a photo of a local-files storage at this address, ``d`` being the path
# relative to its LOCAL_FILES_DOCUMENT_ROOT.
LOCAL_FILES_PREFIX = "/data/local-files/?d="
# Below this IoU with its pre-annotation, an edited box counts as moved.
MOVED_IOU = 0.9
BOX_TAG, GRADE_TAG, NOTE_TAG, IMAGE_TAG = "lesion", "grade", "note", "image"
EDIT_COLUMNS = [
    "photo",
    "task_id",
    "annotator",
    "submitted_at",
    "model_version",
    "predicted",
    "reviewed",
    "kept",
    "moved",
    "deleted",
    "added",
    "true_positives",
    "grade_before",
    "grade_after",
]


def label_config(classes: Sequence[str], grades: Sequence[str]) -> str:
    """The labelling interface: the photo, one rectangle label per class, a single grade
    choice (pre-filled from the count) and a free-text note.

    Args:
        classes: the model's class names (one, ``lesion``, on ACNE04).
        grades: the grading rule's grade names, mildest first (results hold the grade's number).

    Returns:
        Label Studio's XML configuration.
    """
    labels = "".join(f'<Label value="{html.escape(c, quote=True)}"/>' for c in classes)
    # the grade's number is what the result holds (the alias); the reviewer sees its name
    choices = "".join(f'<Choice value="{html.escape(g, quote=True)}" alias="{i}"/>' for i, g in enumerate(grades))
    return (
        f'<View><Image name="{IMAGE_TAG}" value="$image" zoom="true"/>'
        f'<RectangleLabels name="{BOX_TAG}" toName="{IMAGE_TAG}">{labels}</RectangleLabels>'
        f'<Choices name="{GRADE_TAG}" toName="{IMAGE_TAG}" choice="single" showInline="true">{choices}</Choices>'
        f'<TextArea name="{NOTE_TAG}" toName="{IMAGE_TAG}" placeholder="note" maxSubmissions="1" editable="true"/>'
        "</View>"
    )


def photo_address(relative: str) -> str:
    """Label Studio's address of a photo at ``relative`` (POSIX) under its document root."""
    return LOCAL_FILES_PREFIX + quote(relative, safe="/")


def photo_path(address: str) -> str:
    """The path relative to the document root that ``photo_address`` encoded ("" if not local)."""
    return unquote(address[len(LOCAL_FILES_PREFIX) :]) if address.startswith(LOCAL_FILES_PREFIX) else ""


def box_results(boxes: pd.DataFrame, width: int, height: int) -> list[dict[str, Any]]:
    """Boxes in pixel corners (``class``, ``confidence``, ``x_min``..``y_max``) as Label Studio
    rectangle results, ids ``p0``, ``p1``… in the table's order."""
    results = []
    columns = [boxes[c].tolist() for c in ("class", "confidence", "x_min", "y_min", "x_max", "y_max")]
    for i, (name, confidence, x_min, y_min, x_max, y_max) in enumerate(zip(*columns, strict=True)):
        results.append(
            {
                "id": f"p{i}",
                "type": "rectanglelabels",
                "from_name": BOX_TAG,
                "to_name": IMAGE_TAG,
                "original_width": int(width),
                "original_height": int(height),
                "image_rotation": 0,
                "value": {
                    "x": 100 * float(x_min) / width,
                    "y": 100 * float(y_min) / height,
                    "width": 100 * float(x_max - x_min) / width,
                    "height": 100 * float(y_max - y_min) / height,
                    "rotation": 0,
                    "rectanglelabels": [str(name)],
                },
                "score": float(confidence),
            }
        )
    return results


def review_task(
    relative: str,
    boxes: pd.DataFrame,
    width: int,
    height: int,
    *,
    grade: int,
    model_version: str,
) -> dict[str, Any]:
    """One Label Studio task: the photo (by its local-files address), the model's boxes and
    its grade as a prediction.

    Args:
        relative: the photo's path relative to Label Studio's document root.
        boxes: its predicted boxes (``class``, ``confidence``, corners in pixels).
        width, height: the photo's size as displayed.
        grade: the grade its count gives (its number).
        model_version: the registered version (or run) that predicted it.

    Returns:
        ``{"data": {"image", "photo"}, "predictions": [...]}``.
    """
    results = box_results(boxes, width, height)
    results.append(
        {
            "id": "grade",
            "type": "choices",
            "from_name": GRADE_TAG,
            "to_name": IMAGE_TAG,
            "value": {"choices": [str(grade)]},
        }
    )
    score = float(boxes.confidence.mean()) if len(boxes) else 0.0
    return {
        "data": {"image": photo_address(relative), "photo": relative},
        "predictions": [{"model_version": model_version, "score": score, "result": results}],
    }


def region_boxes(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Rectangle results back in pixel corners: ``id``, ``class``, ``x_min``..``y_max``
    (``confidence`` where the result has a score), from each result's own original size."""
    rows = []
    for r in results or []:
        if r.get("type") != "rectanglelabels":
            continue
        v, w, h = r.get("value", {}), float(r.get("original_width") or 0), float(r.get("original_height") or 0)
        labels = v.get("rectanglelabels") or [""]
        x, y = float(v.get("x", np.nan)) * w / 100, float(v.get("y", np.nan)) * h / 100
        rows.append(
            (
                str(r.get("id", "")),
                str(labels[0]),
                x,
                y,
                x + float(v.get("width", np.nan)) * w / 100,
                y + float(v.get("height", np.nan)) * h / 100,
                float(r.get("score", 1.0)),
            )
        )
    return pd.DataFrame(rows, columns=["id", "class", "x_min", "y_min", "x_max", "y_max", "confidence"])


def choice(results: list[dict[str, Any]], tag: str = GRADE_TAG) -> str:
    """The chosen value of a choices (or text) control, "" if none."""
    for r in results or []:
        if r.get("from_name") == tag:
            value = r.get("value", {})
            chosen = value.get("choices") or value.get("text") or [""]
            return str(chosen[0])
    return ""


def submitted_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's last submitted human annotation (not skipped, not a draft), or None."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result") is not None]
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or "")) if done else None


def review_provenance(task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, str]:
    """Who reviewed a task's photo, when, and which model version pre-annotated it."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # the export with users filled in (LabelStudioClient.tasks)
        who = who.get("email") or who.get("id")
    return {
        "annotator": "" if who is None else str(who),
        "submitted_at": str(annotation.get("updated_at") or annotation.get("created_at") or ""),
        "model_version": str(_prediction(task).get("model_version", "")),
    }


def _prediction(task: dict[str, Any]) -> dict[str, Any]:
    """The task's latest pre-annotation ({} without one)."""
    return (task.get("predictions") or [{}])[-1]


def review_edits(tasks: list[dict[str, Any]]) -> pd.DataFrame:
    """What each submitted review changed against the model's pre-annotation.

    Args:
        tasks: Label Studio's JSON export (tasks with ``annotations`` and ``predictions``).

    Returns:
        One row per reviewed photo (``EDIT_COLUMNS``): boxes kept, moved, deleted and added by
        region id; the model's true positives (its boxes matching a reviewed box of the same
        class at IoU >= 0.5, COCO's greedy rule, independent of ids); the grade before and after.
    """
    rows = []
    for task in tasks:
        annotation = submitted_annotation(task)
        if annotation is None:
            continue
        prediction = _prediction(task)
        predicted, reviewed = region_boxes(prediction.get("result")), region_boxes(annotation.get("result"))
        before, after = predicted.set_index("id"), reviewed.set_index("id")
        common = before.index.intersection(after.index)
        corners = ["x_min", "y_min", "x_max", "y_max"]
        ious = (
            np.diag(box_iou(before.loc[common, corners].to_numpy(float), after.loc[common, corners].to_numpy(float)))
            if len(common)
            else np.array([])
        )
        same_class = before.loc[common, "class"].to_numpy() == after.loc[common, "class"].to_numpy()
        kept = int(((ious >= MOVED_IOU) & same_class).sum())
        photo = str(task.get("data", {}).get("photo") or photo_path(str(task.get("data", {}).get("image", ""))))
        rows.append(
            {
                "photo": photo,
                "task_id": int(task.get("id", -1)),
                **review_provenance(task, annotation),
                "predicted": len(predicted),
                "reviewed": len(reviewed),
                "kept": kept,
                "moved": len(common) - kept,
                "deleted": len(before.index.difference(after.index)),
                "added": len(after.index.difference(before.index)),
                "true_positives": _true_positives(predicted, reviewed),
                "grade_before": choice(prediction.get("result")),
                "grade_after": choice(annotation.get("result")),
            }
        )
    return pd.DataFrame(rows, columns=EDIT_COLUMNS)


def _true_positives(predicted: pd.DataFrame, reviewed: pd.DataFrame) -> int:
    if predicted.empty or reviewed.empty:
        return 0
    classes = {name: i for i, name in enumerate(sorted(set(predicted["class"]) | set(reviewed["class"])))}
    found = predicted.assign(image="x", class_id=predicted["class"].map(classes))
    truth = reviewed.assign(image="x", class_id=reviewed["class"].map(classes))
    matches = match_detections(found, truth, iou_threshold=0.5)
    return int(((matches.true_class >= 0) & (matches.pred_class >= 0)).sum())


def review_summary(edits: pd.DataFrame) -> dict[str, float]:
    """The review's headline: the model's precision and recall on the reviewed photos (against
    the reviewer's boxes), edits per photo, and the share of photos whose grade changed."""
    n = len(edits)
    predicted, reviewed, hits = (float(edits[c].sum()) for c in ("predicted", "reviewed", "true_positives"))
    edited = edits[["moved", "deleted", "added"]].sum(axis=1)
    return {
        "photos": float(n),
        "precision": hits / predicted if predicted else float("nan"),
        "recall": hits / reviewed if reviewed else float("nan"),
        "edits_per_photo": float(edited.mean()) if n else float("nan"),
        "kept": float(edits.kept.sum()),
        "moved": float(edits.moved.sum()),
        "deleted": float(edits.deleted.sum()),
        "added": float(edits.added.sum()),
        "grade_changed": float((edits.grade_before != edits.grade_after).mean()) if n else float("nan"),
    }
