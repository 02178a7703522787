"""Readers for the annotation formats real acne datasets ship in: Pascal VOC, YOLO and COCO, and
Label Studio's JSON export (the review loop's corrections).

Every reader returns the same three tables, so everything after ingestion is format-blind:

* ``images``: one row per image file found (``image_id``, ``file``, ``annotation_file``,
  ``source_split``, ``background``: whether the format declares it lesion-free);
* ``boxes``: one row per box in pixel corners (``image_id``, ``class_name``, ``x_min``,
  ``y_min``, ``x_max``, ``y_max``, ``annotation_file``), NaN where a value was not a number;
* ``problems``: one row per file that could not be used (``file``, ``image_id``, ``reason``,
  ``detail``).

Readers never raise on bad content and never modify a source file: a problem is a row.
Per-file parsing goes through ``map_files`` (``AnnotatedExport`` passes one that uses every
core and shows progress); the default maps in this process.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import yaml

from acne_detection.core.ingestion import PROBLEM_COLUMNS

# HEIC/HEIF (every recent iPhone's default) through pi-heif, AVIF through Pillow itself
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jfif", ".mpo", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif"}
)
# Photographs in formats the pipeline does not read: reported, never skipped in silence.
UNSUPPORTED_IMAGE_SUFFIXES = frozenset({".gif", ".dng", ".cr2", ".nef", ".arw", ".raw", ".jp2", ".jxl", ".svg", ".ico"})
MapFiles = Callable[[Callable[[str], Any], list[str], str], list[Any]]


def serial_map(fn: Callable[[str], Any], items: list[str], description: str = "") -> list[Any]:
    """The default ``map_files``: ``fn`` over ``items`` in this process, in order."""
    return [fn(item) for item in items]


SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}

IMAGE_COLUMNS = ["image_id", "file", "annotation_file", "source_split", "background"]
BOX_COLUMNS = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "annotation_file"]


class _Tables:
    """Accumulates the three tables a reader returns."""

    def __init__(self, root: Path, *, id_root: Path | None = None) -> None:
        self.root = root
        self.id_root = id_root or root  # image ids are paths relative to this folder
        self.all_files = _files_under(root, None)  # one walk of the tree serves every lookup
        self.images: list[dict] = []
        self.boxes: list[tuple] = []
        self.problems: list[dict] = []

    def files(self, suffixes: frozenset[str]) -> list[Path]:
        """The export's files whose suffix (any case) is one of ``suffixes``, sorted."""
        return [p for p in self.all_files if os.path.splitext(p.name)[1].lower() in suffixes]

    def image_id(self, path: Path) -> str:
        base = self.id_root if path.is_relative_to(self.id_root) else self.root
        return path.relative_to(base).as_posix()

    def add_image(self, image: Path, *, annotation: Path | None, background: bool) -> str:
        """Add one image; returns its ``image_id`` for ``add_box``."""
        image_id = self.image_id(image)
        self.images.append(
            {
                "image_id": image_id,
                "file": str(image),
                "annotation_file": "" if annotation is None else str(annotation),
                "source_split": _split_of(PurePosixPath(image_id)),
                "background": background,
            }
        )
        return image_id

    def add_box(self, image_id: str, annotation: str, name: str, corners: Iterable[float]) -> None:
        self.boxes.append((image_id, name, *corners, annotation))

    def problem(self, file: Path, reason: str, detail: str = "", *, image: Path | None = None) -> None:
        image_id = self.image_id(image) if image is not None else ""
        self.problems.append({"file": str(file), "image_id": image_id, "reason": reason, "detail": detail})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return (
            pd.DataFrame(self.images, columns=IMAGE_COLUMNS),
            pd.DataFrame.from_records(self.boxes, columns=BOX_COLUMNS),
            pd.DataFrame(self.problems, columns=PROBLEM_COLUMNS),
        )


def _split_of(relative: PurePosixPath) -> str:
    for part in relative.parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return ""


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _files_under(root: Path, suffixes: frozenset[str] | None) -> list[Path]:
    """Files under ``root`` whose suffix (any case) is one of ``suffixes`` (all if None), sorted."""
    found = []
    for folder, _, names in os.walk(root):
        found.extend(
            os.path.join(folder, n) for n in names if suffixes is None or os.path.splitext(n)[1].lower() in suffixes
        )
    return [Path(f) for f in sorted(found)]  # sorted as text: Path comparisons cost seconds on 10,000 files


def _is_coco(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and {"images", "categories"} <= doc.keys()


def _report_unsupported(tables: _Tables) -> None:
    for image in tables.files(UNSUPPORTED_IMAGE_SUFFIXES):
        tables.problem(
            image,
            "unsupported image format",
            f"{image.suffix} is not read; convert to JPEG or PNG to use it",
            image=image,
        )


def detect_format(root: Path) -> str:
    """Guess the export format of a folder.

    Args:
        root: the export's top folder.

    Returns:
        ``"yolo"`` (a ``data.yaml``, ``labels/*.txt`` or a ``classes.txt``/``obj.names``),
        ``"coco"`` (a COCO ``*.json``) or ``"voc"`` (``*.xml`` annotations).

    Raises:
        ValueError: none of the three is recognisable.
    """
    files = _files_under(root, frozenset({".txt", ".yaml", ".names", ".json", ".xml"}))
    if any(p.name in _YOLO_NAME_FILES or (p.parent.name == "labels" and p.suffix == ".txt") for p in files):
        return "yolo"
    if any(_is_coco(p) for p in files if p.suffix.lower() == ".json"):
        return "coco"
    if any(p.suffix.lower() == ".xml" for p in files):
        return "voc"
    raise ValueError(
        f"{root.resolve()}: cannot tell the annotation format (no data.yaml or labels/*.txt, no *.json, no *.xml); "
        "set `format:` on the raw_export entry in conf/*/catalog.yml"
    )


def parse_voc_file(file: str) -> tuple[str, Any]:
    """Parse one Pascal VOC file; runs in worker processes.

    Args:
        file: path of the ``.xml``.

    Returns:
        ``("ok", [(name, x_min, y_min, x_max, y_max), ...])`` with NaN for a missing or
        non-numeric coordinate, or ``("error", detail)``.
    """
    try:
        root = ET.parse(file).getroot()
    except (ET.ParseError, OSError) as err:
        return "error", f"{type(err).__name__}: {err}"
    if root.tag != "annotation":
        return "error", f"root element is <{root.tag}>, not a Pascal VOC <annotation>"
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        corners = [_number(box.findtext(k) if box is not None else None) for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append(((obj.findtext("name") or "").strip(), *corners))
    return "ok", boxes


def read_voc(root: Path, *, map_files: MapFiles = serial_map) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read Pascal VOC: ``NAME.xml`` beside ``NAME.jpg``, or in an ``Annotations/`` folder.

    Args:
        root: the export's top folder.
        map_files: how to run the per-file parser over the annotation files.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    _report_unsupported(tables)
    xml_by_stem: dict[tuple[Path, str], Path] = {}
    for xml in tables.files(frozenset({".xml"})):
        folder = xml.parent.parent / "JPEGImages" if xml.parent.name == "Annotations" else xml.parent
        xml_by_stem[(folder, xml.stem)] = xml
    pairs, claimed = [], set()
    for image in tables.files(IMAGE_SUFFIXES):
        xml = xml_by_stem.get((image.parent, image.stem))
        if xml is None:
            tables.problem(image, "image without annotation", "no NAME.xml beside it or in Annotations/", image=image)
        elif xml in claimed:
            tables.problem(
                image,
                "image without annotation",
                f"{xml.name} is already the annotation of another image with the same name",
                image=image,
            )
        else:
            claimed.add(xml)
            pairs.append((image, xml))
    parsed = map_files(parse_voc_file, [str(xml) for _, xml in pairs], f"Reading {len(pairs)} VOC files")
    for (image, xml), (status, content) in zip(pairs, parsed, strict=True):
        if status == "error":
            tables.problem(xml, "unparseable annotation file", content, image=image)
            continue
        image_id = tables.add_image(image, annotation=xml, background=not content)
        for name, *corners in content:
            tables.add_box(image_id, str(xml), name, corners)
    for xml in sorted(set(xml_by_stem.values()) - claimed):
        tables.problem(xml, "annotation without image", "no image with the same name beside it")
    return tables.frames()


_YOLO_NAME_FILES = ("data.yaml", "classes.txt", "obj.names")


def _yolo_names(tables: _Tables) -> dict[int, str]:
    """Class names by id, from ``data.yaml`` (Ultralytics) or ``classes.txt``/``obj.names`` (darknet)."""
    files = sorted(
        (p for p in tables.files(frozenset({".yaml", ".txt", ".names"})) if p.name in _YOLO_NAME_FILES),
        key=lambda p: (_YOLO_NAME_FILES.index(p.name), len(p.parts), p),
    )
    for file in files:
        try:
            if file.suffix == ".yaml":
                names = (yaml.safe_load(file.read_text(encoding="utf-8-sig")) or {}).get("names")
                names = dict(enumerate(names)) if isinstance(names, list) else names
                return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
            return dict(enumerate(ln.strip() for ln in file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()))
        except (yaml.YAMLError, UnicodeDecodeError, ValueError, TypeError, AttributeError, OSError) as err:
            tables.problem(
                file,
                "unparseable annotation file",
                f"class names unreadable ({type(err).__name__}: {err}); class ids are used as names",
            )
            return {}
    return {}


def parse_yolo_file(file: str) -> tuple[str, Any]:
    """Parse one YOLO label file; runs in worker processes.

    Args:
        file: path of the ``.txt``.

    Returns:
        ``("ok", [[class, cx, cy, w, h] as text, ...])``, ``("columns", detail)`` when a line
        has other than 5 columns, or ``("error", detail)``.
    """
    try:
        lines = [ln.split() for ln in Path(file).read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (UnicodeDecodeError, OSError) as err:
        return "error", f"{type(err).__name__}: {err}"
    bad = [n for n, cols in enumerate(lines, 1) if len(cols) != 5]
    if bad:
        return "columns", f"line {bad[0]} has {len(lines[bad[0] - 1])} columns, expected 5 (class cx cy w h)"
    return "ok", lines


def _yolo_label_of(root: Path, image: Path) -> Path:
    """``.../images/.../X.jpg`` → ``.../labels/.../X.txt`` (Ultralytics); else ``X.txt`` beside it (darknet)."""
    parts = list(image.relative_to(root).parts)
    if "images" in parts[:-1]:
        parts[len(parts) - 2 - parts[-2::-1].index("images")] = "labels"
    return (root / Path(*parts)).with_suffix(".txt")


def read_yolo(root: Path, *, map_files: MapFiles = serial_map) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read YOLO: Ultralytics' ``images/X.jpg`` + ``labels/X.txt`` + ``data.yaml``, or darknet's
    ``X.jpg`` + ``X.txt`` side by side with ``classes.txt``/``obj.names``.

    An empty label file declares a background image, as Ultralytics defines it; a missing one
    is a problem, since a lost label file would otherwise teach "no lesion here".

    Args:
        root: the export's top folder.
        map_files: how to run the per-file parser over the label files.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    _report_unsupported(tables)
    names = _yolo_names(tables)
    images = tables.files(IMAGE_SUFFIXES)
    pairs = []
    for image in images:
        label = _yolo_label_of(root, image)
        if label.is_file():
            pairs.append((image, label))
        else:
            tables.problem(
                image, "image without annotation", f"missing label file {label.relative_to(root)}", image=image
            )
    parsed = map_files(parse_yolo_file, [str(label) for _, label in pairs], f"Reading {len(pairs)} YOLO label files")
    for (image, label), (status, content) in zip(pairs, parsed, strict=True):
        if status != "ok":
            reason = "wrong column count" if status == "columns" else "unparseable annotation file"
            tables.problem(label, reason, content, image=image)
            continue
        image_id = tables.add_image(image, annotation=label, background=not content)
        for cols in content:
            cls, cx, cy, w, h = (_number(c) for c in cols)
            name = names.get(int(cls), cols[0]) if math.isfinite(cls) and cls == int(cls) else cols[0]
            # Fractions until the image size is known: AnnotatedExport scales them to pixels.
            tables.add_box(image_id, str(label), name, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    claimed = {label for _, label in pairs}
    image_folders = {image.parent for image in images}  # a .txt among images is a darknet label
    label_files = (
        p
        for p in tables.files(frozenset({".txt"}))
        if p.name not in _YOLO_NAME_FILES and not p.name.lower().startswith("readme")
    )
    for label in sorted(
        p for p in label_files if p not in claimed and (p.parent.name == "labels" or p.parent in image_folders)
    ):
        tables.problem(label, "annotation without image", "no image with the same name in images/ or beside it")
    return tables.frames()


def read_coco(root: Path, *, map_files: MapFiles = serial_map) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read COCO detection JSON (``instances*.json``, Roboflow's ``_annotations.coco.json``).

    Images are looked up beside the JSON file, then in an ``images/`` folder beside it.
    An image entry with no annotation is a background image, as COCO defines it.

    Args:
        root: the export's top folder.
        map_files: unused: a COCO export is one JSON per split, read here.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    _report_unsupported(tables)
    claimed: set[Path] = set()
    images = tables.files(IMAGE_SUFFIXES)
    by_name: dict[str, list[Path]] = {}
    for image in images:
        by_name.setdefault(image.name, []).append(image)
    for js in tables.files(frozenset({".json"})):
        try:
            doc = json.loads(js.read_text(encoding="utf-8-sig"))
            categories = {c["id"]: str(c["name"]) for c in doc["categories"]}
            entries = {i["id"]: i for i in doc["images"]}
            annotations = list(doc.get("annotations") or [])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as err:
            tables.problem(js, "unparseable annotation file", f"not COCO detection JSON ({type(err).__name__}: {err})")
            continue
        by_image: dict = {}
        for ann in annotations:
            key = ann.get("image_id") if isinstance(ann, dict) else None
            if key in entries:
                by_image.setdefault(key, []).append(ann)
            else:
                tables.problem(
                    js,
                    "annotation without image",
                    f"annotation {ann.get('id') if isinstance(ann, dict) else ann!r} refers to "
                    f"image id {key!r}, which is not in 'images'",
                )
        for image_key, entry in sorted(entries.items(), key=lambda kv: str(kv[1].get("file_name"))):
            name = str(entry.get("file_name", ""))
            image = _coco_image(js, name, by_name)
            if image is None:
                tables.problem(
                    js,
                    "annotation without image",
                    f"{name}: not found beside {js.name}, in images/, or by its name alone in the export",
                )
                continue
            if image in claimed:
                tables.problem(js, "duplicate image entry", f"{name} (image id {image_key!r}) is listed more than once")
                continue
            claimed.add(image)
            anns = by_image.get(image_key, [])
            image_id = tables.add_image(image, annotation=js, background=not anns)
            for ann in anns:
                bbox = ann.get("bbox")
                bbox = list(bbox) if isinstance(bbox, list | tuple) else []
                x, y, w, h = (_number(str(v)) for v in (bbox + [math.nan] * 4)[:4])
                label = categories.get(ann.get("category_id"), str(ann.get("category_id")))
                tables.add_box(image_id, str(js), label, (x, y, x + w, y + h))
    for image in images:
        if image not in claimed:
            tables.problem(image, "image without annotation", "not listed in any COCO json", image=image)
    return tables.frames()


def _coco_image(js: Path, name: str, by_name: dict[str, list[Path]]) -> Path | None:
    """The image a COCO ``file_name`` means: beside the JSON, in ``images/``, or (for paths
    from another machine, e.g. ``/content/drive/.../x.jpg``) the one file with that name."""
    if name and not os.path.isabs(name):
        for candidate in (js.parent / name, js.parent / "images" / name):
            candidate = Path(os.path.normpath(candidate))  # "../images/x.jpg" (labelme2coco) stays comparable
            if candidate.is_file() and candidate in by_name.get(candidate.name, []):  # inside the export only
                return candidate
    same_name = by_name.get(Path(name.replace("\\", "/")).name, [])
    return same_name[0] if len(same_name) == 1 else None


def read_label_studio(
    root: Path, *, map_files: MapFiles = serial_map, photo_root: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Read Label Studio JSON exports (``*.json``: a list of tasks), the review loop's corrections.

    A photo is found from its task's ``image`` address (``/data/local-files/?d=PATH``, PATH
    under ``photo_root``, Label Studio's document root) or, failing that, by its path or name
    under ``root``. Boxes are the reviewer's last submitted annotation, converted from Label
    Studio's percent of the photo to pixels; the grade is the reviewer's choice. A task without
    a submitted annotation (skipped, or not reviewed yet) is reported, never used.

    Args:
        root: the folder holding the export(s).
        map_files: unused: an export is one JSON, read here.
        photo_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` (default: ``root``).

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring), and
        ``{"grades": image, grade; "provenance": image_id, task_id, annotator, submitted_at,
        model_version}`` for the photos used.
    """
    from acne_detection.core.review import choice, photo_path, region_boxes, review_provenance, submitted_annotation

    root = Path(root).resolve()
    photo_root = Path(photo_root or root).resolve()
    tables = _Tables(root, id_root=photo_root)
    by_name: dict[str, list[Path]] = {}
    for image in tables.files(IMAGE_SUFFIXES):
        by_name.setdefault(image.name, []).append(image)
    grades, provenance, claimed = [], [], set()
    for js in tables.files(frozenset({".json"})):
        try:
            tasks = json.loads(js.read_text(encoding="utf-8-sig"))
            if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
                raise TypeError("not a list of tasks with 'data'")
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            tables.problem(js, "unparseable annotation file", f"not a Label Studio JSON export ({err})")
            continue
        for task in tasks:
            data, task_id = task.get("data") or {}, task.get("id", "?")
            relative = photo_path(str(data.get("image", ""))) or str(data.get("photo", ""))
            image = _label_studio_image(photo_root, root, relative, by_name)
            annotation = submitted_annotation(task)
            if image is None:
                tables.problem(js, "annotation without image", f"task {task_id}: {relative or data} not found")
                continue
            if annotation is None:
                reason = "skipped by the reviewer" if task.get("annotations") else "not reviewed yet"
                tables.problem(js, "not reviewed", f"task {task_id}: {reason}", image=None)
                continue
            if image in claimed:
                tables.problem(js, "duplicate image entry", f"task {task_id}: {relative} is in more than one task")
                continue
            claimed.add(image)
            regions = region_boxes(annotation.get("result"))
            image_id = tables.add_image(image, annotation=js, background=regions.empty)
            for r in regions.itertuples(index=False):
                tables.add_box(image_id, f"{js}#task={task_id}", r[1], (r.x_min, r.y_min, r.x_max, r.y_max))
            grade = choice(annotation.get("result"))
            if grade:
                grades.append({"image": image_id, "grade": grade})
            provenance.append({"image_id": image_id, "task_id": str(task_id), **review_provenance(task, annotation)})
    extras = {
        "grades": pd.DataFrame(grades, columns=["image", "grade"]),
        "provenance": pd.DataFrame(provenance, columns=PROVENANCE_COLUMNS),
    }
    return (*tables.frames(), extras)


PROVENANCE_COLUMNS = ["image_id", "task_id", "annotator", "submitted_at", "model_version"]


def _label_studio_image(photo_root: Path, root: Path, relative: str, by_name: dict[str, list[Path]]) -> Path | None:
    """A task's photo: under Label Studio's document root, else under the export by path or name."""
    if relative:
        for base in (photo_root, root):
            candidate = Path(os.path.normpath(base / relative))  # "../.." cannot leave the folder
            if candidate.is_file() and candidate.is_relative_to(Path(os.path.normpath(base))):
                return candidate
    same_name = by_name.get(PurePosixPath(relative).name, [])
    return same_name[0] if len(same_name) == 1 else None


READERS = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco, "label_studio": read_label_studio}
# What each format's folder holds, said to a user whose export has no photo the reader can find.
EXPECTED_LAYOUTS = {
    "voc": "NAME.jpg beside NAME.xml (or Annotations/ + JPEGImages/)",
    "yolo": "data.yaml, */images/*.jpg and */labels/*.txt (or darknet's NAME.txt beside NAME.jpg)",
    "coco": "a *.json with images, annotations and categories, and the images it names",
    "label_studio": "Label Studio's JSON export (a list of tasks) and the photos it names, under photo_root",
}
