"""The preview draws what the trainer builds, from the same settings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from acne_detection.core.params import parse
from acne_detection.core.training_config import augmentation_warnings, training_overrides, ultralytics_cfg
from acne_detection.datasets import YoloDatasetFolder
from acne_detection.pipelines.preview.nodes import (
    augmentation_tiles,
    augmented_samples,
    count_box_losses,
    preview_augmentations,
    preview_each_augmentation,
)
from acne_detection.training.trainers import ProjectTrainer

AUGMENT_KEYS = list(parse("train", {}).augment.model_dump())
OFF = {
    "mosaic": 0.0,
    "mixup": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
    "fliplr": 0.0,
}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def one_lesion(tmp_path_factory: pytest.TempPathFactory):
    """A YOLO dataset whose photos each hold one dark lesion, box known exactly."""
    import pandas as pd

    root = tmp_path_factory.mktemp("one_lesion")
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        img = Image.new("RGB", (128, 128), (220, 180, 160))
        ImageDraw.Draw(img).ellipse((70, 30, 90, 50), fill=(40, 20, 20))  # centre (80, 40), 20 px wide
        src = root / f"src{i}.png"
        img.save(src)
        rows.append(
            {
                "split": split,
                "image_id": src.name,
                "file": str(src),
                "sha256": str(i),
                "orientation": 1,
                "mode": "RGB",
                "image": f"{split}/images/p{i}.png",
                "label": f"{split}/labels/p{i}.txt",
                "labels": "0 0.625000 0.312500 0.156250 0.156250",
            }
        )
    folder = YoloDatasetFolder(path=str(root / "yolo"), names=["comedone", "papule", "pustule", "nodule"])
    folder.save(pd.DataFrame(rows))
    return folder.load()


def test_preview_settings_equal_the_trainers_own(tiny_yolo, tmp_path: Path) -> None:
    dataset, _ = tiny_yolo
    params = parse("train", {"imgsz": 64, "augment": {"degrees": 7.0, "hsv_s": 0.3}})
    overrides = training_overrides(params, data_yaml=dataset.data_yaml, device="cpu", workdir=tmp_path)
    trainer = ProjectTrainer(overrides={**overrides, "model": "yolov8n.yaml"})
    preview_cfg = ultralytics_cfg(overrides)
    for key in [*AUGMENT_KEYS, "imgsz", "seed"]:
        assert getattr(preview_cfg, key) == getattr(trainer.args, key), key
    assert (trainer.args.degrees, trainer.args.hsv_s) == (7.0, 0.3)
    # no Ultralytics integration or usage event: only its no-op defaults
    assert {f.__module__ for fs in trainer.callbacks.values() for f in fs} == {"ultralytics.utils.callbacks.base"}


def test_fliplr_one_mirrors_the_boxes_and_zero_does_not(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    plain = augmented_samples(
        dataset, parse("train", {"imgsz": 96, "augment": {**OFF, "fliplr": 0.0}}), samples=3, seed=0
    )
    flipped = augmented_samples(
        dataset, parse("train", {"imgsz": 96, "augment": {**OFF, "fliplr": 1.0}}), samples=3, seed=0
    )
    assert len(plain) == len(flipped) == 3
    assert sum(len(a["bboxes"]) for a in plain) > 0  # boxes to mirror, or the box check below checks nothing
    for a, b in zip(plain, flipped, strict=True):
        assert a["im_file"] == b["im_file"]
        assert np.allclose(1 - a["bboxes"][:, 0].numpy(), b["bboxes"][:, 0].numpy(), atol=1e-4)
        assert np.array_equal(a["img"].numpy()[:, :, ::-1], b["img"].numpy())


def test_hsv_alone_changes_colours_not_boxes(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    plain = augmented_samples(dataset, parse("train", {"imgsz": 96, "augment": OFF}), samples=3, seed=0)
    hsv = augmented_samples(
        dataset,
        parse("train", {"imgsz": 96, "augment": {**OFF, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}}),
        samples=3,
        seed=0,
    )
    assert len(plain) == len(hsv) == 3
    assert sum(len(a["bboxes"]) for a in plain) > 0  # boxes to compare, or the box check below checks nothing
    for a, b in zip(plain, hsv, strict=True):
        assert np.array_equal(a["bboxes"].numpy(), b["bboxes"].numpy())
        assert not np.array_equal(a["img"].numpy(), b["img"].numpy())


def test_panel_tiles_rotation_keeps_the_box_around_the_lesion(one_lesion) -> None:
    tiles = augmentation_tiles(one_lesion, parse("train", {"imgsz": 128}), parse("preview", {"seed": 0}))
    assert len(tiles) == 16
    titles = [t for _, t in tiles]
    assert titles[2] == "rotation +10 deg (degrees=10)" and titles[3] == "rotation -10 deg (degrees=10)"
    for sample, _ in tiles[2:4]:
        img = sample["img"].permute(1, 2, 0).numpy().astype(int)
        dark = np.argwhere(img.sum(axis=2) < 200)  # the lesion's pixels (row, col)
        cy, cx = dark.mean(axis=0) / 128
        ((bx, by, bw, bh),) = sample["bboxes"].numpy()
        assert abs(bx - cx) < 0.02 and abs(by - cy) < 0.02  # box centred on the lesion
        assert bw * 128 >= np.ptp(dark[:, 1]) - 1 and bh * 128 >= np.ptp(dark[:, 0]) - 1  # and around it
    rotated = [s["img"].numpy() for s, _ in tiles[2:4]]
    assert not np.array_equal(rotated[0], rotated[1])


def test_grid_and_panel_tile_counts_and_same_seed_same_png(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    grid = preview_augmentations(
        dataset, parse("train", {"imgsz": 64}), parse("preview", {"samples": 6, "columns": 3, "seed": 0})
    )
    assert sum(1 for ax in grid.axes if ax.images) == 6
    assert _png(grid) == _png(
        preview_augmentations(
            dataset, parse("train", {"imgsz": 64}), parse("preview", {"samples": 6, "columns": 3, "seed": 0})
        )
    )
    assert _png(grid) != _png(
        preview_augmentations(
            dataset, parse("train", {"imgsz": 64}), parse("preview", {"samples": 6, "columns": 3, "seed": 1})
        )
    )
    panel = preview_each_augmentation(dataset, parse("train", {"imgsz": 64}), parse("preview", {"seed": 0}))
    assert sum(1 for ax in panel.axes if ax.images) == 16
    assert _png(panel) == _png(
        preview_each_augmentation(dataset, parse("train", {"imgsz": 64}), parse("preview", {"seed": 0}))
    )


def test_box_losses_reconcile_and_vanish_without_augmentation(tiny_yolo, one_lesion) -> None:
    dataset, _ = tiny_yolo
    table = count_box_losses(dataset, parse("train", {"imgsz": 64}), parse("preview", {"loss_samples": 12})).set_index(
        "class"
    )
    assert (table.kept + table.dropped == table.boxes_in).all()
    assert table.loc["all", "boxes_in"] == table.drop(index="all").boxes_in.sum() > 0
    assert table.loc["all", "cut_at_edge"] > 0  # mosaic and translate cut some boxes at the edge
    # Unaugmented 96 px photos: only comedones (1-2 % of the width, under Ultralytics' 2 px floor) are lost.
    plain = count_box_losses(
        dataset, parse("train", {"imgsz": 96, "augment": OFF}), parse("preview", {"loss_samples": 6})
    ).set_index("class")
    assert plain.loc["all", "dropped"] == plain.loc["comedone", "dropped"]
    big = count_box_losses(
        one_lesion, parse("train", {"imgsz": 128, "augment": OFF}), parse("preview", {"loss_samples": 4})
    ).set_index("class")
    assert (big.loc["all", "boxes_in"], big.loc["all", "dropped"], big.loc["all", "cut_at_edge"]) == (4, 0, 0)


def test_guardrails_name_the_key_value_and_why() -> None:
    bad = parse("train", {"augment": {"flipud": 0.5, "degrees": 45, "hsv_h": 0.2}}).augment
    messages = augmentation_warnings(bad, imgsz=320, smallest_box_px=20)
    assert any(m.startswith("train.augment.flipud=0.5: faces") for m in messages)
    assert any(m.startswith("train.augment.degrees=45:") for m in messages)
    assert any(m.startswith("train.augment.hsv_h=0.2:") and "redness" in m for m in messages)
    tiny = augmentation_warnings(parse("train", {}).augment, imgsz=64, smallest_box_px=3.0)
    assert len(tiny) == 1 and tiny[0].startswith("train.augment.mosaic=1 with train.imgsz=64")
    assert augmentation_warnings(parse("train", {}).augment, imgsz=320, smallest_box_px=12.0) == []
