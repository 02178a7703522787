"""The one place that turns ``conf/`` training parameters into Ultralytics' settings.

Training and the augmentation preview both call ``ultralytics_cfg``, so the preview shows
exactly the augmentation the trainer applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acne_detection.core.accelerator import device_settings
from acne_detection.core.params import TrainParams


def training_overrides(params: TrainParams, *, data_yaml: Path, device: str, workdir: Path) -> dict[str, Any]:
    """Ultralytics ``train`` keyword arguments for these parameters.

    Args:
        params: the typed ``train`` parameters.
        data_yaml: the YOLO dataset's ``data.yaml``.
        device: the Ultralytics device string (see ``acne_detection.core.accelerator``).
        workdir: the folder Ultralytics writes its checkpoints into (never ``runs/``).

    Returns:
        The overrides, augmentation hyperparameters included.
    """
    return {
        "data": str(data_yaml),
        "epochs": params.epochs,
        "imgsz": params.imgsz,
        **device_settings(device, batch=params.batch, workers=params.workers),
        "freeze": params.freeze or None,
        "optimizer": params.optimizer,
        "lr0": params.lr0,
        "nbs": params.nbs,
        "warmup_epochs": params.warmup_epochs,
        "patience": params.patience,
        "seed": params.seed,
        "deterministic": True,
        "cache": params.cache,
        "device": device,
        "project": str(workdir),
        "name": "train",
        "exist_ok": True,
        "plots": False,  # the project draws its own figures; Ultralytics' would fetch a font online
        **params.augment.model_dump(),
    }


def ultralytics_cfg(overrides: dict[str, Any]) -> Any:
    """Merge overrides onto Ultralytics' defaults exactly as its trainer does (``get_cfg``).

    Args:
        overrides: from ``training_overrides``.

    Returns:
        Ultralytics' ``IterableSimpleNamespace`` of settings.
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    return get_cfg(DEFAULT_CFG, {k: v for k, v in overrides.items() if k != "trainer"})


def smallest_lesion_px(manifest: Any, imgsz: int) -> float | None:
    """Median box side, in training pixels, of the class with the smallest boxes.

    Args:
        manifest: the YOLO dataset manifest (``split`` and ``labels`` columns).
        imgsz: the training image size.

    Returns:
        The smallest per-class median of sqrt(width x height) at ``imgsz`` (for a square
        image; the longest side is what Ultralytics scales to ``imgsz``), or None without boxes.
    """
    import pandas as pd

    lines = [
        ln.split()
        for text in manifest.loc[manifest["split"] == "train", "labels"]
        for ln in str(text).splitlines()
        if ln
    ]
    if not lines:
        return None
    boxes = pd.DataFrame(lines, columns=["cls", "cx", "cy", "w", "h"]).astype(float)
    side = (boxes.w * boxes.h) ** 0.5 * imgsz
    return float(side.groupby(boxes.cls).median().min())


def augmentation_warnings(augment: Any, *, imgsz: int, smallest_box_px: float | None) -> list[str]:
    """Warnings for augmentation values that make little sense on photographs of skin.

    Args:
        augment: the ``train.augment`` parameters.
        imgsz: the training image size.
        smallest_box_px: ``smallest_lesion_px`` of the training set (None: not checked).

    Returns:
        One message per questionable value, naming the key, its value and why.
    """
    warnings = []
    if augment.flipud > 0:
        warnings.append(
            f"train.augment.flipud={augment.flipud:g}: faces are never photographed upside-down; "
            "vertical flips teach the model anatomy it will not meet (use 0)"
        )
    if augment.degrees > 30:
        warnings.append(
            f"train.augment.degrees={augment.degrees:g}: rotations beyond 30 degrees tilt faces further "
            "than clinical photos are taken (10 is typical)"
        )
    if augment.hsv_h > 0.1:
        warnings.append(
            f"train.augment.hsv_h={augment.hsv_h:g}: hue shifts beyond 0.1 turn red lesions green or blue, "
            "and redness is what tells papules, pustules and nodules apart (0.015 is typical)"
        )
    if augment.mosaic > 0 and smallest_box_px is not None:
        shrunk = smallest_box_px * (1 - min(augment.scale, 0.9))
        if shrunk < 4:
            warnings.append(
                f"train.augment.mosaic={augment.mosaic:g} with train.imgsz={imgsz}: the smallest lesions are "
                f"{smallest_box_px:.1f} px at this size and shrink to {shrunk:.1f} px under scale="
                f"{augment.scale:g}, too small to learn; raise imgsz or lower mosaic/scale"
            )
    return warnings
