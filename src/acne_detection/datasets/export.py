"""``AnnotatedExport``: a folder of photographs with lesion boxes, as a dataset tool exported it."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Self

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from acne_detection.core.files import progress_bar
from acne_detection.core.image_check import CHECKS, PROBE_COLUMNS, probe_image
from acne_detection.datasets.readers import EXPECTED_LAYOUTS, PROVENANCE_COLUMNS, READERS, detect_format

logger = logging.getLogger(__name__)

# Below this many files, starting worker processes costs more than it saves.
_POOL_MIN_FILES = 256
_CHUNK = 64


_POINT_ELSEWHERE = (
    "Point `raw_export.path` in conf/<env>/catalog.yml at a VOC, YOLO or COCO export, "
    "or pass it for one run: see README, 'Use your own dataset'."
)


def _no_images_message(root: Path, fmt: str, *, n_problem_files: int) -> str:
    """What an export without a single image holds, and what was expected instead."""
    found = pd.Series([p.suffix.lower() or "(no extension)" for p in root.rglob("*") if p.is_file()], dtype=object)
    seen = ", ".join(f"{n} {ext}" for ext, n in found.value_counts().head(6).items()) or "nothing at all"
    expected = EXPECTED_LAYOUTS.get(fmt, f"the layout the '{fmt}' reader documents (acne_detection.datasets.readers)")
    problems = f" ({n_problem_files} annotation files named no image that exists)" if n_problem_files else ""
    return (
        f"{root.resolve()}: no photo found in the export folder (format {fmt}){problems}. Found: {seen}. "
        f"Expected: {expected}. {_POINT_ELSEWHERE}"
    )


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
    grades: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=["image", "grade"]))
    # per photo, where its labels came from (Label Studio: task, annotator, time, pre-annotating model)
    provenance: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=PROVENANCE_COLUMNS))


def _process_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux: no re-import of ``__main__``, and the workers touch only Pillow,
    hashlib and the XML parser, so no lock a parent thread holds matters. Elsewhere ``spawn``
    (fork is unsafe on macOS, absent on Windows)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _apply(fn: Callable[[str], Any], chunk: list[str]) -> list[Any]:
    return [fn(item) for item in chunk]


class _FileMapper:
    """Maps a per-file function over many files on every core, in order, with a progress bar.

    Small jobs run in this process: starting workers would cost more than it saves. The worker
    pool starts on first use and serves every call until the ``with`` block ends.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __call__(self, fn: Callable[[str], Any], items: list[str], description: str = "") -> list[Any]:
        chunks = [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]
        results: list[Any] = []
        with progress_bar() as bar:
            task = bar.add_task(description, total=len(items))
            for chunk in self._map(partial(_apply, fn), chunks):
                results.extend(chunk)
                bar.advance(task, len(chunk))
        return results

    def _map(self, apply: Callable[[list[str]], list[Any]], chunks: list[list[str]]) -> Iterator[list[Any]]:
        if self._workers < 2 or sum(map(len, chunks)) < _POOL_MIN_FILES:
            yield from map(apply, chunks)
            return
        done = 0
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self._workers, mp_context=_process_context())
            for result in self._pool.map(apply, chunks):
                done += 1
                yield result
        except BrokenProcessPool as err:
            # Seen when a script without an `if __name__ == "__main__":` guard runs the pipeline
            # under spawn: the answer is still complete, only slower.
            logger.warning("Worker processes failed (%s); going on in this process", err)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._workers, self._pool = 1, None
            yield from map(apply, chunks[done:])


class AnnotatedExport(AbstractDataset[None, RawExport]):
    """A read-only export folder in Pascal VOC, YOLO or COCO format.

    Loading reads every annotation and checks every image file (see
    ``acne_detection.core.image_check``) on all cores, with a progress bar, and never writes into
    the folder. With ``synthetic`` set and the folder empty, the project's seeded synthetic
    acne photographs are generated there first (see ``acne_detection.core.synthetic``).

    Example catalog entry::

        raw_export:
          type: acne_detection.datasets.AnnotatedExport
          path: ../shared/data/acne04-sample
          format: voc        # or yolo, coco, auto
          image_check: structure   # or decode: decode every image (slower, see README)

    Args:
        path: the export's top folder.
        format: ``auto`` (detected), ``voc``, ``yolo``, ``coco`` or ``label_studio`` (a Label
            Studio JSON export: the review loop's corrections; never detected, always named).
        image_check: ``structure`` (walk each file to its end) or ``decode`` (decode it).
        synthetic: keyword arguments for ``acne_detection.core.synthetic.write_voc_export``, used
            only when the folder has no image yet.
        grades_file: a CSV (``image``, ``grade``) beside the export giving each photo's true
            severity grade, read when present (relative to ``path``).
        workers: processes that check images (default: the machine's cores).
        photo_root: ``label_studio`` only: Label Studio's document root, where the tasks' photo
            addresses point (default: ``path``).
        reviewed: another export merged into this one, by default a Label Studio export
            (``{path, photo_root}``): the review loop's corrected photos. Their ids start with
            ``reviewed/``; a photo of this export that was reviewed too (the same file content)
            is replaced by its reviewed labels, and listed as replaced in the problems.
    """

    def __init__(
        self,
        *,
        path: str,
        format: str = "auto",  # the word users write in the catalog, though it shadows a builtin
        image_check: str = "structure",
        synthetic: dict[str, Any] | None = None,
        grades_file: str = "grades.csv",
        workers: int | None = None,
        photo_root: str | None = None,
        reviewed: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if format not in ("auto", *READERS):
            raise DatasetError(f"raw_export format '{format}' is not one of auto, {', '.join(READERS)}")
        if image_check not in CHECKS:
            raise DatasetError(f"raw_export image_check '{image_check}' is not one of {', '.join(CHECKS)}")
        self._path = Path(path)
        self._format = format
        self._check = image_check
        self._grades_file = grades_file
        self._photo_root = Path(photo_root) if photo_root else None
        # the review loop's corrections, read beside this export (format label_studio): they win
        self._reviewed = (
            AnnotatedExport(**{"format": "label_studio", "image_check": image_check, **reviewed}) if reviewed else None
        )
        self._synthetic = synthetic
        self._workers = workers or os.cpu_count() or 1
        self.metadata = metadata

    def load(self) -> RawExport:
        own = self._load_one()
        return own if self._reviewed is None else merge_reviewed(own, self._reviewed.load())

    def _load_one(self) -> RawExport:
        if self._synthetic is not None:
            from acne_detection.core.synthetic import write_voc_export

            logger.info("Synthetic default dataset in %s (generated on first use)", self._path)
            write_voc_export(self._path, **self._synthetic)
        if not self._path.is_dir():
            what = "is a file, not a folder" if self._path.exists() else "does not exist"
            raise DatasetError(f"{self._path.resolve()}: the export folder {what}. {_POINT_ELSEWHERE}")
        try:
            fmt = detect_format(self._path) if self._format == "auto" else self._format
        except ValueError as err:
            raise DatasetError(f"{err}. {_POINT_ELSEWHERE}") from err
        try:
            start = time.perf_counter()
            with _FileMapper(self._workers) as map_files:
                options = {"photo_root": self._photo_root} if fmt == "label_studio" else {}
                images, boxes, problems, *extras = READERS[fmt](self._path, map_files=map_files, **options)
                check = partial(probe_image, check=self._check)
                rows = map_files(check, images["file"].tolist(), f"Checking {len(images)} images")
        except OSError as err:
            raise DatasetError(
                f"{self._path.resolve()}: the export folder cannot be read ({err}). {_POINT_ELSEWHERE}"
            ) from err
        if images.empty and (problems.image_id == "").all():
            raise DatasetError(_no_images_message(self._path, fmt, n_problem_files=len(problems)))
        probed = pd.DataFrame(rows, index=images.index, columns=PROBE_COLUMNS)
        logger.info(
            "Read %d %s annotations and checked %d images of %s in %.1f s (%s check)",
            len(images),
            fmt,
            len(images),
            self._path,
            time.perf_counter() - start,
            self._check,
        )
        images = pd.concat([images, probed], axis=1)
        if fmt == "yolo":  # YOLO boxes are fractions of the displayed image size
            size = images.set_index("image_id")[["width", "height"]]
            w = boxes["image_id"].map(size["width"]).astype(float)
            h = boxes["image_id"].map(size["height"]).astype(float)
            boxes = boxes.assign(
                x_min=boxes.x_min * w, x_max=boxes.x_max * w, y_min=boxes.y_min * h, y_max=boxes.y_max * h
            )
        found = extras[0] if extras else {}
        grades = self._read_grades()
        if "grades" in found:  # the reviewer's grades; a grades.csv beside the export still wins
            grades = pd.concat([found["grades"], grades], ignore_index=True).drop_duplicates("image", keep="last")
        return RawExport(
            root=str(self._path),
            format=fmt,
            images=images,
            boxes=boxes,
            problems=problems,
            grades=grades,
            provenance=found.get("provenance", pd.DataFrame(columns=PROVENANCE_COLUMNS)),
        )

    def _read_grades(self) -> pd.DataFrame:
        path = self._path / self._grades_file
        if not path.is_file():
            return pd.DataFrame(columns=["image", "grade"])
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise DatasetError(
                f"{path}: cannot read the grades file ({err}); expected a CSV with columns image, grade"
            ) from err

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: a raw export is read-only; the project never writes source data")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._path),
            "format": self._format,
            "reviewed": self._reviewed._describe() if self._reviewed else None,
            "image_check": self._check,
            "synthetic": self._synthetic is not None,
        }


def merge_reviewed(export: RawExport, reviewed: RawExport) -> RawExport:
    """``export`` with the review loop's photos added, their labels winning.

    Args:
        export: the original export.
        reviewed: the reviewed photos (``format: label_studio``).

    Returns:
        One export: ``reviewed/``-prefixed ids for the reviewed photos; each original photo whose
        content (SHA-256) was reviewed is left out, with its boxes, and listed in ``problems``
        as replaced by its review.
    """
    prefix = "reviewed/"

    def _prefixed(table: pd.DataFrame, column: str) -> pd.DataFrame:
        return table.assign(**{column: prefix + table[column].astype(str)}) if len(table) else table

    reviewed_hashes = set(reviewed.images.loc[reviewed.images.image_problem == "", "sha256"])
    replaced = export.images.sha256.isin(reviewed_hashes) & (export.images.image_problem == "")
    gone = set(export.images.loc[replaced, "image_id"])
    note = pd.DataFrame(
        {
            "file": export.images.loc[replaced, "file"],
            "image_id": "",
            "reason": "replaced by its review",
            "detail": "the same photo was reviewed in Label Studio: its reviewed labels are used",
        },
        columns=export.problems.columns,
    )
    problems = reviewed.problems.assign(
        image_id=reviewed.problems.image_id.where(reviewed.problems.image_id == "", prefix + reviewed.problems.image_id)
    )
    return dataclasses.replace(
        export,
        images=pd.concat([export.images[~replaced], _prefixed(reviewed.images, "image_id")], ignore_index=True),
        boxes=pd.concat(
            [export.boxes[~export.boxes.image_id.isin(gone)], _prefixed(reviewed.boxes, "image_id")], ignore_index=True
        ),
        problems=pd.concat([export.problems, problems, note], ignore_index=True),
        grades=pd.concat([export.grades, _prefixed(reviewed.grades, "image")], ignore_index=True),
        provenance=_prefixed(reviewed.provenance, "image_id"),
    )
