"""The split: copies of one source photo grouped (file-name pattern and recorded copies), and
groups assigned to train, val and test, stratified by class, grade and skin tone band."""

from __future__ import annotations

import logging
import math
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from kedro.io import DatasetError

from acne_detection.core.params import DataParams
from acne_detection.core.tables import SPLITS
from acne_detection.datasets import RawExport

logger = logging.getLogger(__name__)


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


def _stratified_split(presence: pd.DataFrame, *, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``holdout`` rows off a (groups x classes) presence matrix, keeping class proportions."""
    y = presence.to_numpy()
    y = y[:, y.any(axis=0)]
    if y.shape[1] < 2:  # the stratifier needs a multi-label target: a constant column is neutral
        y = np.column_stack([y, np.zeros((len(y), 2 - y.shape[1]), dtype=int)])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=holdout, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(keep), np.sort(held)


def split_dataset(images: pd.DataFrame, boxes: pd.DataFrame, params: DataParams) -> pd.DataFrame:
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
    out = images.sort_values("image_id", ignore_index=True)
    out["group"] = merge_groups(out, params.group_pattern)
    if params.split.keep_source_split:
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
    # Held-out sizes in groups as scikit-learn counts them (ceil), but never so many that a
    # split is left without a group (found by the generated-export tests: 3 groups left
    # train + val one group, and the second split failed inside scikit-learn).
    n_test = min(max(1, math.ceil(params.split.test * len(groups))), len(groups) - 2)
    rest, test = _stratified_split(presence, holdout=n_test, seed=params.split.seed)
    if len(rest) < 2:  # on a few groups the stratifier can hold out more than asked (found in CI)
        back = 2 - len(rest)
        rest, test = np.sort(np.concatenate([rest, test[-back:]])), test[:-back]
    n_val = min(
        max(1, math.ceil(params.split.val / (params.split.train + params.split.val) * len(rest))), len(rest) - 1
    )
    train, val = _stratified_split(presence.iloc[rest], holdout=n_val, seed=params.split.seed)
    split_of = {}
    for name, rows in (("train", rest[train]), ("val", rest[val]), ("test", test)):
        split_of.update({groups[i]: name for i in rows})
    out["split"] = out["group"].map(_fill_empty_splits(split_of))
    counts = out["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    logger.info("Split (images): %s from %d source photo groups", counts.to_dict(), len(groups))
    return out


def _fill_empty_splits(split_of: dict[str, str]) -> dict[str, str]:
    """Give an empty split one source photo group from the largest split.

    On a few groups the stratifier can leave a split with none (found by the generated-export
    tests: six groups gave ``val`` nothing, and training needs a validation photo). The group
    moved is the largest split's last, in sorted order, so the result stays deterministic.
    """
    filled = dict(split_of)
    for name in ("val", "test", "train"):
        sizes = pd.Series(list(filled.values())).value_counts()
        if sizes.get(name, 0) == 0:
            donor = sizes.idxmax()
            group = sorted(g for g, s in filled.items() if s == donor)[-1]
            filled[group] = name
            logger.warning("Split: %s had no source photo; moved '%s' there from %s", name, group, donor)
    return filled


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


LINEAGE_COLUMNS = ("image_id", "sha256", "group", "grade", "tone_band", "split")


def describe_lineage(split: pd.DataFrame) -> dict[str, Any]:
    """The train, val and test manifests as MLflow inputs (``MlflowInputs``): what each split
    holds, by photo content (SHA-256), source photo, grade and tone band, so each one's digest
    changes when, and only when, the data does.

    Args:
        split: the split images (``split_dataset``'s output).

    Returns:
        ``{"source": the export's folder, "tables": {"train": ..., "val": ..., "test": ...}}``.
    """
    from acne_detection.core.model_card import export_root

    columns = [c for c in LINEAGE_COLUMNS if c in split]
    root = export_root(split)
    source = str(root) if root else ""
    tables = {
        name: split.loc[split["split"] == name, columns].sort_values("image_id").reset_index(drop=True)
        for name in SPLITS
    }
    return {"source": source, "tables": tables}


def describe_review_lineage(export: RawExport, split: pd.DataFrame) -> dict[str, Any]:
    """The reviewed photos a model trains on, as an MLflow input of the run ("Datasets used"):
    per photo its split, the Label Studio task, the reviewer, when, and the model version that
    pre-annotated it. Nothing is logged when no photo came from a review.

    Args:
        export: the export as read (its ``provenance``, from ``format: label_studio``).
        split: the split images.

    Returns:
        ``{"source", "tables": {"reviewed": ...}}`` for ``MlflowInputs`` (no table without reviews).
    """
    reviewed = export.provenance.merge(split[["image_id", "split"]], on="image_id", how="inner")
    if reviewed.empty:
        return {"source": export.root, "tables": {}}
    logger.info("%d reviewed photos in the split (lineage: the run's MLflow input 'reviewed')", len(reviewed))
    return {"source": export.root, "tables": {"reviewed": reviewed.sort_values("image_id").reset_index(drop=True)}}
