"""Nodes of the ``data`` pipeline: validate → split → plan the YOLO-format dataset.

Every node works on tables (``pandas.DataFrame``); reading and writing files is left to the
catalog's datasets (``AnnotatedExport`` in, ``YoloDatasetFolder`` out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from kedro.io import DatasetError
from matplotlib.figure import Figure

from acne_detection.datasets.export import RawExport
from acne_detection.params import DataParams, parse

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


def map_classes(raw: RawExport, params: dict[str, Any]) -> tuple[RawExport, pd.DataFrame]:
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
    p = parse("data", params)
    boxes = raw.boxes.assign(**{"class": map_class_names(raw.boxes["class_name"], p)})
    if p.unmapped_class == "error" and boxes["class"].isna().any():
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


def validate_export(raw: RawExport, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
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
    p = parse("data", params)
    images = raw.images.copy()
    images["image_reason"] = images["image_problem"]
    tiny = (images.image_reason == "") & ((images.width < _MIN_SIDE_PX) | (images.height < _MIN_SIDE_PX))
    images.loc[tiny, "image_reason"] = "image too small"
    images.loc[tiny, "image_detail"] = (
        images.loc[tiny, "width"].astype(str)
        + " x "
        + images.loc[tiny, "height"].astype(str)
        + f" px; Ultralytics skips images under {_MIN_SIDE_PX} px"
    )

    boxes = raw.boxes.merge(images[["image_id", "width", "height", "image_reason"]], on="image_id", how="left")
    reason, detail = _box_reasons(boxes, p.edge_tolerance_px)
    key = (
        boxes[["image_id", "class"]].astype(str).join(boxes[["x_min", "y_min", "x_max", "y_max"]].round(1).astype(str))
    )
    duplicate = (reason == "") & key.duplicated()
    reason[duplicate], detail[duplicate] = "duplicate box", "same class and corners as an earlier box"
    _quarantine_images(images, boxes, reason, detail, "invalid box", _images_with_bad_boxes(boxes, reason, detail))
    _quarantine_images(images, boxes, reason, detail, "byte-identical copy", _resolve_copies(images, boxes, reason))
    images["copies"] = _copies_of(images)

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

    quarantine = pd.concat(
        [
            raw.problems.assign(kind=np.where(raw.problems.image_id != "", "image", "file")),
            images[images.image_reason != ""].assign(
                kind="image", reason=lambda d: d.image_reason, detail=lambda d: d.image_detail
            ),
            boxes[reason != ""].assign(
                kind="box", file=lambda d: d.annotation_file, reason=reason[reason != ""], detail=detail[reason != ""]
            ),
        ],
        ignore_index=True,
    )[QUARANTINE_COLUMNS]
    summary = _reconcile(raw, accepted_images, accepted_boxes, quarantine)
    if p.strict and len(quarantine):
        by_reason = quarantine.groupby("reason").size().to_dict()
        first = quarantine.iloc[0]
        raise DatasetError(
            f"strict mode: {len(quarantine)} items quarantined {by_reason}; "
            f"first: {first.file}: {first.reason} ({first.detail})"
        )
    return accepted_images.reset_index(drop=True), accepted_boxes.reset_index(drop=True), quarantine, summary


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


def describe_counts(counts: dict[str, int]) -> str:
    """The reconciliation in words, as the run prints it after validation and again at its end.

    Args:
        counts: ``validate_export``'s counts.

    Returns:
        One line: images and boxes read = accepted + quarantined, and other files quarantined.
    """
    return (
        "Ingestion: {images_read} images read = {images_accepted} accepted + {images_quarantined} quarantined; "
        "{boxes_read} boxes read = {boxes_accepted} accepted + {boxes_quarantined} quarantined; "
        "{files_quarantined} other files quarantined"
    ).format(**counts)


def summarise_quarantine(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Count quarantined items by kind and reason, for the report's summary table.

    Args:
        quarantine: the report ``validate_export`` returned.

    Returns:
        One row per (kind, reason) with its ``count``, most frequent first.
    """
    counts = quarantine.groupby(["kind", "reason"]).size().rename("count").reset_index()
    return counts.sort_values(["count", "kind", "reason"], ascending=[False, True, True], ignore_index=True)


def assign_groups(image_ids: pd.Series, pattern: str) -> pd.Series:
    """Name the source photograph each image comes from; copies of one photo share a group.

    Args:
        image_ids: image paths relative to the export.
        pattern: regex with a ``group`` named group, matched against the file stem;
            the default recognises Roboflow's ``NAME_jpg.rf.HASH``.

    Returns:
        The group per image: the regex's ``group`` where it matches, else the stem.
    """
    regex = re.compile(pattern)

    def _group(image_id: str) -> str:
        path = PurePosixPath(image_id)
        match = regex.match(path.stem)
        return match.group("group") if match else path.stem

    return image_ids.map(_group)


def merge_groups(images: pd.DataFrame, pattern: str) -> pd.Series:
    """Group each image with every photo it is linked to, by name or by content.

    Names give groups (``assign_groups``); an image's ``copies`` (other files with the same
    bytes, e.g. ``IMG_0042.jpg`` = ``levle3_17_jpg.rf.9f.jpg``) link its group to theirs, and
    linked groups merge (union-find), so no copy of a photo can sit in another split than
    its siblings. A future near-duplicate check adds its pairs to ``copies`` the same way.

    Args:
        images: ``image_id`` and, optionally, ``copies`` (``; ``-separated image ids).
        pattern: ``assign_groups``'s regex.

    Returns:
        The merged group per image, named after a group the pattern recognised where there is
        one (``levle3_17``, not ``IMG_0042``), else the alphabetically first.
    """
    own = assign_groups(images["image_id"], pattern)
    regex = re.compile(pattern)
    linked = (images["copies"] if "copies" in images else pd.Series("", index=images.index)).fillna("").astype(str)
    copies = [[c for c in row.split("; ") if c] for row in linked]
    every_id = [*images["image_id"], *(c for row in copies for c in row)]
    # a name the pattern derived (Roboflow's source photo) names a merged group before a bare stem
    derived = {m.group("group") for i in every_id if (m := regex.match(PurePosixPath(i).stem))}
    parent: dict[str, str] = {}

    def _root(g: str) -> str:
        parent.setdefault(g, g)
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for group, row in zip(own, copies):
        if not row:
            continue
        for other in assign_groups(pd.Series(row, dtype=object), pattern):
            a, b = sorted((_root(group), _root(other)), key=lambda g: (g not in derived, g))
            parent[b] = a
    return own.map(_root)


def _stratified_split(presence: pd.DataFrame, *, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows of a (groups x classes) presence matrix, keeping class proportions."""
    y = presence.to_numpy()
    y = y[:, y.any(axis=0)]
    if y.shape[1] < 2:  # the stratifier needs a multi-label target: a constant column is neutral
        y = np.column_stack([y, np.zeros((len(y), 2 - y.shape[1]), dtype=int)])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(keep), np.sort(held)


def split_dataset(images: pd.DataFrame, boxes: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Assign every image to train, val or test, keeping groups whole and classes stratified.

    Stratification is multi-label on the classes each group contains, with background-only
    groups as a class of their own, on each group's grade where images have a ``grade`` and on
    its skin tone band where they have a ``tone_band``; the same inputs and seed give the same split.

    Args:
        images: accepted images (``image_id``, ``source_split``, ...).
        boxes: accepted boxes (``image_id``, ``class``).
        params: the ``data`` parameters (``group_pattern``, ``split``).

    Returns:
        ``images`` with ``group`` and ``split`` columns, sorted by ``image_id``.

    Raises:
        DatasetError: too few groups to give every split at least one.
    """
    p = parse("data", params)
    out = images.sort_values("image_id", ignore_index=True)
    out["group"] = merge_groups(out, p.group_pattern)
    if p.split.keep_source_split:
        out["split"] = out["source_split"].replace("", "train")
        return out
    group_of = out.set_index("image_id")["group"]
    presence = pd.crosstab(boxes["image_id"].map(group_of), boxes["class"]).clip(upper=1)
    groups = sorted(out["group"].unique())
    presence = presence.reindex(groups, fill_value=0)
    presence["(background)"] = (presence.sum(axis=1) == 0).astype(int)
    if "grade" in out and out["grade"].notna().any():  # so every split holds every grade
        grade = out.groupby("group")["grade"].first().reindex(groups)
        presence = presence.join(pd.get_dummies(grade.astype("string"), prefix="grade").astype(int)).fillna(0)
    if "tone_band" in out and (out["tone_band"] != "").any():  # so the test split is not all one skin tone
        band = out.groupby("group")["tone_band"].first().reindex(groups)
        presence = presence.join(pd.get_dummies(band, prefix="tone").astype(int)).fillna(0)
    if len(groups) < 3:
        raise DatasetError(f"only {len(groups)} source photo groups: need at least 3 to fill train, val and test")
    rest, test = _stratified_split(presence, holdout=p.split.test, seed=p.split.seed)
    train, val = _stratified_split(
        presence.iloc[rest], holdout=p.split.val / (p.split.train + p.split.val), seed=p.split.seed
    )
    split_of = {}
    for name, rows in (("train", rest[train]), ("val", rest[val]), ("test", test)):
        split_of.update({groups[i]: name for i in rows})
    out["split"] = out["group"].map(split_of)
    counts = out["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    logger.info("Split (images): %s from %d source photo groups", counts.to_dict(), len(groups))
    return out


def find_split_leaks(split: pd.DataFrame) -> pd.DataFrame:
    """Copies of one source photo found in more than one split: leakage, listed for the report.

    Always empty for the project's own split (groups are kept whole); with
    ``keep_source_split`` it audits the export's split.

    Args:
        split: the split images (``split_dataset``'s output: ``group``, ``split``, ``image_id``).

    Returns:
        One row per leaking group: ``group``, ``splits`` (e.g. ``"test, train"``), ``images``
        (its image ids, ``;``-separated).
    """
    spread = split.groupby("group").agg(
        splits=("split", lambda s: ", ".join(sorted(set(s)))),
        n_splits=("split", "nunique"),
        images=("image_id", "; ".join),
    )
    leaks = spread[spread.n_splits > 1].drop(columns="n_splits").reset_index()
    for row in leaks.itertuples():
        logger.warning("Leakage in the split: copies of photo '%s' are in %s (%s)", row.group, row.splits, row.images)
    return leaks


def _target_name(image_id: str) -> str:
    """A file name unique to ``image_id``, safe on every file system, still recognisable."""
    path = PurePosixPath(image_id)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80]
    return f"{stem}_{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def plan_yolo_dataset(
    images: pd.DataFrame, boxes: pd.DataFrame, params: dict[str, Any]
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
    p = parse("data", params)
    class_id = {c: i for i, c in enumerate(p.classes)}
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
        + ((gt.x_min + gt.x_max) / 2 / w).map("{:.6f}".format)
        + " "
        + ((gt.y_min + gt.y_max) / 2 / h).map("{:.6f}".format)
        + " "
        + ((gt.x_max - gt.x_min) / w).map("{:.6f}".format)
        + " "
        + ((gt.y_max - gt.y_min) / h).map("{:.6f}".format)
    )
    plan["labels"] = plan["image_id"].map(lines.groupby(gt["image_id"]).agg("\n".join)).fillna("")
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
    return pd.DataFrame(rows).sort_values(
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
        axes[3].text(0.5, 0.5, "no true grades in this export", ha="center", va="center")
        axes[3].set_axis_off()
    matrix = cooccurrence.set_index("class_name")
    axes[4].imshow(matrix.to_numpy(float), cmap="Blues")
    axes[4].set_xticks(range(len(matrix.columns)), [str(c)[:18] for c in matrix.columns], rotation=30, ha="right")
    axes[4].set_yticks(range(len(matrix.index)), [str(c)[:18] for c in matrix.index])
    for (i, j), v in np.ndenumerate(matrix.to_numpy()):
        axes[4].text(j, i, str(v), ha="center", va="center", fontsize=8)
    color = {"warning": "red", "handled": "darkorange"}.get(audit["status"], "black")
    axes[4].set_title(f"label audit: {audit['status']}\nphotos holding both source class names", color=color)
    fig.tight_layout()
    return fig
