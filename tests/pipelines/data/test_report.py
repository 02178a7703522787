"""The dataset report and the class mapping table."""

from __future__ import annotations

import pandas as pd
import pytest

from acne_detection.core.params import parse
from acne_detection.datasets import AnnotatedExport
from acne_detection.pipelines.data.report import describe_dataset, plot_dataset
from acne_detection.pipelines.data.validation import map_classes


def test_dataset_report_counts_and_sizes_at_training_scale() -> None:
    gt = pd.DataFrame(
        {
            "split": ["train", "train", "test"],
            "image_id": ["a", "a", "b"],
            "class": ["comedone", "nodule", "comedone"],
            "x_min": [0, 0, 0],
            "y_min": [0, 0, 0],
            "x_max": [20, 200, 40],
            "y_max": [20, 200, 40],
            "width": [640, 640, 640],
            "height": [640, 640, 640],
        }
    )
    split = pd.DataFrame({"image_id": ["a", "b", "c"], "split": ["train", "test", "train"]})
    report = describe_dataset(split, gt, 320).set_index(["split", "class"])
    assert report.loc[("train", "all"), "images"] == 2 and report.loc[("train", "all"), "boxes"] == 2
    assert report.loc[("train", "comedone"), "median_w_px"] == pytest.approx(10)  # 20 px at 640 -> 10 at 320
    assert report.loc[("train", "comedone"), "share_small"] == 1.0
    assert report.loc[("train", "nodule"), "share_small"] == 0.0
    assert report.loc[("train", "all"), "boxes_per_image"] == 1.0
    cooccurrence = pd.DataFrame({"class_name": ["a", "b"], "a": [3, 0], "b": [0, 2]})
    fig = plot_dataset(gt, split.assign(grade=["0", "3", ""]), cooccurrence, {"status": "warning"}, 320)
    assert len(fig.axes) == 5 and fig.axes[4].get_title().startswith("label audit: warning")
    assert "photos per true grade" in fig.axes[3].get_title()


def test_class_mapping_table_lists_every_source_name(acne04_sample, data_params) -> None:
    _, table = map_classes(AnnotatedExport(path=str(acne04_sample)).load(), parse("data", data_params))
    table = table.set_index("class_name")
    assert table.loc["whitehead and blackhead", "class"] == "comedone"
    assert table["class"].ne("").all()
    assert table["boxes"].sum() > 0


def test_class_names_map_through_case_spacing_numbering_and_plurals(data_params) -> None:
    from acne_detection.core.params import parse
    from acne_detection.pipelines.data.validation import map_class_names

    names = pd.Series(
        [
            "Whitehead and Blackhead",
            "0 comedone",
            "1-Papules",
            "pustules_",
            "NODULES AND CYSTS",
            "blackhead",
            "scar",
            "3",
            "acne scars",
        ]
    )
    mapped = [m if isinstance(m, str) else None for m in map_class_names(names, parse("data", data_params))]
    assert mapped == ["comedone", "comedone", "papule", "pustule", "nodule", None, None, None, None]
    with_map = parse(
        "data", {**data_params, "class_map": {**data_params["class_map"], "blackheads": "comedone", "3": "nodule"}}
    )
    assert map_class_names(pd.Series(["blackhead", "3"]), parse("data", with_map)).tolist() == ["comedone", "nodule"]
