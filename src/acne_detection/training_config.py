"""The one place that turns ``conf/`` training parameters into Ultralytics' settings.

Training and the augmentation preview both call ``ultralytics_cfg``, so the preview shows
exactly the augmentation the trainer applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acne_detection.params import TrainParams


def training_overrides(params: TrainParams, *, data_yaml: Path, device: str, workdir: Path) -> dict[str, Any]:
    """Ultralytics ``train`` keyword arguments for these parameters.

    Args:
        params: the typed ``train`` parameters.
        data_yaml: the YOLO dataset's ``data.yaml``.
        device: the Ultralytics device string (see ``acne_detection.accelerator``).
        workdir: the folder Ultralytics writes its checkpoints into (never ``runs/``).

    Returns:
        The overrides, augmentation hyperparameters included.
    """
    return {
        "data": str(data_yaml),
        "epochs": params.epochs,
        "imgsz": params.imgsz,
        "batch": params.batch,
        "freeze": params.freeze or None,
        "lr0": params.lr0,
        "warmup_epochs": params.warmup_epochs,
        "patience": params.patience,
        "seed": params.seed,
        "deterministic": True,
        "workers": params.workers,
        "cache": params.cache,
        "device": device,
        "project": str(workdir),
        "name": "train",
        "exist_ok": True,
        "plots": False,  # the project draws its own figures; Ultralytics' would fetch a font online
        "amp": device not in ("cpu", "mps"),
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
