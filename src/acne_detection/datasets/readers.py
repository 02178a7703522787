"""Readers for the annotation formats real acne datasets ship in: Pascal VOC, YOLO and COCO.

Every reader returns the same three tables, so everything after ingestion is format-blind:

* ``images``: one row per image file found (``image_id``, ``file``, ``annotation_file``,
  ``source_split``, ``background``: whether the format declares it lesion-free);
* ``boxes``: one row per box in pixel corners (``image_id``, ``class_name``, ``x_min``,
  ``y_min``, ``x_max``, ``y_max``, ``annotation_file``), NaN where a value was not a number;
* ``problems``: one row per file that could not be used (``file``, ``image_id``, ``reason``,
  ``detail``).

Readers never raise on bad content and never modify a source file: a problem is a row.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}

IMAGE_COLUMNS = ["image_id", "file", "annotation_file", "source_split", "background"]
BOX_COLUMNS = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max", "annotation_file"]
PROBLEM_COLUMNS = ["file", "image_id", "reason", "detail"]


class _Tables:
    """Accumulates the three tables a reader returns."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: list[dict] = []
        self.boxes: list[dict] = []
        self.problems: list[dict] = []

    def image_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def add_image(self, image: Path, *, annotation: Path | None, background: bool) -> None:
        self.images.append(
            {
                "image_id": self.image_id(image),
                "file": str(image),
                "annotation_file": "" if annotation is None else str(annotation),
                "source_split": _split_of(image.relative_to(self.root)),
                "background": background,
            }
        )

    def add_box(self, image: Path, annotation: Path, name: str, corners: Iterable[float]) -> None:
        x_min, y_min, x_max, y_max = corners
        self.boxes.append(
            {
                "image_id": self.image_id(image),
                "class_name": name,
                "x_min": x_min,
                "y_min": y_min,
                "x_max": x_max,
                "y_max": y_max,
                "annotation_file": str(annotation),
            }
        )

    def problem(self, file: Path, reason: str, detail: str = "", *, image: Path | None = None) -> None:
        image_id = self.image_id(image) if image is not None else ""
        self.problems.append({"file": str(file), "image_id": image_id, "reason": reason, "detail": detail})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return (
            pd.DataFrame(self.images, columns=IMAGE_COLUMNS),
            pd.DataFrame(self.boxes, columns=BOX_COLUMNS),
            pd.DataFrame(self.problems, columns=PROBLEM_COLUMNS),
        )


def _split_of(relative: Path) -> str:
    for part in relative.parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return ""


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _is_coco(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and {"images", "categories"} <= doc.keys()


def detect_format(root: Path) -> str:
    """Guess the export format of a folder.

    Args:
        root: the export's top folder.

    Returns:
        ``"yolo"`` (a ``data.yaml`` or ``labels/*.txt``), ``"coco"`` (a COCO ``*.json``) or
        ``"voc"`` (``*.xml`` annotations).

    Raises:
        ValueError: none of the three is recognisable.
    """
    if any(root.rglob("data.yaml")) or any(p.parent.name == "labels" for p in root.rglob("*.txt")):
        return "yolo"
    if any(_is_coco(js) for js in root.rglob("*.json")):
        return "coco"
    if any(root.rglob("*.xml")):
        return "voc"
    raise ValueError(
        f"{root}: cannot tell the annotation format (no data.yaml or labels/*.txt, no *.json, no *.xml); "
        "set `format:` on the raw_export entry in conf/*/catalog.yml"
    )


def read_voc(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read Pascal VOC: ``NAME.xml`` beside ``NAME.jpg``, or in an ``Annotations/`` folder.

    Args:
        root: the export's top folder.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    xml_by_stem: dict[tuple[Path, str], Path] = {}
    for xml in sorted(root.rglob("*.xml")):
        folder = xml.parent.parent / "JPEGImages" if xml.parent.name == "Annotations" else xml.parent
        xml_by_stem[(folder, xml.stem)] = xml
    claimed: set[Path] = set()
    for image in _images_under(root):
        xml = xml_by_stem.get((image.parent, image.stem))
        if xml is None:
            tables.problem(image, "image without annotation", "no NAME.xml beside it or in Annotations/", image=image)
            continue
        claimed.add(xml)
        try:
            objects = ET.parse(xml).getroot().findall("object")
        except ET.ParseError as err:
            tables.problem(xml, "unparseable annotation file", str(err), image=image)
            continue
        tables.add_image(image, annotation=xml, background=not objects)
        for obj in objects:
            box = obj.find("bndbox")
            corners = [_number(box.findtext(k) if box is not None else None) for k in ("xmin", "ymin", "xmax", "ymax")]
            tables.add_box(image, xml, (obj.findtext("name") or "").strip(), corners)
    for xml in sorted(set(xml_by_stem.values()) - claimed):
        tables.problem(xml, "annotation without image", "no image with the same name beside it")
    return tables.frames()


def _yolo_names(root: Path) -> dict[int, str]:
    for data_yaml in sorted(root.rglob("data.yaml")):
        names = (yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}).get("names")
        if isinstance(names, list):
            return dict(enumerate(str(n) for n in names))
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}
    return {}


def read_yolo(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the Ultralytics layout: ``data.yaml`` plus ``.../images/X.jpg`` and ``.../labels/X.txt``.

    An empty label file declares a background image, as Ultralytics defines it; a missing one
    is a problem, since a lost label file would otherwise teach "no lesion here".

    Args:
        root: the export's top folder.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    names = _yolo_names(root)
    claimed: set[Path] = set()
    for image in _images_under(root):
        parts = list(image.relative_to(root).parts)
        if "images" not in parts:
            continue
        parts[len(parts) - 1 - parts[::-1].index("images")] = "labels"
        label = (root / Path(*parts)).with_suffix(".txt")
        if not label.exists():
            tables.problem(image, "image without annotation", f"missing label file {label.name}", image=image)
            continue
        claimed.add(label)
        try:
            lines = [ln.split() for ln in label.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (UnicodeDecodeError, OSError) as err:
            tables.problem(label, "unparseable annotation file", str(err), image=image)
            continue
        bad = [n for n, cols in enumerate(lines, 1) if len(cols) != 5]
        if bad:
            tables.problem(
                label, "wrong column count",
                f"line {bad[0]} has {len(lines[bad[0] - 1])} columns, expected 5 (class cx cy w h)", image=image,
            )
            continue
        tables.add_image(image, annotation=label, background=not lines)
        for cols in lines:
            cls, cx, cy, w, h = (_number(c) for c in cols)
            name = names.get(int(cls), str(cols[0])) if math.isfinite(cls) and cls == int(cls) else str(cols[0])
            # Normalised until the image size is known; ingestion scales them (see ``normalised``).
            tables.add_box(image, label, name, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    for label in sorted(p for p in root.rglob("*.txt") if p.parent.name == "labels" and p not in claimed):
        tables.problem(label, "annotation without image", "no image with the same name in images/")
    return tables.frames()


def read_coco(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read COCO detection JSON (``instances*.json``, Roboflow's ``_annotations.coco.json``).

    Images are looked up beside the JSON file, then in an ``images/`` folder beside it.
    An image entry with no annotation is a background image, as COCO defines it.

    Args:
        root: the export's top folder.

    Returns:
        The ``images``, ``boxes`` and ``problems`` tables (see the module docstring).
    """
    tables = _Tables(root)
    claimed: set[Path] = set()
    for js in sorted(root.rglob("*.json")):
        try:
            doc = json.loads(js.read_text(encoding="utf-8"))
            categories = {c["id"]: str(c["name"]) for c in doc["categories"]}
            entries = {i["id"]: i for i in doc["images"]}
            annotations = doc.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            tables.problem(js, "unparseable annotation file", f"{type(err).__name__}: {err}")
            continue
        by_image: dict = {}
        for ann in annotations:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        for image_key, entry in sorted(entries.items(), key=lambda kv: str(kv[1].get("file_name"))):
            name = str(entry.get("file_name", ""))
            candidates = [js.parent / name, js.parent / "images" / name]
            image = next((c for c in candidates if c.is_file()), None)
            if image is None:
                tables.problem(js, "annotation without image", f"{name}: not found beside {js.name} or in images/")
                continue
            claimed.add(image)
            anns = by_image.get(image_key, [])
            tables.add_image(image, annotation=js, background=not anns)
            for ann in anns:
                bbox = ann.get("bbox") or [math.nan] * 4
                x, y, w, h = (_number(str(v)) for v in (list(bbox) + [math.nan] * 4)[:4])
                name_ = categories.get(ann.get("category_id"), str(ann.get("category_id")))
                tables.add_box(image, js, name_, (x, y, x + w, y + h))
    for image in _images_under(root):
        if image not in claimed:
            tables.problem(image, "image without annotation", "not listed in any COCO json", image=image)
    return tables.frames()


READERS = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco}
