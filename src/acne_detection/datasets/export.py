"""``AnnotatedExport``: a folder of photographs with lesion boxes, as a dataset tool exported it."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from PIL import Image, UnidentifiedImageError

from acne_detection.datasets.readers import READERS, detect_format

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_PROBE_COLUMNS = ["bytes", "sha256", "width", "height", "orientation", "mode", "image_problem", "image_detail"]


@dataclass(frozen=True)
class RawExport:
    """What an export holds, before validation: see ``acne_detection.datasets.readers``.

    ``images`` also carries what probing the file found: ``bytes``, ``sha256``, ``width`` and
    ``height`` as displayed (EXIF orientation applied), ``orientation`` and ``mode``, and
    ``image_problem``/``image_detail`` ("" when the image decodes).
    """

    root: str
    format: str
    images: pd.DataFrame
    boxes: pd.DataFrame
    problems: pd.DataFrame


def probe_image(file: str) -> dict[str, Any]:
    """Decode one image fully and describe it, without raising on a bad file.

    Args:
        file: path of the image.

    Returns:
        ``bytes``, ``sha256``, ``width``, ``height`` (as displayed, EXIF orientation applied),
        ``orientation`` (EXIF tag, 1 when absent), ``mode`` (PIL mode), ``image_problem`` and
        ``image_detail`` (empty when the file is a usable image).
    """
    path = Path(file)
    data = path.read_bytes()
    info: dict[str, Any] = {
        "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "width": 0, "height": 0,
        "orientation": 1, "mode": "", "image_problem": "", "image_detail": "",
    }
    if not data:
        return {**info, "image_problem": "zero-byte file", "image_detail": "the file is empty"}
    try:
        with Image.open(path) as img:
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            width, height = img.size
            mode = img.mode
            if img.format == "JPEG":  # decode at 1/8 scale: every byte is still read, so truncation shows
                img.draft(img.mode, (max(width // 8, 1), max(height // 8, 1)))
            img.load()  # decodes the whole file: truncated files fail here, not in training
    except (UnidentifiedImageError, ImportError) as err:
        # ImportError: once Ultralytics is imported, its patched Image.open answers an unknown
        # file by trying to load an optional HEIF plugin; either way the file is no image we read.
        return {**info, "image_problem": "not an image", "image_detail": f"{type(err).__name__}: {err}"}
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated image" if "truncated" in str(err).lower() else "unreadable image"
        return {**info, "image_problem": reason, "image_detail": f"{type(err).__name__}: {err}"}
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: displayed width is stored height
        width, height = height, width
    return {**info, "width": width, "height": height, "orientation": orientation, "mode": mode}


class AnnotatedExport(AbstractDataset[None, RawExport]):
    """A read-only export folder in Pascal VOC, YOLO or COCO format.

    Loading reads every annotation and decodes every image (both cores), and never writes into
    the folder. With ``synthetic`` set and the folder empty, the project's seeded synthetic
    acne photographs are generated there first (see ``acne_detection.synthetic``).

    Example catalog entry::

        raw_export:
          type: acne_detection.datasets.AnnotatedExport
          path: ../shared/data/acne04-sample
          format: voc        # or yolo, coco, auto

    Args:
        path: the export's top folder.
        format: ``auto`` (detected), ``voc``, ``yolo`` or ``coco``.
        synthetic: keyword arguments for ``acne_detection.synthetic.write_voc_export``, used
            only when the folder has no image yet.
        workers: threads that decode images (default: the machine's cores).
    """

    def __init__(
        self,
        *,
        path: str,
        format: str = "auto",  # noqa: A002 - the word users write in the catalog
        synthetic: dict[str, Any] | None = None,
        workers: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if format not in ("auto", *READERS):
            raise DatasetError(f"raw_export format '{format}' is not one of auto, {', '.join(READERS)}")
        self._path = Path(path)
        self._format = format
        self._synthetic = synthetic
        self._workers = workers or os.cpu_count() or 1
        self.metadata = metadata

    def load(self) -> RawExport:
        if self._synthetic is not None:
            from acne_detection.synthetic import write_voc_export

            logger.info("Synthetic default dataset in %s (generated on first use)", self._path)
            write_voc_export(self._path, **self._synthetic)
        if not self._path.is_dir():
            raise DatasetError(
                f"{self._path}: export folder not found. Point `raw_export.path` in conf/*/catalog.yml "
                "at a VOC, YOLO or COCO export (see README, 'Use your own dataset')."
            )
        fmt = detect_format(self._path) if self._format == "auto" else self._format
        images, boxes, problems = READERS[fmt](self._path)
        logger.info("Reading %d images of %s (%s format)", len(images), self._path, fmt)
        with ThreadPoolExecutor(self._workers) as pool:  # decoding and hashing release the GIL
            rows = []
            step = max(len(images) // 10, 500)
            for n, row in enumerate(pool.map(probe_image, images["file"]), 1):
                rows.append(row)
                if n % step == 0:
                    logger.info("Decoded %d/%d images", n, len(images))
            probed = pd.DataFrame(rows, index=images.index, columns=_PROBE_COLUMNS)
        images = pd.concat([images, probed], axis=1)
        if fmt == "yolo":  # YOLO boxes are fractions of the displayed image size
            size = images.set_index("image_id")[["width", "height"]]
            w = boxes["image_id"].map(size["width"]).astype(float)
            h = boxes["image_id"].map(size["height"]).astype(float)
            boxes = boxes.assign(x_min=boxes.x_min * w, x_max=boxes.x_max * w, y_min=boxes.y_min * h, y_max=boxes.y_max * h)
        return RawExport(root=str(self._path), format=fmt, images=images, boxes=boxes, problems=problems)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: a raw export is read-only; the project never writes source data")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "format": self._format, "synthetic": self._synthetic is not None}

