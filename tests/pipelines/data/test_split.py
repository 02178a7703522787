"""The split: groups stay whole, classes are stratified, the same seed gives the same split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from acne_detection.core.params import parse
from acne_detection.pipelines.data.split import assign_groups, find_split_leaks, split_dataset

CLASSES = ["comedone", "papule", "pustule", "nodule"]


def _tables(n_photos: int = 120, copies: int = 3, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for photo in range(n_photos):
        classes = rng.choice(CLASSES, size=rng.integers(0, 4), p=[0.55, 0.25, 0.15, 0.05])
        for copy in range(copies):
            image_id = f"train/photo{photo}_jpg.rf.{copy:032x}.jpg"
            images.append({"image_id": image_id, "source_split": "train"})
            boxes += [{"image_id": image_id, "class": c} for c in classes]
    return pd.DataFrame(images), pd.DataFrame(boxes, columns=["image_id", "class"])


def test_roboflow_copies_form_one_group() -> None:
    ids = pd.Series(["a/levle2_49_jpg.rf.0a1b.jpg", "levle2_49_jpg.rf.ffee.jpg", "plain photo.png"])
    pattern = r"^(?P<group>.+?)_(?:jpe?g|png|bmp|webp)\.rf\.[0-9a-fA-F]+$"
    assert assign_groups(ids, pattern).tolist() == ["levle2_49", "levle2_49", "plain photo"]


def test_groups_never_straddle_splits_and_classes_reach_every_split() -> None:
    images, boxes = _tables()
    split = split_dataset(images, boxes, parse("data", {}))
    assert (split.groupby("group")["split"].nunique() == 1).all()
    shares = split["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.7, abs=0.05)
    assert shares["val"] == pytest.approx(0.2, abs=0.05)
    assert shares["test"] == pytest.approx(0.1, abs=0.05)
    per_split = boxes.merge(split[["image_id", "split"]]).groupby(["split", "class"]).size().unstack(fill_value=0)
    assert (per_split[CLASSES] > 0).all().all()
    # Stratified: each class's share of images in test stays near the test ratio.
    class_share = per_split.loc["test", CLASSES] / per_split[CLASSES].sum()
    assert class_share.between(0.03, 0.2).all()


def test_same_inputs_and_seed_give_the_same_split_and_another_seed_another() -> None:
    images, boxes = _tables()
    first = split_dataset(images, boxes, parse("data", {"split": {"seed": 3}}))
    again = split_dataset(images.sample(frac=1, random_state=1), boxes, parse("data", {"split": {"seed": 3}}))
    assert first.to_csv(index=False) == again.to_csv(index=False)
    other = split_dataset(images, boxes, parse("data", {"split": {"seed": 4}}))
    assert not first["split"].equals(other["split"])


def test_keep_source_split_reports_leaks(caplog: pytest.LogCaptureFixture) -> None:
    images = pd.DataFrame(
        {"image_id": ["p_jpg.rf.aa.jpg", "p_jpg.rf.bb.jpg", "q.jpg"], "source_split": ["train", "test", "val"]}
    )
    split = split_dataset(
        images, pd.DataFrame(columns=["image_id", "class"]), parse("data", {"split": {"keep_source_split": True}})
    )
    assert split["split"].tolist() == ["train", "test", "val"]
    leaks = find_split_leaks(split)
    assert leaks.to_dict("records") == [
        {"group": "p", "splits": "test, train", "images": "p_jpg.rf.aa.jpg; p_jpg.rf.bb.jpg"}
    ]
    assert "Leakage in the split: copies of photo 'p'" in caplog.text
    assert find_split_leaks(split_dataset(*_tables(), parse("data", {}))).empty  # the project's own split never leaks


def test_too_few_groups_is_a_clear_error() -> None:
    images, boxes = _tables(n_photos=2)
    with pytest.raises(DatasetError, match="only 2 source photo groups"):
        split_dataset(images, boxes, parse("data", {}))
