"""Photos in, a table of boxes out: the one prediction path that ``eval``, the ``predict``
pipeline and the served MLflow model all use.

Photos are streamed: one batch is decoded at a time, so memory stays flat whatever the
number of photos. Large photos (a phone's 4000 px) can be predicted in tiles ("sliced
inference") with SAHI (Akyon et al., ICIP 2022; the library Ultralytics' own guide points
to for it), which slices, predicts every tile and merges the boxes of a lesion cut by a tile
edge (greedy non-maximum merging on intersection-over-smaller). We use it rather than write
our own merging: it is maintained, tested on exactly this problem, and supports Ultralytics
models directly. Tiles are ``imgsz`` pixels and predicted at ``imgsz``, so a lesion keeps the
pixel size it had in training instead of shrinking with the photo.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from acne_detection.core.image_check import open_photo, to_8bit

logger = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["image", "class_id", "class", "confidence", "x_min", "y_min", "x_max", "y_max"]


# Ultralytics' own default confidence: what a model answers at when eval never chose a threshold for it
DEFAULT_THRESHOLD = 0.25


@dataclass(frozen=True)
class InferenceSettings:
    """How to predict.

    Attributes:
        imgsz: the size the model sees (its training size).
        conf: the least confidence kept.
        iou: NMS IoU threshold.
        max_det: boxes kept per photo at most.
        device: ``cpu``, ``0``, ``mps``...
        slicing: ``never``, ``always``, or ``auto`` (photos whose long side exceeds
            ``slice_above`` times ``imgsz``).
        slice_above: see ``slicing``.
        overlap: tile overlap ratio.
        batch: photos (or tiles) per forward pass.
        tile: the tiles' side in pixels (``None``: ``imgsz``, the size the model was trained at).
        merge_metric: how boxes of overlapping tiles are compared before merging (``IOS``: the
            intersection over the smaller box, so a lesion cut by a tile edge merges with its
            whole; ``IOU``).
        merge_threshold: the least overlap at which two boxes of one class merge into one.
    """

    imgsz: int
    conf: float
    iou: float = 0.7
    max_det: int = 300
    device: str = "cpu"
    slicing: Literal["never", "always", "auto"] = "never"
    slice_above: float = 2.0
    overlap: float = 0.2
    batch: int = 8
    tile: int | None = None
    merge_metric: Literal["IOS", "IOU"] = "IOS"
    merge_threshold: float = 0.5

    @classmethod
    def from_params(cls, predict: Any, *, imgsz: int, conf: float, device: str = "cpu") -> InferenceSettings:
        """From the ``predict`` parameters (a ``PredictParams``): how the predict pipeline and the
        served model (which carries them in its configuration) slice and merge, one setting each
        in ``parameters_predict.yml``. Eval and the sweep predict whole photos, batch 1, as
        ``yolo predict`` does, so that their tables equal Ultralytics' own."""
        return cls(
            imgsz=imgsz,
            conf=conf,
            iou=predict.nms_iou,
            max_det=predict.max_det,
            device=device,
            slicing=predict.slicing,
            slice_above=predict.slice_above,
            overlap=predict.overlap,
            batch=predict.batch,
            tile=predict.tile,
            merge_metric=predict.merge_metric,
            merge_threshold=predict.merge_threshold,
        )


def evaluation_settings(evaluation: Any, *, imgsz: int, device: str) -> InferenceSettings:
    """How eval and the sweep's validation predict a split (the ``eval`` parameters, an
    ``EvalParams``): whole photos, batch 1, paths as they are, so that the table is exactly what
    ``yolo predict`` gives on each file, down to ``eval.min_conf``."""
    return InferenceSettings(
        imgsz=imgsz,
        conf=evaluation.min_conf,
        iou=evaluation.nms_iou,
        max_det=evaluation.max_det,
        device=device,
        batch=1,
    )


def load_detector(
    checkpoint: Path, *, runtime: Literal["torch", "onnx"] = "torch", imgsz: int | None = None
) -> tuple[Any, int]:
    """An Ultralytics model ready to predict, in PyTorch or exported to ONNX Runtime.

    ONNX Runtime is often faster on a CPU (``benchmarks/RESULTS.md`` has the measured ratio).
    The export is made once per checkpoint and size, beside the checkpoint
    (``NAME-<imgsz>.onnx``), and redone when the checkpoint is newer. It needs the ``onnx``
    extra (``pip install -e ".[onnx]"``): Ultralytics' own run-time install of the export
    packages fails offline.

    Args:
        checkpoint: the ``.pt`` file.
        runtime: ``torch`` or ``onnx``.
        imgsz: the input size (default: the training size).

    Returns:
        The model and the image size it predicts at.
    """
    from ultralytics import YOLO

    model = YOLO(str(checkpoint))
    size = imgsz or model_imgsz(model)
    if runtime == "torch":
        return model, size
    for needed in ("onnx", "onnxruntime", "onnxslim"):
        if importlib.util.find_spec(needed) is None:
            raise ImportError(f"predict.runtime onnx needs the '{needed}' package: pip install -e \".[onnx]\"")
    onnx_path = checkpoint.with_name(f"{checkpoint.stem}-{size}.onnx")
    if not onnx_path.exists() or onnx_path.stat().st_mtime < checkpoint.stat().st_mtime:
        exported = Path(model.export(format="onnx", imgsz=size, dynamic=True, simplify=True, verbose=False))
        exported.replace(onnx_path)
        logger.info("Exported %s to ONNX at %d px: %s", checkpoint.name, size, onnx_path)
    return YOLO(str(onnx_path), task="detect"), size


def model_imgsz(model: Any, default: int = 640) -> int:
    """The image size a checkpoint was trained at (``train_args.imgsz``), else ``default``."""
    ckpt = getattr(model, "ckpt", None)
    return int(ckpt.get("train_args", {}).get("imgsz", default)) if isinstance(ckpt, dict) else default


def load_photo(source: str | Path | bytes, *, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a photo as displayed: EXIF orientation applied, 8-bit RGB, any mode or depth.

    Args:
        source: a path, or the file's bytes.
        max_side: when set, a JPEG is decoded at the smallest power-of-two reduction still at
            least this large (libjpeg's DCT scaling: a 12000 px photo never exists in memory
            at full size when it will be shrunk anyway).

    Returns:
        ``(H, W, 3)`` uint8 RGB pixels, and the factor from them to the photo's own pixels
        (1.0 unless decoded reduced).

    Raises:
        PhotoError: not an image, or more pixels than ``image_check.PIXEL_LIMIT`` (from the
            header, before any pixel is decoded).
    """
    with open_photo(source) as img:
        full = _displayed_size(img)
        if max_side and img.format in ("JPEG", "MPO") and max(img.size) > 2 * max_side:
            img.draft("RGB", (max_side, max_side))
        pixels = to_8bit(ImageOps.exif_transpose(img)).convert("RGB")
    return np.asarray(pixels), full[0] / pixels.width


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    """Width and height as displayed, from the header alone (EXIF 5-8 rotate by 90 degrees)."""
    return (img.height, img.width) if img.getexif().get(0x0112, 1) in (5, 6, 7, 8) else img.size


_CV2_READS = ("JPEG", "PNG", "BMP", "WEBP")


def _prepare(
    source: str | Path | bytes | np.ndarray, settings: InferenceSettings
) -> tuple[str | np.ndarray, float, bool]:
    """What to hand Ultralytics for one photo, from one read of its header.

    The header is read first, always: a file that is not an image or declares more pixels than
    ``image_check.PIXEL_LIMIT`` raises ``PhotoError`` before any decoder sees its pixels. An
    ordinary photo (a format OpenCV reads, upright, 8-bit RGB or gray, not too large, not
    tiled) goes as its path, as ``yolo predict`` takes it. Anything else is decoded here as
    displayed, at reduced size when it will be shrunk to ``imgsz`` anyway.

    Returns:
        The path or the ``(H, W, 3)`` RGB pixels, their scale to the photo's own pixels, and
        whether the photo is predicted in tiles.
    """
    if isinstance(source, np.ndarray):
        return source, 1.0, needs_slicing(source.shape[1], source.shape[0], settings)
    with open_photo(source) as img:  # every photo's header is checked, even one handed on as a path
        sliced = needs_slicing(*_displayed_size(img), settings)
        plain = (
            isinstance(source, (str, Path))
            and img.format in _CV2_READS
            and img.mode in ("RGB", "L")
            and img.getexif().get(0x0112, 1) == 1
            and max(img.size) <= 4 * settings.imgsz
        )
    if plain and not sliced:
        return str(source), 1.0, False
    pixels, scale = load_photo(source, max_side=None if sliced else settings.imgsz)
    return pixels, scale, sliced


def needs_slicing(width: int, height: int, settings: InferenceSettings) -> bool:
    """Whether a photo of this displayed size is predicted in tiles under ``settings.slicing``."""
    if settings.slicing == "auto":
        return max(width, height) > settings.slice_above * settings.imgsz
    return settings.slicing == "always"


def _rows(
    key: str, names: dict[int, str], xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, scale: float = 1.0
) -> list[tuple]:
    return [
        (key, int(c), names[int(c)], float(s), *(float(v) * scale for v in box)) for box, s, c in zip(xyxy, conf, cls)
    ]


def predict_boxes(
    model: Any, photos: Iterable[tuple[str, str | Path | bytes | np.ndarray]], settings: InferenceSettings
) -> pd.DataFrame:
    """Every box the model finds on every photo, in the photo's own pixels as displayed.

    Args:
        model: an Ultralytics ``YOLO``.
        photos: ``(key, source)`` pairs; a source is a path (handed to Ultralytics as it is,
            so results equal ``yolo predict`` on that file), the file's bytes, or ``(H, W, 3)``
            RGB pixels.
        settings: how to predict.

    Returns:
        One row per box: ``image`` (the key), ``class_id``, ``class``, ``confidence`` and
        ``x_min``, ``y_min``, ``x_max``, ``y_max`` (pixels of the photo as displayed).
    """
    return pd.DataFrame(
        [row for rows in iter_predictions(model, photos, settings) for row in rows[1]], columns=PREDICTION_COLUMNS
    )


def iter_predictions(
    model: Any, photos: Iterable[tuple[str, Any]], settings: InferenceSettings
) -> Iterator[tuple[str, list[tuple]]]:
    """``predict_boxes`` one photo at a time: ``(key, rows)`` in input order, batched underneath."""
    names = {int(k): str(v) for k, v in model.names.items()}
    batch: list[tuple[str, Any, float]] = []
    kwargs = {
        "imgsz": settings.imgsz,
        "conf": settings.conf,
        "iou": settings.iou,
        "max_det": settings.max_det,
        "device": settings.device,
        "verbose": False,
    }

    def _flush() -> Iterator[tuple[str, list[tuple]]]:
        if not batch:
            return
        sources = [s for _, s, _ in batch]
        for (key, _, scale), r in zip(batch, model.predict(sources, batch=settings.batch, **kwargs)):
            b = r.boxes
            yield key, _rows(key, names, b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy(), scale)
        batch.clear()

    tiler: list[Any] = []  # SAHI's wrapper of the model, made on the first photo that needs it

    for key, source in photos:
        item, scale, sliced = _prepare(source, settings)
        if sliced:
            yield from _flush()
            tiler = tiler or [_sahi_model(model, names, settings)]
            yield key, _sliced_rows(tiler[0], key, names, item, settings)
            continue
        # Ultralytics takes a path as it is, pixels as BGR
        batch.append((key, item if isinstance(item, str) else np.ascontiguousarray(item[:, :, ::-1]), scale))
        if len(batch) >= settings.batch:
            yield from _flush()
    if batch:
        yield from _flush()


def _sahi_model(model: Any, names: dict[int, str], settings: InferenceSettings) -> Any:
    """SAHI's wrapper around the Ultralytics model, predicting each tile at ``imgsz``."""
    from sahi.models.ultralytics import UltralyticsDetectionModel

    return UltralyticsDetectionModel(
        model=model,
        confidence_threshold=settings.conf,
        device=settings.device,
        image_size=settings.imgsz,
        category_mapping={str(k): v for k, v in names.items()},
    )


def _sliced_rows(
    detector: Any, key: str, names: dict[int, str], pixels: np.ndarray, settings: InferenceSettings
) -> list[tuple]:
    """SAHI's sliced prediction of one photo: ``tile`` tiles (``imgsz`` by default) at ``overlap``,
    plus the whole photo at ``imgsz`` for lesions larger than a tile, merged by greedy NMM on
    ``merge_metric`` at ``merge_threshold``."""
    from sahi.predict import get_sliced_prediction

    result = get_sliced_prediction(
        pixels,
        detector,
        slice_height=settings.tile or settings.imgsz,
        slice_width=settings.tile or settings.imgsz,
        overlap_height_ratio=settings.overlap,
        overlap_width_ratio=settings.overlap,
        perform_standard_pred=True,
        postprocess_type="GREEDYNMM",
        postprocess_match_metric=settings.merge_metric,
        postprocess_match_threshold=settings.merge_threshold,
        batch_size=settings.batch,
        verbose=0,
    )
    found = sorted(result.object_prediction_list, key=lambda p: -p.score.value)[: settings.max_det]
    return [
        (key, int(p.category.id), names[int(p.category.id)], float(p.score.value), *map(float, p.bbox.to_xyxy()))
        for p in found
    ]
