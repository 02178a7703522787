"""Nodes of the ``preview`` pipeline."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from acne_detection.datasets import YoloDataset
from acne_detection.params import parse
from acne_detection.training_config import training_overrides, ultralytics_cfg

CLASS_COLOURS = ("#00e5ff", "#ffea00", "#76ff03", "#ff4081", "#ffffff")


def augmented_samples(dataset: YoloDataset, train_params: dict[str, Any], *, samples: int, seed: int) -> list[dict[str, Any]]:
    """Draw training samples through Ultralytics' own training dataset and augmentations.

    The settings are ``training_overrides`` merged by ``ultralytics_cfg``, the very ones the
    ``train`` pipeline hands the trainer.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters.
        samples: how many samples to draw.
        seed: seeds Python's, NumPy's and torch's generators, which the augmentations use.

    Returns:
        Ultralytics sample dicts: ``img`` (3, H, W) uint8 RGB tensor, ``bboxes`` (N, 4)
        normalised centre-x, centre-y, width, height, ``cls`` (N, 1), ``im_file``.
    """
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    p = parse("train", train_params)
    overrides = training_overrides(p, data_yaml=dataset.data_yaml, device="cpu", workdir=Path(tempfile.gettempdir()))
    cfg = ultralytics_cfg(overrides)
    data = check_det_dataset(str(dataset.data_yaml))
    train_set = build_yolo_dataset(cfg, data["train"], p.batch, data, mode="train", stride=32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(train_set))
    return [train_set[int(order[i % len(order)])] for i in range(samples)]


def preview_augmentations(dataset: YoloDataset, train_params: dict[str, Any], preview_params: dict[str, Any]) -> Figure:
    """A grid of augmented training samples with their boxes and class names.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters (augmentation hyperparameters included).
        preview_params: the ``preview`` parameters (``samples``, ``columns``, ``seed``).

    Returns:
        The figure, one tile per sample.
    """
    pp = parse("preview", preview_params)
    tiles = augmented_samples(dataset, train_params, samples=pp.samples, seed=pp.seed)
    columns = min(pp.columns, len(tiles))
    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, tiles):
        img = sample["img"].permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
        ax.imshow(img)
        for (cx, cy, bw, bh), cls in zip(sample["bboxes"].tolist(), sample["cls"].flatten().tolist()):
            colour = CLASS_COLOURS[int(cls) % len(CLASS_COLOURS)]
            ax.add_patch(Rectangle(((cx - bw / 2) * w, (cy - bh / 2) * h), bw * w, bh * h, fill=False, lw=0.8, ec=colour))
            ax.text((cx - bw / 2) * w, (cy - bh / 2) * h - 1, dataset.names[int(cls)], color=colour, fontsize=5)
        ax.set_title(f"{Path(sample['im_file']).name[:28]} ({len(sample['cls'])} boxes)", fontsize=7)
    fig.suptitle("What training sees: Ultralytics' augmentations with this run's hyperparameters", fontsize=10)
    fig.tight_layout()
    return fig
