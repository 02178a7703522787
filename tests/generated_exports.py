"""Exports as users bring them, generated: a hypothesis strategy and writers for VOC, YOLO and COCO.

An export is a list of photos, each of one kind (plain JPEG, grayscale, RGBA, 16-bit, EXIF-rotated,
a phone's HEIC, a photo with no measurable skin, a tiny photo, a photo entirely covered by one
box) with its boxes, class names in odd case and spacing, a grade in the file name or none, and
some source photos in several Roboflow-style copies. The same drawn export can be written in
any of the three formats, so each format meets every kind of photo.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import PHONE_HEIC, write_voc

KINDS = ("rgb", "gray", "rgba", "deep16", "exif", "heic", "no_skin", "tiny", "covered")
# Spellings real exports use for the base class map's names (README: case, spaces, "_", "-",
# a leading number and plurals do not matter).
CLASS_NAMES = ("papules", " Papules ", "PUSTULES", "whitehead_and_blackhead", "Nodules  and cysts", "0 papule")
SKIN = ((224, 190, 165), (200, 150, 120), (160, 110, 80), (110, 70, 50), (70, 45, 35))
_HEIC_BOXES = json.loads(PHONE_HEIC.with_suffix(".boxes.json").read_text())


@dataclass(frozen=True)
class Photo:
    """One photo to write: its file stem, kind, displayed size, skin colour, boxes and grade."""

    stem: str
    kind: str
    width: int
    height: int
    skin: tuple[int, int, int]
    boxes: tuple[tuple[str, float, float, float, float], ...]
    grade: int | None


@st.composite
def exports(draw: st.DrawFn, *, max_sources: int = 6) -> tuple[Photo, ...]:
    """A drawn export: 1..``max_sources`` source photos, 1-3 copies each."""
    one_class = draw(st.booleans())
    names = (draw(st.sampled_from(CLASS_NAMES)),) if one_class else CLASS_NAMES
    one_tone = draw(st.booleans())
    tone = draw(st.sampled_from(SKIN))
    graded = draw(st.sampled_from(("all", "some", "none")))
    photos = []
    for s in range(draw(st.integers(1, max_sources))):
        kind = draw(st.sampled_from(KINDS))
        width, height = (
            (320, 320) if kind == "heic" else (8, 8) if kind == "tiny" else draw(st.sampled_from(((96, 96), (128, 80))))
        )
        skin = tone if one_tone else draw(st.sampled_from(SKIN))
        grade = draw(st.integers(0, 3)) if graded == "all" or (graded == "some" and draw(st.booleans())) else None
        if kind == "heic":
            boxes = tuple((names[i % len(names)], *b[1:]) for i, b in enumerate(_HEIC_BOXES["boxes"]))
        elif kind == "covered":
            boxes = ((names[0], 0.0, 0.0, float(width), float(height)),)
        else:
            boxes = tuple(
                (
                    draw(st.sampled_from(names)),
                    float(x),
                    float(y),
                    float(min(width, x + draw(st.integers(4, 30)))),
                    float(min(height, y + draw(st.integers(4, 30)))),
                )
                for x, y in draw(st.lists(st.tuples(st.integers(0, width - 5), st.integers(0, height - 5)), max_size=5))
            )
        prefix = f"levle{grade}_" if grade is not None else "photo_"
        copies = draw(st.integers(1, 3))
        for c in range(copies):
            stem = f"{prefix}{s}_jpg.rf.{c:02x}{s:06x}" if copies > 1 else f"{prefix}{s}"
            photos.append(Photo(stem, kind, width, height, skin, boxes, grade))
    return tuple(photos)


def _pixels(photo: Photo, seed: int) -> np.ndarray:
    """``(H, W, 3)`` displayed RGB pixels: skin with noise and a darker red spot per box."""
    rng = np.random.default_rng(seed)
    colour = (40, 90, 170) if photo.kind == "no_skin" else photo.skin
    pixels = np.clip(np.array(colour, float) + rng.normal(0, 4, (photo.height, photo.width, 3)), 0, 255)
    for _, x0, y0, x1, y1 in photo.boxes:
        if photo.kind != "covered":
            pixels[int(y0) : int(y1), int(x0) : int(x1)] = (170, 50, 50)
    return pixels.astype(np.uint8)


def _write_image(photo: Photo, folder: Path, seed: int) -> str:
    """Write the photo in its kind's format; returns its file name."""
    if photo.kind == "heic":
        shutil.copy(PHONE_HEIC, folder / f"{photo.stem}.heic")
        return f"{photo.stem}.heic"
    img = Image.fromarray(_pixels(photo, seed))
    if photo.kind == "gray":
        img.convert("L").save(folder / f"{photo.stem}.png")
    elif photo.kind == "rgba":
        img.convert("RGBA").save(folder / f"{photo.stem}.png")
    elif photo.kind == "deep16":
        deep = (np.asarray(img.convert("L"), np.uint16) * 257).astype(np.uint16)
        Image.fromarray(deep).save(folder / f"{photo.stem}.png")
    elif photo.kind == "exif":  # stored on its side; EXIF orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(folder / f"{photo.stem}.jpg", exif=exif, quality=92)
    else:
        img.save(folder / f"{photo.stem}.jpg", quality=92)
        return f"{photo.stem}.jpg"
    return next(p.name for p in folder.iterdir() if p.stem == photo.stem and p.suffix != ".xml")


def write_export(photos: tuple[Photo, ...], root: Path, fmt: str) -> Path:
    """Write ``photos`` as a ``fmt`` (``voc``, ``yolo`` or ``coco``) export under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    files = [_write_image(photo, root, seed=i) for i, photo in enumerate(photos)]
    names = sorted({b[0] for p in photos for b in p.boxes}) or ["papules"]
    if fmt == "voc":
        for photo, file in zip(photos, files):
            write_voc(root / f"{photo.stem}.xml", file, list(photo.boxes), size=(photo.width, photo.height))
    elif fmt == "yolo":
        (root / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        for photo in photos:
            lines = [
                f"{names.index(n)} {(a + c) / 2 / photo.width:.6f} {(b + d) / 2 / photo.height:.6f} "
                f"{(c - a) / photo.width:.6f} {(d - b) / photo.height:.6f}\n"
                for n, a, b, c, d in photo.boxes
            ]
            (root / f"{photo.stem}.txt").write_text("".join(lines), encoding="utf-8")
    else:
        coco = {
            "images": [
                {"id": i, "file_name": f, "width": p.width, "height": p.height}
                for i, (p, f) in enumerate(zip(photos, files))
            ],
            "annotations": [
                {"id": k, "image_id": i, "category_id": names.index(n), "bbox": [a, b, c - a, d - b], "iscrowd": 0}
                for k, (i, (n, a, b, c, d)) in enumerate((i, box) for i, p in enumerate(photos) for box in p.boxes)
            ],
            "categories": [{"id": i, "name": n} for i, n in enumerate(names)],
        }
        (root / "_annotations.coco.json").write_text(json.dumps(coco), encoding="utf-8")
    return root
