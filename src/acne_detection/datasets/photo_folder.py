"""``PhotoFolder``: a folder of new photographs to predict on, read-only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.json import JSONDataset

from acne_detection.datasets.readers import IMAGE_SUFFIXES, UNSUPPORTED_IMAGE_SUFFIXES

logger = logging.getLogger(__name__)
# Files that often sit beside photos and are not photos: counted in the log, never "failed".
ANNOTATION_SUFFIXES = frozenset({".xml", ".txt", ".json", ".csv", ".yaml", ".yml", ".names", ".md", ".html"})


@dataclass(frozen=True)
class Photos:
    """What a folder holds: ``photos`` (candidates, checked before use), ``unsupported`` (photo
    formats the pipeline cannot read), ``not_photos`` (annotation and other side files), and
    ``other`` (files of no known kind), all sorted paths."""

    root: Path
    photos: list[Path]
    unsupported: list[Path]
    not_photos: list[Path]
    other: list[Path]


class PhotoFolder(AbstractDataset[None, Photos]):
    """New photos to predict on; the folder is only ever read.

    Example catalog entry::

        new_photos:
          type: acne_detection.datasets.PhotoFolder
          path: ../shared/data/acne04-sample/test

    Args:
        path: the folder (searched recursively).
        synthetic: keyword arguments for ``acne_detection.core.synthetic.write_new_photos``, used
            to make a few unlabelled demo photos when the folder does not exist.
    """

    def __init__(
        self, *, path: str, synthetic: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._path = Path(path)
        self._synthetic = synthetic
        self.metadata = metadata

    def load(self) -> Photos:
        if self._synthetic is not None and not self._path.exists():
            from acne_detection.core.synthetic import write_new_photos

            write_new_photos(self._path, **self._synthetic)
        if not self._path.is_dir():
            raise DatasetError(
                f"{self._path.resolve()}: the photo folder does not exist. Point `new_photos.path` in "
                "conf/<env>/catalog.yml at a folder of photos (see README, 'Predict on new photos')."
            )
        files = sorted(p for p in self._path.rglob("*") if p.is_file() and not p.name.startswith("."))
        kinds: dict[str, list[Path]] = {"photos": [], "unsupported": [], "not_photos": [], "other": []}
        for f in files:
            suffix = f.suffix.lower()
            kind = (
                "photos"
                if suffix in IMAGE_SUFFIXES
                else "unsupported"
                if suffix in UNSUPPORTED_IMAGE_SUFFIXES
                else "not_photos"
                if suffix in ANNOTATION_SUFFIXES
                else "other"
            )
            kinds[kind].append(f)
        logger.info(
            "%s: %d photos, %d in unsupported formats, %d annotation or side files (not photos), %d other files",
            self._path,
            len(kinds["photos"]),
            len(kinds["unsupported"]),
            len(kinds["not_photos"]),
            len(kinds["other"]),
        )
        return Photos(root=self._path, **kinds)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: new photos are read-only; predictions go to data/07_model_output")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "synthetic": self._synthetic is not None}


class FileFolder(AbstractDataset[dict[str, bytes], list[Path]]):
    """A folder of files written whole: ``save`` takes ``{name: bytes}`` and replaces what the
    folder held (so it never mixes two runs' outputs); ``load`` lists the files.

    Example catalog entry::

        annotated_photos:
          type: acne_detection.datasets.FileFolder
          path: data/07_model_output/predictions/annotated
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> list[Path]:
        return sorted(p for p in self._path.iterdir() if p.is_file())

    def save(self, data: dict[str, bytes]) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        for old in self._path.iterdir():
            if old.is_file() and old.name not in data:
                old.unlink()
        for name, content in data.items():
            (self._path / name).write_bytes(content)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class OptionalJSONDataset(JSONDataset):
    """kedro-datasets' ``json.JSONDataset`` that loads ``{}`` when its file does not exist yet
    (``predict`` reads what ``eval`` recorded, and must run before any ``eval`` has)."""

    def load(self) -> Any:
        return super().load() if self._exists() else {}
