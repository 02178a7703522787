"""The runtimes a detector can predict on: one table, one entry per runtime.

Each entry says how Ultralytics exports the weights for it (``format`` and export options), what
the export is called, which Python packages it needs (to export here, and where the model is
served), and whether the export is calibrated on training photos. ``predict.runtime`` is checked
against this table, ``register`` exports through it, the predictor loads through it, the served
model's requirements come from it and the benchmarks measure every entry of it: adding a runtime
is one entry here.

Exports are made once per weights and kept in ``exports/`` beside the checkpoint, in a folder
named by the weights' SHA-256, the runtime and the size: new weights get a new export, the same
weights anywhere reuse it. Exporting needs no network.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acne_detection.core.files import sha256_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """One way to run the detector.

    Attributes:
        format: Ultralytics' export format (``None``: the PyTorch checkpoint as it is).
        target: the name Ultralytics gives the export (a file or a folder).
        packages: the modules exporting and predicting need (Ultralytics' own run-time install
            of them fails offline, so the project declares them).
        served: the pip distributions the served model needs for it.
        install: how a user installs ``packages``.
        options: Ultralytics export options beyond the format and size (``dynamic``: any input size).
        calibrated: the export is calibrated on the training split's photos (``data.yaml``).
        fallback: the runtime used, with a warning, where this one's export cannot be made.
    """

    format: str | None = None
    target: str = ""
    packages: tuple[str, ...] = ()
    served: tuple[str, ...] = ()
    install: str = "pip install -e . (a dependency of the project)"
    options: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = False
    fallback: str | None = None


RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime(),
    # ONNX Runtime
    "onnx": Runtime(
        format="onnx",
        target="model.onnx",
        packages=("onnx", "onnxruntime", "onnxslim"),
        served=("onnxruntime",),
        install='pip install -e ".[onnx]"',
        options={"simplify": True, "dynamic": True},
    ),
    # OpenVINO fp32, the CPU runtime Ultralytics recommends for Intel and AMD CPUs
    "openvino": Runtime(
        format="openvino",
        target="model_openvino_model",
        packages=("openvino",),
        served=("openvino",),
        options={"dynamic": True},
    ),
    # OpenVINO with 8-bit weights and activations, calibrated by NNCF on the model's training photos
    "openvino-int8": Runtime(
        format="openvino",
        target="model_openvino_model",
        packages=("openvino", "nncf"),
        served=("openvino",),
        options={"dynamic": True, "quantize": 8},
        calibrated=True,
        fallback="openvino",
    ),
}


def runtime_entry(name: str) -> Runtime:
    """The table's entry for ``name``.

    Raises:
        ValueError: no such runtime, naming those there are.
    """
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return RUNTIMES[name]


def load_detector(
    checkpoint: Path,
    *,
    runtime: str = "torch",
    imgsz: int | None = None,
    calibration_data: Path | None = None,
    cache: Path | None = None,
) -> tuple[Any, int]:
    """An Ultralytics model ready to predict, on PyTorch or on another runtime of the table.

    Args:
        checkpoint: the ``.pt`` file.
        runtime: a key of ``RUNTIMES``.
        imgsz: the input size (default: the training size).
        calibration_data: the training ``data.yaml`` (calibrated runtimes only).
        cache: where exports are kept (default: ``exports/`` beside the checkpoint).

    Returns:
        The model and the image size it predicts at.

    Raises:
        ImportError: the runtime's packages are not installed (the message says how to install them).
        ValueError: an unknown runtime, or a calibrated one without calibration photos.
    """
    from ultralytics import YOLO

    from acne_detection.core.inference import model_imgsz

    entry = runtime_entry(runtime)
    model = YOLO(str(checkpoint))
    size = imgsz or model_imgsz(model)
    if entry.format is None:
        return model, size
    exported = export_runtime(Path(checkpoint), runtime, size, calibration_data=calibration_data, cache=cache)
    return YOLO(str(exported), task="detect"), size


def export_runtime(
    checkpoint: Path, runtime: str, imgsz: int, *, calibration_data: Path | None = None, cache: Path | None = None
) -> Path:
    """The weights exported for ``runtime`` at ``imgsz`` (see ``load_detector``), made once.

    Returns:
        The exported model's path (a file or a folder, the entry's ``target``).
    """
    entry = runtime_entry(runtime)
    if entry.format is None:
        raise ValueError(f"runtime {runtime} predicts on the checkpoint itself: there is nothing to export")
    for needed in entry.packages:
        if importlib.util.find_spec(needed) is None:
            raise ImportError(f"predict.runtime {runtime} needs the '{needed}' package: {entry.install}")
    folder = (cache or Path(checkpoint).parent / "exports") / f"{sha256_of(checkpoint)[:16]}-{runtime}-{imgsz}"
    target = folder / entry.target
    if target.exists():  # made before, for these very weights: no calibration photos needed again
        return target
    if entry.calibrated and (calibration_data is None or not Path(calibration_data).is_file()):
        raise ValueError(
            f"predict.runtime {runtime}: no export of {Path(checkpoint).name} yet, and none can be made "
            f"here: it is calibrated on the model's training photos, whose data.yaml ({calibration_data or 'none'}) "
            "is not given. `kedro run` makes it (its register step, where the training split is)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.pt"  # Ultralytics writes its export beside the weights it exports
    shutil.copyfile(checkpoint, weights)
    if entry.format == "openvino":
        decline_openvino_telemetry()
    from ultralytics import YOLO

    kwargs: dict[str, Any] = {"format": entry.format, "imgsz": imgsz, "verbose": False}
    kwargs.update(entry.options)
    if entry.calibrated:  # e.g. NNCF's post-training quantization, on the training split's photos
        kwargs.update(data=str(calibration_data), split="train")
    made = Path(YOLO(str(weights)).export(**kwargs))
    made.rename(target)
    weights.unlink()
    logger.info("Exported %s for %s at %d px: %s", checkpoint.name, runtime, imgsz, target)
    return target


def decline_openvino_telemetry() -> None:
    """OpenVINO's converter and NNCF send usage events unless told not to (their consent file,
    ``~/intel/openvino_telemetry``, absent means yes for them). Nothing leaves this machine: when a
    user has not answered, the answer is no, written as OpenVINO's own ``opt_in_out --opt_out``
    writes it. A user who opted in keeps their answer."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return
    checker = OptInChecker()
    if checker.consent_file_base_dir() and not Path(checker.consent_file()).exists():
        checker.create_or_check_consent_dir()
        checker.update_result(ConsentCheckResult.DECLINED)
        logger.info("OpenVINO telemetry declined (%s)", checker.consent_file())
