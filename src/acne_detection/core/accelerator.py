"""Which device to train and predict on: cuda, then mps, then cpu, unless a parameter says."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def detect_device(requested: str = "auto") -> tuple[str, str]:
    """Pick the accelerator.

    Args:
        requested: ``auto``, or an Ultralytics device string that overrides detection
            (``cpu``, ``mps``, ``0``, ``0,1``).

    Returns:
        The device string Ultralytics takes and a human-readable name of the device.
    """
    device = requested
    if requested == "auto":
        if torch.cuda.is_available():
            device = "0"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cpu":
        name = f"cpu: {platform.processor() or platform.machine()}"
    elif device == "mps":
        name = "mps: Apple GPU"
    else:
        name = ", ".join(
            f"cuda:{i}: {torch.cuda.get_device_name(int(i))}" for i in device.split(",") if i.strip().isdigit()
        )
    return device, name


def device_settings(device: str, *, batch: int | str, workers: int | str, cpu_batch: int = 16) -> dict[str, Any]:
    """Ultralytics settings that suit the device, unless the parameters fix them.

    cuda: mixed precision (AMP) on, batch sized to the GPU's memory by Ultralytics' autobatch
    (``-1``), one dataloader worker per core up to 8. mps: AMP off (not supported there),
    batch 16, 2 workers. cpu: AMP off, batch 16; Ultralytics loads data in the main process.

    Args:
        device: the Ultralytics device string.
        batch: ``auto`` or a fixed batch size.
        workers: ``auto`` or a fixed number of dataloader workers.
        cpu_batch: the batch size used off-GPU when ``batch`` is ``auto``.

    Returns:
        ``amp``, ``batch`` and ``workers``.
    """
    cuda = device not in ("cpu", "mps")
    cores = os.cpu_count() or 1
    return {
        "amp": cuda,
        "batch": (-1 if cuda else cpu_batch) if batch == "auto" else batch,
        "workers": (min(8, cores) if cuda else min(2, cores)) if workers == "auto" else workers,
    }


def environment_tags(device: str, device_name: str) -> dict[str, str]:
    """Versions and hardware worth recording with every training run."""
    import ultralytics

    tags = {
        "device": device,
        "device_name": device_name,
        "torch_version": torch.__version__,
        "ultralytics_version": ultralytics.__version__,
        "cuda_version": str(torch.version.cuda),
    }
    if device not in ("cpu", "mps") and torch.cuda.is_available():
        first = int(device.split(",")[0])
        tags["device_memory_gb"] = f"{torch.cuda.get_device_properties(first).total_memory / 2**30:.1f}"
    return tags
