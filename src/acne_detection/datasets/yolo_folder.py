"""``YoloDatasetFolder``: the Ultralytics-layout dataset folder, owned by one dataset class."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from kedro.io import AbstractDataset, DatasetError
from PIL import ImageOps

from acne_detection.core.image_check import open_photo, to_8bit

logger = logging.getLogger(__name__)

_INDEX = "manifest.csv"
_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class YoloDataset:
    """A written YOLO-format dataset: what training, preview and evaluation are handed."""

    root: Path
    data_yaml: Path
    names: tuple[str, ...]
    manifest: pd.DataFrame

    def manifest_sha256(self) -> str:
        """A fingerprint of the dataset's content (files, splits, labels), order-independent."""
        return hashlib.sha256(self.manifest.sort_values("image").to_csv(index=False).encode()).hexdigest()

    def keyed(self, split: str) -> list[tuple[str, Path]]:
        """The images of one split as ``(key, path)``, in manifest order: the key is the path
        within the dataset, what prediction tables and the ground truth name an image by."""
        return [(rel, self.root / rel) for rel in self.manifest.loc[self.manifest.split == split, "image"]]

    def images(self, split: str) -> list[Path]:
        """Absolute paths of the images of one split, in manifest order."""
        return [path for _, path in self.keyed(split)]


def _link_or_copy(src: str, dest: str) -> None:
    try:
        os.link(src, dest)
    except FileExistsError:  # a changed row: replace what an earlier save wrote
        os.unlink(dest)
        _link_or_copy(src, dest)
    except OSError:  # another file system, or links not allowed: copy instead
        shutil.copy2(src, dest)


def _write_normalised(src: Path, dest: Path) -> None:
    """Write the image as displayed (EXIF applied) in 8-bit RGB PNG, the form boxes refer to."""
    with open_photo(src) as img:
        # compress_level 1: still lossless, several times faster than the default on phone photos
        to_8bit(ImageOps.exif_transpose(img)).convert("RGB").save(dest, format="PNG", compress_level=1)


class YoloDatasetFolder(AbstractDataset[pd.DataFrame, YoloDataset]):
    """A folder in Ultralytics' layout: ``{train,val,test}/{images,labels}`` and ``data.yaml``.

    Saving takes the manifest ``plan_yolo_dataset`` makes. Plain RGB/grayscale JPEG and PNG
    images are hard-linked (copied across file systems); others (EXIF-rotated, 16-bit,
    palette, RGBA, other formats) are written as displayed, in 8-bit RGB PNG. A re-save
    rewrites only the rows that changed and removes files no longer in the manifest.

    Example catalog entry::

        yolo_dataset:
          type: acne_detection.datasets.YoloDatasetFolder
          path: data/05_model_input/yolo
          names: [comedone, papule, pustule, nodule]

    Args:
        path: the folder.
        names: class names, in class-id order.
    """

    def __init__(self, *, path: str, names: list[str], metadata: dict[str, Any] | None = None) -> None:
        self._root = Path(path)
        self._names = tuple(names)
        self.metadata = metadata

    def load(self) -> YoloDataset:
        index = self._root / _INDEX
        if not index.exists():
            raise DatasetError(f"{self._root}: no YOLO dataset here yet; run `kedro run --pipeline data` first")
        manifest = pd.read_csv(index, keep_default_na=False, dtype={"labels": str})
        return YoloDataset(self._root.resolve(), (self._root / "data.yaml").resolve(), self._names, manifest)

    def save(self, data: pd.DataFrame) -> None:
        old_index = self._root / _INDEX
        old = (
            pd.read_csv(old_index, keep_default_na=False, dtype={"labels": str})
            if old_index.exists()
            else data.iloc[:0]
        )
        unchanged = set(map(tuple, old.astype(str).to_numpy())) & set(map(tuple, data.astype(str).to_numpy()))
        for rel in set(old.get("image", [])) - set(data["image"]) | set(old.get("label", [])) - set(data["label"]):
            (self._root / rel).unlink(missing_ok=True)
        todo = [
            row
            for row in data.itertuples(index=False)
            if not (
                tuple(str(v) for v in row) in unchanged
                and (self._root / row.image).exists()
                and (self._root / row.label).exists()
            )
        ]
        for folder in {(self._root / rel).parent for row in todo for rel in (row.image, row.label)}:
            folder.mkdir(parents=True, exist_ok=True)
        linked = [row for row in todo if self._linkable(row)]
        rewrite = [row for row in todo if not self._linkable(row)]
        for row in linked:  # a link is one system call: threads would only add overhead
            self._write_row(row)
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow decodes and encodes without the GIL
            list(pool.map(self._write_row, rewrite))
        written = len(todo)
        for split in _SPLITS:  # Ultralytics needs each folder to exist, even if empty
            (self._root / split / "images").mkdir(parents=True, exist_ok=True)
        # No `path:` key: Ultralytics then resolves the splits beside data.yaml, so the folder can move.
        spec = {**{s: f"{s}/images" for s in _SPLITS}, "names": dict(enumerate(self._names))}
        (self._root / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        data.to_csv(old_index, index=False)
        logger.info("YOLO dataset in %s: %d images written, %d unchanged", self._root, written, len(data) - written)

    @staticmethod
    def _linkable(row: Any) -> bool:
        return os.path.splitext(row.image)[1] == os.path.splitext(row.file)[1].lower() and row.orientation == 1

    def _write_row(self, row: Any) -> None:
        # Plain os calls: with 10,000 rows, pathlib's overhead costs more than the file system.
        image, label = os.path.join(self._root, row.image), os.path.join(self._root, row.label)
        if self._linkable(row):
            _link_or_copy(row.file, image)
        else:
            _write_normalised(Path(row.file), Path(image))
        with open(label, "w", encoding="utf-8") as f:
            f.write(row.labels + ("\n" if row.labels else ""))

    def _exists(self) -> bool:
        return (self._root / _INDEX).exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._root), "names": list(self._names)}
