"""Validation of an export: class names mapped, every image and box checked, unusable ones
quarantined with a reason, byte-identical copies resolved, and the counts reconciled."""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pandas as pd
from kedro.io import DatasetError

from acne_detection.core.ingestion import describe_counts
from acne_detection.core.params import DataParams
from acne_detection.datasets.export import RawExport

logger = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["kind", "file", "image_id", "reason", "detail"]
_MIN_SIDE_PX = 10  # Ultralytics' check_image refuses smaller images; quarantined here, not lost in training
_GEOMETRY_REASONS = ("non-numeric or NaN value", "zero or negative width or height", "box past the image edge")


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def map_class_names(names: pd.Series, params: DataParams) -> pd.Series:
    """Map source class names to the project's classes, ignoring case, spacing and ``_``/``-``.

    A name not found as written is tried without a leading number (Roboflow's ``0 papule``,
    ``2-pustules``) and with its words singular, on both sides (``blackhead`` finds ``blackheads``).

    Args:
        names: source class names, one per box.
        params: the ``data`` parameters (``classes`` and ``class_map``).

    Returns:
        The project class per box, ``None`` where the name is not mapped.
    """
    pairs = [*((c, c) for c in params.classes), *params.class_map.items()]
    exact = {_normalise(k): v for k, v in pairs}
    loose = {_loose(k): v for k, v in pairs}
    return names.map(lambda n: exact.get(_normalise(n), loose.get(_loose(n))))


def _loose(name: str) -> str:
    """A class name without a leading number and with every word singular: ``2-Pustules`` → ``pustule``."""
    return " ".join(re.sub(r"s$", "", word) for word in re.sub(r"^\d+ ", "", _normalise(name)).split())


def _box_reasons(boxes: pd.DataFrame, tolerance: float) -> tuple[pd.Series, pd.Series]:
    """The first reason each box is unusable ("" if none) and a detail text."""
    corners = boxes[["x_min", "y_min", "x_max", "y_max"]].astype(float)
    w, h = boxes["width"].astype(float), boxes["height"].astype(float)
    overhang = pd.concat([-corners.x_min, -corners.y_min, corners.x_max - w, corners.y_max - h], axis=1).max(axis=1)
    conditions = [
        boxes["image_reason"] != "",
        ~np.isfinite(corners).all(axis=1),
        boxes["class"].isna(),
        (corners.x_max - corners.x_min <= 0) | (corners.y_max - corners.y_min <= 0),
        overhang > tolerance,
    ]
    choices = [
        "image quarantined",
        "non-numeric or NaN value",
        "unknown class",
        "zero or negative width or height",
        "box past the image edge",
    ]
    reason = pd.Series(np.select(conditions, choices, default=""), index=boxes.index)
    detail = np.select(
        conditions,
        [
            boxes["image_reason"],
            "a coordinate is not a number",
            "class '" + boxes["class_name"].astype(str) + "' is not in class_map",
            "box is "
            + (corners.x_max - corners.x_min).round(1).astype(str)
            + " x "
            + (corners.y_max - corners.y_min).round(1).astype(str)
            + " px",
            "extends "
            + overhang.round(1).astype(str)
            + " px past the edge of a "
            + w.astype(int).astype(str)
            + " x "
            + h.astype(int).astype(str)
            + " image",
        ],
        default="",
    )
    return reason, pd.Series(detail, index=boxes.index)


def map_classes(raw: RawExport, params: DataParams) -> tuple[RawExport, pd.DataFrame]:
    """Give every box its project class, and say which mapping is in force.

    Args:
        raw: the export as ``AnnotatedExport`` read it.
        params: the ``data`` parameters (``classes``, ``class_map``, ``unmapped_class``).

    Returns:
        The export with a ``class`` column on its boxes (``None`` where the source name is not
        mapped), and the mapping table: one row per source class name with ``class`` ("" when
        unmapped) and its number of ``boxes``.

    Raises:
        DatasetError: with ``unmapped_class: error``, on the first box whose class name
            ``class_map`` does not know, naming its annotation file.
    """
    boxes = raw.boxes.assign(**{"class": map_class_names(raw.boxes["class_name"], params)})
    if params.unmapped_class == "error" and boxes["class"].isna().any():
        row = boxes[boxes["class"].isna()].iloc[0]
        raise DatasetError(
            f"{row.annotation_file}: class '{row.class_name}' is not in data.class_map (conf/*/parameters_data.yml)"
        )
    table = boxes.groupby("class_name", dropna=False).agg(boxes=("image_id", "size"), mapped=("class", "first"))
    table = (
        table.reset_index()[["class_name", "mapped", "boxes"]].rename(columns={"mapped": "class"}).fillna({"class": ""})
    )
    logger.info(
        "Class mapping in force (source name -> class): %s",
        dict(zip(table.class_name, table["class"].replace("", "(unmapped)"))),
    )
    return dataclasses.replace(raw, boxes=boxes), table


def validate_export(raw: RawExport, params: DataParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Accept what is usable and quarantine the rest, each with a named reason.

    Images are quarantined when they do not decode, are under 10 px on a side (Ultralytics
    would skip them), or carry a box with invalid geometry (a lesion must not silently lose
    its label). Byte-identical copies are resolved among the copies that pass all of that
    (``_resolve_copies``), so a photo is lost only when no copy of it is usable; each accepted
    image lists its copies in ``copies``, which the split uses to keep them in one group.
    Boxes of an unknown class and duplicate boxes are dropped from otherwise good images.
    Overhangs within ``edge_tolerance_px`` are clipped.

    Args:
        raw: the export with each box's ``class`` (``map_classes``'s output).
        params: the ``data`` parameters.

    Returns:
        Accepted images, accepted boxes (with ``class``), the quarantine report (one row per
        quarantined file, image or box) and the counts, which reconcile:
        ``images_read == images_accepted + images_quarantined`` and likewise for boxes.

    Raises:
        DatasetError: in strict mode, when anything is quarantined.
    """
    images = _check_images(raw.images)
    boxes, reason, detail = _check_boxes(raw.boxes, images, params.edge_tolerance_px)
    _quarantine_images(images, boxes, reason, detail, "invalid box", _images_with_bad_boxes(boxes, reason, detail))
    _quarantine_images(images, boxes, reason, detail, "byte-identical copy", _resolve_copies(images, boxes, reason))
    images["copies"] = _copies_of(images)
    accepted_images, accepted_boxes = _accepted(images, boxes, reason)
    quarantine = _quarantine_report(raw.problems, images, boxes, reason, detail)
    summary = _reconcile(raw, accepted_images, accepted_boxes, quarantine)
    if params.strict and len(quarantine):
        by_reason = quarantine.groupby("reason").size().to_dict()
        first = quarantine.iloc[0]
        raise DatasetError(
            f"strict mode: {len(quarantine)} items quarantined {by_reason}; "
            f"first: {first.file}: {first.reason} ({first.detail})"
        )
    return accepted_images.reset_index(drop=True), accepted_boxes.reset_index(drop=True), quarantine, summary


def _check_images(probed: pd.DataFrame) -> pd.DataFrame:
    """The images with an ``image_reason``: what probing found ("" when it decodes), or "image too small"."""
    images = probed.copy()
    images["image_reason"] = images["image_problem"]
    tiny = (images.image_reason == "") & ((images.width < _MIN_SIDE_PX) | (images.height < _MIN_SIDE_PX))
    images.loc[tiny, "image_reason"] = "image too small"
    images.loc[tiny, "image_detail"] = (
        images.loc[tiny, "width"].astype(str)
        + " x "
        + images.loc[tiny, "height"].astype(str)
        + f" px; Ultralytics skips images under {_MIN_SIDE_PX} px"
    )
    return images


def _check_boxes(
    raw_boxes: pd.DataFrame, images: pd.DataFrame, tolerance: float
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Each box with its image's size, and why it is unusable ("" when it is): geometry, class, duplicate."""
    boxes = raw_boxes.merge(images[["image_id", "width", "height", "image_reason"]], on="image_id", how="left")
    reason, detail = _box_reasons(boxes, tolerance)
    key = (
        boxes[["image_id", "class"]].astype(str).join(boxes[["x_min", "y_min", "x_max", "y_max"]].round(1).astype(str))
    )
    duplicate = (reason == "") & key.duplicated()
    reason[duplicate], detail[duplicate] = "duplicate box", "same class and corners as an earlier box"
    return boxes, reason, detail


def _accepted(images: pd.DataFrame, boxes: pd.DataFrame, reason: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accepted images and their accepted boxes, overhangs within the tolerance clipped."""
    w, h = boxes["width"].astype(float), boxes["height"].astype(float)
    accepted_boxes = boxes[reason == ""].assign(
        x_min=lambda b: b.x_min.clip(0, w),
        y_min=lambda b: b.y_min.clip(0, h),
        x_max=lambda b: b.x_max.clip(0, w),
        y_max=lambda b: b.y_max.clip(0, h),
    )[["image_id", "class", "class_name", "x_min", "y_min", "x_max", "y_max", "annotation_file"]]
    accepted_images = images[images.image_reason == ""].drop(columns=["image_problem", "image_detail", "image_reason"])
    n_disagree = int(images.image_detail.str.contains("boxes differ", regex=False).sum())
    if n_disagree:
        logger.warning(
            "%d byte-identical copies carry other boxes than the copy kept (the copy with the most valid "
            "boxes is kept); see 'byte-identical copy' rows in the quarantine report",
            n_disagree,
        )
    return accepted_images, accepted_boxes


def _quarantine_report(
    problems: pd.DataFrame, images: pd.DataFrame, boxes: pd.DataFrame, reason: pd.Series, detail: pd.Series
) -> pd.DataFrame:
    """One row per quarantined file, image or box, with its reason."""
    return pd.concat(
        [
            problems.assign(kind=np.where(problems.image_id != "", "image", "file")),
            images[images.image_reason != ""].assign(
                kind="image", reason=lambda d: d.image_reason, detail=lambda d: d.image_detail
            ),
            boxes[reason != ""].assign(
                kind="box", file=lambda d: d.annotation_file, reason=reason[reason != ""], detail=detail[reason != ""]
            ),
        ],
        ignore_index=True,
    )[QUARANTINE_COLUMNS]


def _images_with_bad_boxes(boxes: pd.DataFrame, reason: pd.Series, detail: pd.Series) -> pd.Series:
    """Per image with a box of invalid geometry, its first such box's reason and detail."""
    first = boxes[reason.isin(_GEOMETRY_REASONS)].groupby("image_id").head(1)
    return pd.Series((reason[first.index] + ": " + detail[first.index]).to_numpy(), index=first.image_id.to_numpy())


def _quarantine_images(
    images: pd.DataFrame, boxes: pd.DataFrame, reason: pd.Series, detail: pd.Series, why: str, details: pd.Series
) -> None:
    """Quarantine the still-accepted images named in ``details`` (index: image id; values: the
    detail), and mark their remaining boxes, in place on this node's own working tables."""
    hit = images.image_id.isin(details.index) & (images.image_reason == "")
    images.loc[hit, "image_reason"] = why
    images.loc[hit, "image_detail"] = images.loc[hit, "image_id"].map(details)
    now_bad = boxes.image_id.isin(images.loc[hit, "image_id"]) & (reason == "")
    reason[now_bad], detail[now_bad] = "image quarantined", why


def _resolve_copies(images: pd.DataFrame, boxes: pd.DataFrame, reason: pd.Series) -> pd.Series:
    """Among byte-identical copies that each passed validation, keep one; drop the rest.

    Duplicates are resolved after validation, so a copy with a broken annotation never takes
    a valid twin down with it. The rule, deterministic: keep the copy with the most valid
    boxes (an annotator misses a lesion more often than drawing one that is not there), then
    the first by image id.

    Returns:
        For each dropped copy (index: its image id), the quarantine detail: the copy kept,
        and whether their boxes differ.
    """
    usable = images[(images.image_reason == "") & (images.sha256 != "")]
    good = boxes[reason == ""]
    corners = good[["x_min", "y_min", "x_max", "y_max"]].astype(float).round(1).astype(str)
    signature = (
        good["class"].astype(str)
        + ":"
        + corners.x_min
        + ","
        + corners.y_min
        + ","
        + corners.x_max
        + ","
        + corners.y_max
    )
    box_sets = signature.groupby(good.image_id).agg(lambda v: tuple(sorted(v)))
    ranked = usable.assign(n_boxes=usable.image_id.map(box_sets).map(lambda b: len(b) if isinstance(b, tuple) else 0))
    ranked = ranked.sort_values(["n_boxes", "image_id"], ascending=[False, True], kind="mergesort")
    keeper = ranked.drop_duplicates("sha256").set_index("sha256")["image_id"]
    copies = ranked[~ranked.image_id.isin(keeper)]
    details = {}
    for row in copies.itertuples():
        kept = keeper[row.sha256]
        mine, theirs = box_sets.get(row.image_id, ()), box_sets.get(kept, ())
        note = "" if mine == theirs else f"; boxes differ ({kept}: {len(theirs)} boxes, this copy: {len(mine)})"
        details[row.image_id] = f"same bytes as {kept}, the copy kept{note}"
    return pd.Series(details, dtype=object)


def _copies_of(images: pd.DataFrame) -> pd.Series:
    """Every other file with the same bytes as each image (``; ``-separated), valid or not:
    copies of one photo, which the split keeps in one group."""
    named = images[(images.sha256 != "") & images.sha256.duplicated(keep=False)]
    members = named.groupby("sha256")["image_id"].agg(list)
    others = pd.Series(
        ["; ".join(i for i in members[sha] if i != image_id) for sha, image_id in zip(named.sha256, named.image_id)],
        index=named.index,
        dtype=object,
    )
    return others.reindex(images.index).fillna("")


def _reconcile(raw: RawExport, images: pd.DataFrame, boxes: pd.DataFrame, quarantine: pd.DataFrame) -> dict[str, int]:
    counts = {
        "images_read": len(raw.images) + int((raw.problems.image_id != "").sum()),
        "images_accepted": len(images),
        "images_quarantined": int((quarantine.kind == "image").sum()),
        "boxes_read": len(raw.boxes),
        "boxes_accepted": len(boxes),
        "boxes_quarantined": int((quarantine.kind == "box").sum()),
        "files_quarantined": int((quarantine.kind == "file").sum()),
    }
    for what in ("images", "boxes"):
        if counts[f"{what}_read"] != counts[f"{what}_accepted"] + counts[f"{what}_quarantined"]:
            raise AssertionError(f"{what} do not reconcile: {counts}")  # a bug in this node, never the data
    logger.info(describe_counts(counts))
    return counts


def summarise_quarantine(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Count quarantined items by kind and reason, for the report's summary table.

    Args:
        quarantine: the report ``validate_export`` returned.

    Returns:
        One row per (kind, reason) with its ``count``, most frequent first.
    """
    counts = quarantine.groupby(["kind", "reason"]).size().rename("count").reset_index()
    return counts.sort_values(["count", "kind", "reason"], ascending=[False, True, True], ignore_index=True)
