"""Nodes of the ``preview`` pipeline: what training really sees.

Every image here comes out of Ultralytics' own training dataset and augmentation pipeline,
built from ``training_overrides`` + ``ultralytics_cfg``: the settings the trainer gets.
"""

from __future__ import annotations

import contextlib
import logging
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from acne_detection.core.params import PreviewParams, TrainParams
from acne_detection.core.training_config import (
    augmentation_warnings,
    smallest_lesion_px,
    training_overrides,
    ultralytics_cfg,
)
from acne_detection.datasets import YoloDataset

logger = logging.getLogger(__name__)
CLASS_COLOURS = ("#00e5ff", "#ffea00", "#76ff03", "#ff4081", "#ffffff")
_ALL_OFF = {
    "hsv_h": 0.0,
    "hsv_s": 0.0,
    "hsv_v": 0.0,
    "degrees": 0.0,
    "translate": 0.0,
    "scale": 0.0,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.0,
    "mosaic": 0.0,
    "mixup": 0.0,
}


def _train_set(dataset: YoloDataset, p: TrainParams) -> Any:
    """Ultralytics' training dataset (augmentations on), exactly as its trainer builds it."""
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    overrides = training_overrides(p, data_yaml=dataset.data_yaml, device="cpu", workdir=Path(tempfile.gettempdir()))
    data = check_det_dataset(str(dataset.data_yaml))
    return build_yolo_dataset(
        ultralytics_cfg(overrides), data["train"], overrides["batch"], data, mode="train", stride=32
    )


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augmented_samples(
    dataset: YoloDataset, train_params: TrainParams, *, samples: int, seed: int
) -> list[dict[str, Any]]:
    """Draw training samples through Ultralytics' own training dataset and augmentations.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters.
        samples: how many samples to draw.
        seed: seeds Python's, NumPy's and torch's generators, which the augmentations use.

    Returns:
        Ultralytics sample dicts: ``img`` (3, H, W) uint8 RGB tensor, ``bboxes`` (N, 4)
        normalised centre-x, centre-y, width, height, ``cls`` (N, 1), ``im_file``.
    """
    train_set = _train_set(dataset, train_params)
    _seed(seed)
    order = np.random.default_rng(seed).permutation(len(train_set))
    return [train_set[int(order[i % len(order)])] for i in range(samples)]


def _draw(ax: Axes, sample: dict[str, Any], names: tuple[str, ...], title: str) -> None:
    img = sample["img"].permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    ax.imshow(img)
    for (cx, cy, bw, bh), cls in zip(sample["bboxes"].tolist(), sample["cls"].flatten().tolist()):
        colour = CLASS_COLOURS[int(cls) % len(CLASS_COLOURS)]
        ax.add_patch(Rectangle(((cx - bw / 2) * w, (cy - bh / 2) * h), bw * w, bh * h, fill=False, lw=0.8, ec=colour))
        ax.text((cx - bw / 2) * w, (cy - bh / 2) * h - 1, names[int(cls) % len(names)], color=colour, fontsize=5)
    ax.set_title(title, fontsize=7)


def _grid(tiles: list[tuple[dict[str, Any], str]], names: tuple[str, ...], columns: int, title: str) -> Figure:
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    fig = Figure(figsize=(3.2 * columns, 3.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (sample, tile_title) in zip(axes.flat, tiles):
        _draw(ax, sample, names, tile_title)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def preview_augmentations(dataset: YoloDataset, train_params: TrainParams, preview_params: PreviewParams) -> Figure:
    """A grid of training samples exactly as the model receives them, boxes and classes drawn.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters (augmentation hyperparameters included).
        preview_params: the ``preview`` parameters (``samples``, ``columns``, ``seed``).

    Returns:
        The figure, one tile per sample.
    """
    for warning in augmentation_warnings(
        train_params.augment,
        imgsz=train_params.imgsz,
        smallest_box_px=smallest_lesion_px(dataset.manifest, train_params.imgsz),
    ):
        logger.warning(warning)
    samples = augmented_samples(dataset, train_params, samples=preview_params.samples, seed=preview_params.seed)
    tiles = [(s, f"{Path(s['im_file']).name[:28]} ({len(s['cls'])} boxes)") for s in samples]
    return _grid(
        tiles,
        dataset.names,
        preview_params.columns,
        "What training sees: Ultralytics' augmentations with this run's hyperparameters",
    )


@contextlib.contextmanager
def _pinned(module: Any, bounds: tuple[float, float], end: int) -> Iterator[None]:
    """Make ``module.uniform(a, b[, n])`` return its upper (``end`` > 0) or lower end for one
    range, so a single Ultralytics augmentation is shown at its configured extreme. Every
    other random draw (mosaic, mixup and flip probabilities) is left alone."""
    original = module.uniform

    def uniform(a: float = 0.0, b: float = 1.0, size: Any = None) -> Any:
        if (a, b) == bounds:
            value = b if end > 0 else a
            return value if size is None else np.full(size, value, dtype=float)
        return original(a, b) if size is None else original(a, b, size)

    module.uniform = uniform
    try:
        yield
    finally:
        module.uniform = original


def _panel_specs(a: Any) -> list[tuple[str, dict[str, float], tuple | None]]:
    """(title, augmentation settings, pin) for each tile of the per-augmentation panel."""
    specs: list[tuple[str, dict[str, float], tuple | None]] = [
        ("original (augmentations off)", {}, None),
        # Shown flipped whenever training may flip (p > 0); with fliplr=0 the tile stays unflipped.
        (f"left-right flip (p={a.fliplr:g})", {"fliplr": 1.0 if a.fliplr > 0 else 0.0}, None),
    ]
    for sign in (1, -1):
        specs.append(
            (
                f"rotation {sign * a.degrees:+g} deg (degrees={a.degrees:g})",
                {"degrees": a.degrees},
                (random, (-a.degrees, a.degrees), sign),
            )
        )
    for key, label in (("hsv_h", "hue"), ("hsv_s", "saturation"), ("hsv_v", "brightness")):
        value = getattr(a, key)
        for sign in (1, -1):
            specs.append(
                (f"{label} gain {1 + sign * value:.3g} ({key}={value:g})", {key: value}, (np.random, (-1, 1), sign))
            )
    for sign in (1, -1):
        specs.append(
            (
                f"scale x{1 + sign * a.scale:.3g} (scale={a.scale:g})",
                {"scale": a.scale},
                (random, (1 - a.scale, 1 + a.scale), sign),
            )
        )
    for sign in (1, -1):
        specs.append(
            (
                f"translate {sign * a.translate:+g} (translate={a.translate:g})",
                {"translate": a.translate},
                (random, (0.5 - a.translate, 0.5 + a.translate), sign),
            )
        )
    specs.append((f"mosaic (p={a.mosaic:g})", {"mosaic": 1.0}, None))
    specs.append((f"mixup (p={a.mixup:g})", {"mixup": 1.0}, None))
    return specs


def augmentation_tiles(
    dataset: YoloDataset, train_params: TrainParams, preview_params: PreviewParams
) -> list[tuple[dict[str, Any], str]]:
    """One photo, then each augmentation applied alone at its configured value (both ends of
    a range), through Ultralytics' own transforms.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters.
        preview_params: the ``preview`` parameters (``seed`` picks the photo).

    Returns:
        16 (sample, title) pairs, each title naming the parameter and the value shown.
    """
    base = train_params.model_dump()
    photo = _photo_with_lesions(dataset, preview_params.seed)
    tiles = []
    for title, settings, pin in _panel_specs(train_params.augment):
        params = TrainParams.model_validate({**base, "augment": {**base["augment"], **_ALL_OFF, **settings}})
        train_set = _train_set(dataset, params)
        _seed(preview_params.seed)
        with _pinned(*pin) if pin else contextlib.nullcontext():
            tiles.append((train_set[photo], title))
    return tiles


def preview_each_augmentation(dataset: YoloDataset, train_params: TrainParams, preview_params: PreviewParams) -> Figure:
    """The panel of ``augmentation_tiles``: the original beside each augmentation alone.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters.
        preview_params: the ``preview`` parameters.

    Returns:
        The figure, 16 tiles in a 4 x 4 grid.
    """
    tiles = augmentation_tiles(dataset, train_params, preview_params)
    return _grid(tiles, dataset.names, 4, f"Each augmentation alone, on {Path(tiles[0][0]['im_file']).name}")


def _photo_with_lesions(dataset: YoloDataset, seed: int) -> int:
    """Index (in the training images) of a photo with lesions, chosen by the seed."""
    train = dataset.manifest[dataset.manifest.split == "train"].reset_index(drop=True)
    with_boxes = train.index[train["labels"] != ""]
    candidates = with_boxes if len(with_boxes) else train.index
    return int(candidates[np.random.default_rng(seed).integers(len(candidates))])


def count_box_losses(dataset: YoloDataset, train_params: TrainParams, preview_params: PreviewParams) -> pd.DataFrame:
    """How many boxes the configured augmentations drop or cut at the image edge.

    Each source box is tagged with an id carried in its class value, so a box is followed
    through mosaic, mixup and the affine crop exactly; ids missing from a sample were dropped.

    Args:
        dataset: the YOLO-format dataset.
        train_params: the ``train`` parameters.
        preview_params: the ``preview`` parameters (``loss_samples``, ``seed``).

    Returns:
        One row per class and an ``all`` row: ``boxes_in`` (source boxes that went into the
        samples), ``kept``, ``dropped``, ``cut_at_edge`` (kept but touching the crop edge),
        and the dropped and cut shares.
    """
    train_set = _train_set(dataset, train_params)
    fed: dict[int, int] = {}
    load = train_set.get_image_and_label

    def tagged(index: int) -> dict[str, Any]:
        labels = load(index)
        cls = labels["cls"].reshape(-1).astype(np.int64)
        ids = np.arange(len(fed), len(fed) + len(cls))
        fed.update(zip(ids.tolist(), cls.tolist()))
        labels["cls"] = (ids * 64 + cls).astype(np.float64).reshape(-1, 1)
        return labels

    train_set.get_image_and_label = tagged  # this dataset object only; Mosaic/MixUp load through it
    rows = []
    _seed(preview_params.seed)
    order = np.random.default_rng(preview_params.seed).permutation(len(train_set))
    for i in range(preview_params.loss_samples):
        before = len(fed)
        sample = train_set[int(order[i % len(order)])]
        codes = sample["cls"].reshape(-1).numpy().astype(np.int64)
        kept = set((codes // 64).tolist())
        boxes = sample["bboxes"].numpy()
        edge = (
            (boxes[:, 0] - boxes[:, 2] / 2 <= 1e-3)
            | (boxes[:, 0] + boxes[:, 2] / 2 >= 1 - 1e-3)
            | (boxes[:, 1] - boxes[:, 3] / 2 <= 1e-3)
            | (boxes[:, 1] + boxes[:, 3] / 2 >= 1 - 1e-3)
        )
        cut = set((codes[edge] // 64).tolist())
        for box_id in range(before, len(fed)):
            rows.append((fed[box_id], box_id in kept, box_id in cut))
    table = pd.DataFrame(rows, columns=["class_id", "kept", "cut"])
    out = []
    for name, g in [
        *((dataset.names[c], table[table.class_id == c]) for c in range(len(dataset.names))),
        ("all", table),
    ]:
        n = len(g)
        out.append(
            {
                "class": name,
                "boxes_in": n,
                "kept": int(g.kept.sum()),
                "dropped": int((~g.kept).sum()),
                "cut_at_edge": int(g.cut.sum()),
                "dropped_share": (~g.kept).sum() / n if n else 0.0,
                "cut_share": g.cut.sum() / n if n else 0.0,
            }
        )
    return pd.DataFrame(out)
