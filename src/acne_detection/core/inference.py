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

SAHI's own pieces are called directly (its tile grid, ``get_slice_bboxes``, and its merging,
``GreedyNMMPostprocess``) rather than its ``get_sliced_prediction``, for one reason: tiles of
pure background (a wall, hair, clothes) can be left out before any forward pass, by the skin
mask of ``skin_tone.tiles_on_skin``. With nothing left out the result equals
``get_sliced_prediction``'s (tested). The model may run on PyTorch, ONNX Runtime or OpenVINO
(fp32 or INT8), exported once per weights (``runtimes.load_detector``, one table of runtimes).
"""

from __future__ import annotations

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
# Ultralytics' own NMS IoU: what a model answers at unless eval chose another on validation
DEFAULT_NMS_IOU = 0.7


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
        skip_background: leave out tiles with no skin in or near them (``skin_tone.tiles_on_skin``).
        min_skin: the least share of a tile that must be skin (dilated by the overlap) for it
            to be predicted, when ``skip_background``.
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
    skip_background: bool = False
    min_skin: float = 0.02

    @classmethod
    def from_params(
        cls, predict: Any, *, imgsz: int, conf: float, nms_iou: float, device: str = "cpu"
    ) -> InferenceSettings:
        """From the ``predict`` parameters (a ``PredictParams``): how the predict pipeline and the
        served model (which carries them in its configuration) slice and merge, one setting each
        in ``parameters_predict.yml``. ``nms_iou`` is the model's own (its record's, chosen by eval;
        no default, so that no caller falls back to another unseen), used where ``predict.nms_iou``
        is null. Eval and the sweep predict whole photos, batch 1, as
        ``yolo predict`` does, so that their tables equal Ultralytics' own."""
        return cls(
            imgsz=imgsz,
            conf=conf,
            iou=nms_iou if predict.nms_iou is None else predict.nms_iou,
            max_det=predict.max_det,
            device=device,
            slicing=predict.slicing,
            slice_above=predict.slice_above,
            overlap=predict.overlap,
            batch=predict.batch,
            tile=predict.tile,
            merge_metric=predict.merge_metric,
            merge_threshold=predict.merge_threshold,
            skip_background=predict.skip_background,
            min_skin=predict.min_skin,
        )


def evaluation_settings(evaluation: Any, *, imgsz: int, device: str, nms_iou: float | None = None) -> InferenceSettings:
    """How eval and the sweep's validation predict a split (the ``eval`` parameters, an
    ``EvalParams``): whole photos, batch 1, paths as they are, so that the table is exactly what
    ``yolo predict`` gives on each file, down to ``eval.min_conf``; NMS at ``nms_iou`` (``None``:
    ``eval.nms_iou``)."""
    return InferenceSettings(
        imgsz=imgsz,
        conf=evaluation.min_conf,
        iou=evaluation.nms_iou if nms_iou is None else nms_iou,
        max_det=evaluation.max_det,
        device=device,
        batch=1,
    )


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
        full = displayed_size(img)
        if max_side and img.format in ("JPEG", "MPO") and max(img.size) > 2 * max_side:
            img.draft("RGB", (max_side, max_side))
        pixels = to_8bit(ImageOps.exif_transpose(img)).convert("RGB")
    return np.asarray(pixels), full[0] / pixels.width


def displayed_size(img: Image.Image) -> tuple[int, int]:
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
        sliced = needs_slicing(*displayed_size(img), settings)
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

    for key, source in photos:
        item, scale, sliced = _prepare(source, settings)
        if sliced:
            yield from _flush()
            yield key, _sliced_rows(model, key, names, item, settings)
            continue
        # Ultralytics takes a path as it is, pixels as BGR
        batch.append((key, item if isinstance(item, str) else np.ascontiguousarray(item[:, :, ::-1]), scale))
        if len(batch) >= settings.batch:
            yield from _flush()
    if batch:
        yield from _flush()


def slice_tiles(width: int, height: int, settings: InferenceSettings) -> list[list[int]]:
    """The tiles of a photo, ``(x_min, y_min, x_max, y_max)``: SAHI's grid (``get_slice_bboxes``),
    ``tile`` px (``imgsz`` by default) at ``overlap``, edge tiles shifted inwards to full size."""
    from sahi.slicing import get_slice_bboxes

    side = settings.tile or settings.imgsz
    return get_slice_bboxes(
        image_height=height,
        image_width=width,
        slice_height=side,
        slice_width=side,
        overlap_height_ratio=settings.overlap,
        overlap_width_ratio=settings.overlap,
    )


def _sliced_rows(
    model: Any, key: str, names: dict[int, str], pixels: np.ndarray, settings: InferenceSettings
) -> list[tuple]:
    """Sliced prediction of one photo, as SAHI's ``get_sliced_prediction`` does it: ``tile``
    tiles at ``overlap``, ``batch`` tiles per forward pass, plus the whole photo at ``imgsz``
    for lesions larger than a tile; boxes merged by greedy NMM on ``merge_metric`` at
    ``merge_threshold`` (below confidence 0.1, SAHI's switch: NMS on IoU, so that merging many
    weak boxes does not grow them). With ``skip_background``, tiles with no skin in or near
    them (``skin_tone.tiles_on_skin``, the mask dilated by the overlap) are not predicted."""
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMSPostprocess
    from sahi.predict import LOW_MODEL_CONFIDENCE

    from acne_detection.core.skin_tone import tiles_on_skin

    height, width = pixels.shape[:2]
    tiles = grid = slice_tiles(width, height, settings)
    if settings.skip_background and len(grid) > 1:
        side = settings.tile or settings.imgsz
        keep = tiles_on_skin(pixels, tiles, grow=settings.overlap * side, min_share=settings.min_skin)
        tiles = [t for t, k in zip(tiles, keep) if k]
    # SAHI's per-tile settings: the model's confidence, Ultralytics' own NMS defaults
    kwargs = {"imgsz": settings.imgsz, "conf": settings.conf, "device": settings.device, "verbose": False}
    found = []
    for start in range(0, len(tiles), settings.batch):
        chunk = tiles[start : start + settings.batch]
        results = model.predict([pixels[y0:y1, x0:x1, ::-1] for x0, y0, x1, y1 in chunk], **kwargs)
        for (x0, y0, _, _), r in zip(chunk, results):
            found += _object_predictions(r, names, (x0, y0), (height, width))
    if len(grid) > 1:  # SAHI's standard pass, on every photo of more than one tile
        found += _object_predictions(model.predict(pixels[:, :, ::-1], **kwargs)[0], names, (0, 0), (height, width))
    if settings.conf < LOW_MODEL_CONFIDENCE:
        merge = NMSPostprocess(match_threshold=settings.merge_threshold, match_metric="IOU", class_agnostic=False)
    else:
        merge = GreedyNMMPostprocess(
            match_threshold=settings.merge_threshold, match_metric=settings.merge_metric, class_agnostic=False
        )
    merged = merge(found) if len(found) > 1 else found
    kept = sorted(merged, key=lambda p: -p.score.value)[: settings.max_det]
    return [
        (key, int(p.category.id), names[int(p.category.id)], float(p.score.value), *map(float, p.bbox.to_xyxy()))
        for p in kept
    ]


def _object_predictions(
    result: Any, names: dict[int, str], shift: tuple[int, int], full_shape: tuple[int, int]
) -> list[Any]:
    """One tile's boxes as SAHI's ``ObjectPrediction``s in photo pixels, as SAHI's Ultralytics
    wrapper makes them (coordinates clipped at 0, empty boxes dropped)."""
    from sahi.prediction import ObjectPrediction

    height, width = full_shape
    out = []
    for x0, y0, x1, y1, score, cls in result.boxes.data.cpu().numpy().tolist():
        box = [min(width, max(0.0, x0)), min(height, max(0.0, y0)), min(width, max(0.0, x1)), min(height, max(0.0, y1))]
        if not (box[0] < box[2] and box[1] < box[3]):
            continue
        out.append(
            ObjectPrediction(
                bbox=box,
                category_id=int(cls),
                category_name=names[int(cls)],
                score=score,
                shift_amount=list(shift),
                full_shape=list(full_shape),
            ).get_shifted_object_prediction()
        )
    return out
