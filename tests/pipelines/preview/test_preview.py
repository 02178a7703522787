"""The preview draws what the trainer builds, from the same settings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from acne_detection.params import parse
from acne_detection.pipelines.preview.nodes import augmented_samples, preview_augmentations
from acne_detection.pipelines.train.nodes import ProjectTrainer
from acne_detection.training_config import training_overrides, ultralytics_cfg

AUGMENT_KEYS = list(parse("train", {}).augment.model_dump())


def test_preview_settings_equal_the_trainers_own(tiny_yolo, tmp_path: Path) -> None:
    dataset, _ = tiny_yolo
    params = parse("train", {"imgsz": 64, "augment": {"degrees": 7.0, "hsv_s": 0.3}})
    overrides = training_overrides(params, data_yaml=dataset.data_yaml, device="cpu", workdir=tmp_path)
    trainer = ProjectTrainer(overrides={**overrides, "model": "yolov8n.yaml"})
    preview_cfg = ultralytics_cfg(overrides)
    for key in [*AUGMENT_KEYS, "imgsz", "seed"]:
        assert getattr(preview_cfg, key) == getattr(trainer.args, key), key
    assert (trainer.args.degrees, trainer.args.hsv_s) == (7.0, 0.3)
    assert not any(f.__module__.startswith("ultralytics.utils.callbacks.") for fs in trainer.callbacks.values() for f in fs)


def test_fliplr_one_mirrors_the_boxes(tiny_yolo) -> None:
    dataset, _ = tiny_yolo
    off = {"mosaic": 0.0, "mixup": 0.0, "degrees": 0.0, "translate": 0.0, "scale": 0.0,
           "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    plain = augmented_samples(dataset, {"imgsz": 96, "augment": {**off, "fliplr": 0.0}}, samples=3, seed=0)
    flipped = augmented_samples(dataset, {"imgsz": 96, "augment": {**off, "fliplr": 1.0}}, samples=3, seed=0)
    for a, b in zip(plain, flipped):
        assert a["im_file"] == b["im_file"]
        assert np.allclose(1 - a["bboxes"][:, 0].numpy(), b["bboxes"][:, 0].numpy(), atol=1e-4)
        assert np.array_equal(a["img"].numpy()[:, :, ::-1], b["img"].numpy())


def test_grid_has_one_tile_per_sample_and_the_same_seed_gives_the_same_png(tiny_yolo) -> None:
    dataset, _ = tiny_yolo

    def png(seed: int) -> bytes:
        fig = preview_augmentations(dataset, {"imgsz": 64}, {"samples": 6, "columns": 3, "seed": seed})
        assert sum(1 for ax in fig.axes if ax.images) == 6
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    assert png(0) == png(0)
    assert png(0) != png(1)
