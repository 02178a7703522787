"""Which device to train and predict on: cuda, then mps, then cpu, unless a parameter says."""

from __future__ import annotations

import platform

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
        name = ", ".join(f"cuda:{i}: {torch.cuda.get_device_name(int(i))}" for i in device.split(",") if i.strip().isdigit())
    return device, name
