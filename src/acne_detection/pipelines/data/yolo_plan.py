"""The YOLO-format dataset's layout: where each image goes and its label lines."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from acne_detection.core.params import DataParams

logger = logging.getLogger(__name__)


def _target_name(image_id: str) -> str:
    """A file name unique to ``image_id``, safe on every file system, still recognisable."""
    path = PurePosixPath(image_id)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80]
    return f"{stem}_{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def _six_decimals(values: pd.Series) -> pd.Series:
    """Label coordinates as text; an export without a single box gives an empty text column
    (found by the generated-export tests: ``map`` kept an empty column numeric)."""
    return values.map("{:.6f}".format).astype(str)


def plan_yolo_dataset(
    images: pd.DataFrame, boxes: pd.DataFrame, params: DataParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lay out the YOLO-format dataset: where each image goes and its label lines.

    Args:
        images: split images (``split_dataset``'s output).
        boxes: accepted boxes in pixels.
        params: the ``data`` parameters (``classes`` gives the class ids).

    Returns:
        The manifest ``YoloDatasetFolder`` writes (``split``, ``image_id``, ``file``,
        ``sha256``, ``orientation``, ``mode``, ``image``, ``label``, ``labels``), and the boxes
        with ``split``, ``image`` (relative path in the YOLO folder) and ``class_id``, which
        evaluation uses as ground truth.
    """
    class_id = {c: i for i, c in enumerate(params.classes)}
    plan = images.copy()
    names = plan["image_id"].map(_target_name)
    suffix = np.where(
        (plan["orientation"] == 1)
        & plan["mode"].isin(["RGB", "L"])
        & plan["file"].str.lower().str.endswith((".jpg", ".jpeg", ".png")),
        plan["file"].map(lambda f: PurePosixPath(f).suffix.lower()),
        ".png",
    )
    plan["image"] = plan["split"] + "/images/" + names + suffix
    plan["label"] = plan["split"] + "/labels/" + names + ".txt"
    gt = boxes.merge(plan[["image_id", "split", "image", "width", "height"]], on="image_id")
    gt["class_id"] = gt["class"].map(class_id).astype(int)
    w, h = gt["width"].astype(float), gt["height"].astype(float)
    lines = (
        gt["class_id"].astype(str)
        + " "
        + _six_decimals((gt.x_min + gt.x_max) / 2 / w)
        + " "
        + _six_decimals((gt.y_min + gt.y_max) / 2 / h)
        + " "
        + _six_decimals((gt.x_max - gt.x_min) / w)
        + " "
        + _six_decimals((gt.y_max - gt.y_min) / h)
    )
    labels = lines.groupby(gt["image_id"]).agg("\n".join).to_dict()
    plan["labels"] = [labels.get(image_id, "") for image_id in plan["image_id"]]  # "": a lesion-free photo
    columns = ["split", "image_id", "file", "sha256", "orientation", "mode", "image", "label", "labels"]
    gt_columns = [
        "split",
        "image",
        "image_id",
        "class",
        "class_id",
        "x_min",
        "y_min",
        "x_max",
        "y_max",
        "width",
        "height",
    ]
    return plan[columns], gt[gt_columns].sort_values(["image", "x_min", "y_min"], ignore_index=True)
