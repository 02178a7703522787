"""The dataset report: images and boxes per class and split, box sizes as the model sees them,
and the figure."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


def _sides_at_training_size(ground_truth: pd.DataFrame, imgsz: int) -> dict[str, pd.Series]:
    """Box width ``w`` and height ``h`` in pixels once the image's longest side is ``imgsz``."""
    scale = imgsz / ground_truth[["width", "height"]].max(axis=1)
    return {
        "w": (ground_truth.x_max - ground_truth.x_min) * scale,
        "h": (ground_truth.y_max - ground_truth.y_min) * scale,
    }


def describe_dataset(split: pd.DataFrame, ground_truth: pd.DataFrame, imgsz: int) -> pd.DataFrame:
    """Images and boxes per class per split, and box sizes as the model will see them.

    Args:
        split: the split images (``split_dataset``'s output).
        ground_truth: boxes with ``split`` (``plan_yolo_dataset``'s output).
        imgsz: ``train.imgsz``, the scale the model sees boxes at (the one training setting read here).

    Returns:
        One row per split and class (and an ``all`` class per split): ``images`` holding the
        class, ``boxes``, median box width and height in training pixels, ``share_small``
        (boxes under 32x32 training pixels, COCO's "small") and ``boxes_per_image``.
    """
    boxes = ground_truth.assign(**_sides_at_training_size(ground_truth, imgsz))
    boxes["small"] = boxes.w * boxes.h < 32 * 32
    rows = []
    for (split_name, cls), g in pd.concat([boxes, boxes.assign(**{"class": "all"})]).groupby(["split", "class"]):
        images_in_split = int((split["split"] == split_name).sum()) if cls == "all" else g.image_id.nunique()
        rows.append(
            {
                "split": split_name,
                "class": cls,
                "images": images_in_split,
                "boxes": len(g),
                "median_w_px": g.w.median(),
                "median_h_px": g.h.median(),
                "share_small": g.small.mean(),
                "boxes_per_image": len(g) / max(images_in_split, 1),
            }
        )
    order = {"train": 0, "val": 1, "test": 2}
    columns = ["split", "class", "images", "boxes", "median_w_px", "median_h_px", "share_small", "boxes_per_image"]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["split", "class"], key=lambda c: c.map(order) if c.name == "split" else c, ignore_index=True
    )


def plot_dataset(
    ground_truth: pd.DataFrame,
    split: pd.DataFrame,
    cooccurrence: pd.DataFrame,
    audit: dict[str, Any],
    imgsz: int,
) -> Figure:
    """Boxes per class and split, box sizes at the training size, lesions per image, photos
    per grade and split, and the label audit (which source class names share a photo).

    Args:
        ground_truth: boxes with ``split`` (``plan_yolo_dataset``'s output).
        split: the split images (with ``grade`` where known).
        cooccurrence: ``audit_labels``'s table (photos holding each pair of source names).
        audit: ``audit_labels``'s verdict.
        imgsz: ``train.imgsz``.

    Returns:
        A five-panel figure.
    """
    sides = _sides_at_training_size(ground_truth, imgsz)
    side = np.sqrt(sides["w"] * sides["h"])
    fig = Figure(figsize=(25, 4.5))
    axes = fig.subplots(1, 5)
    if ground_truth.empty:  # an export of lesion-free photos only: nothing to draw, said so
        for ax in axes[:2]:
            _say(ax, "no lesion box in this export")
    else:
        pd.crosstab(ground_truth["class"], ground_truth["split"]).reindex(columns=["train", "val", "test"]).plot.bar(
            ax=axes[0], rot=0
        )
        axes[0].set(title="boxes per class and split", ylabel="boxes")
        for cls, values in side.groupby(ground_truth["class"]):
            axes[1].hist(values, bins=30, alpha=0.5, label=cls)
        axes[1].axvline(32, color="k", ls="--", lw=1, label="32 px (COCO small)")
        axes[1].set(title=f"box size at imgsz={imgsz} (sqrt of area, px)", xlabel="px", ylabel="boxes")
        axes[1].legend()
    per_image = split["image_id"].map(ground_truth.groupby("image_id").size()).fillna(0)
    axes[2].hist(per_image, bins=min(int(per_image.max()) + 1, 60), rwidth=0.9)
    axes[2].set(title="lesions per image", xlabel="lesions", ylabel="images")
    grade = pd.to_numeric(split.get("grade", pd.Series(dtype=float)), errors="coerce")
    if grade.notna().any():
        pd.crosstab(grade.astype("Int64"), split["split"]).reindex(columns=["train", "val", "test"]).plot.bar(
            ax=axes[3], rot=0
        )
        axes[3].set(title="photos per true grade and split", xlabel="grade", ylabel="photos")
    else:
        _say(axes[3], "no true grades in this export")
    matrix = cooccurrence.set_index("class_name")
    if matrix.empty:
        _say(axes[4], f"label audit: {audit['status']}\n(no class names to compare)")
        fig.tight_layout()
        return fig
    axes[4].imshow(matrix.to_numpy(float), cmap="Blues")
    axes[4].set_xticks(range(len(matrix.columns)), [str(c)[:18] for c in matrix.columns], rotation=30, ha="right")
    axes[4].set_yticks(range(len(matrix.index)), [str(c)[:18] for c in matrix.index])
    for (i, j), v in np.ndenumerate(matrix.to_numpy()):
        axes[4].text(j, i, str(v), ha="center", va="center", fontsize=8)
    color = {"warning": "red", "handled": "darkorange"}.get(audit["status"], "black")
    axes[4].set_title(f"label audit: {audit['status']}\nphotos holding both source class names", color=color)
    fig.tight_layout()
    return fig


def _say(ax: Any, text: str) -> None:
    """A panel that states why it holds no chart."""
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
