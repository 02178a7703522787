"""The embedded default dataset: seeded synthetic photographs of skin with acne lesions.

Each lesion class is drawn with its visual signature, at the sizes real photographs show:

* comedone: a small dark (blackhead) or white (whitehead) dot, 1-2 % of the image width;
* papule: a small raised red bump with a highlight and a shadow, 2.5-4.5 %;
* pustule: a red base with a white-yellow centre, 3-5 %;
* nodule: a larger, diffuse, deeper red swelling, 6-10 %.

The skin has several tones, uneven light, mottling, pores and a few freckles (unlabelled
look-alikes); lesions sometimes touch or overlap. Each photo is drawn for a severity grade,
the four equally often, with a lesion count in that grade's range (ACNE04's 0-5, 6-20,
21-50, 51-64): mild photos include lesion-free ones, very severe ones are dense. The grade of
the drawn count is written to ``grades.csv`` beside the photos, as a real export's would be. Boxes
are drawn as annotators draw them, a little larger than the visible lesion (20 % plus a
pixel). The result is written as a Pascal VOC export, so ingestion reads it exactly as it
reads real data.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np
from PIL import Image

from acne_detection.core.grading import severity_grade
from acne_detection.core.params import SYNTHETIC_CLASSES

logger = logging.getLogger(__name__)

CLASSES = SYNTHETIC_CLASSES
# Source class names written into the XML, as ACNE04 spells them, so the default run
# exercises the same class mapping a real export needs.
SOURCE_NAMES = {
    "comedone": "whitehead and blackhead",
    "papule": "papules",
    "pustule": "pustules",
    "nodule": "nodules and cysts",
}
_SKIN_TONES = np.array(  # RGB in [0, 1], light to dark
    [
        [0.96, 0.80, 0.69],
        [0.93, 0.73, 0.60],
        [0.85, 0.64, 0.48],
        [0.74, 0.52, 0.36],
        [0.58, 0.39, 0.26],
        [0.42, 0.27, 0.18],
    ],
    dtype=np.float32,
)
# The default export's tones, cycled within each grade: one base tone per ITA band (very light
# 61, light 51, intermediate 36, tan 18, brown -8, dark -40 degrees), intermediate to dark twice
# as often, so the 35 % test split holds ~17 photos in each of those four bands (enough to
# compare recall) and ~8 in the two lightest (reported as too few to judge).
_TONE_CYCLE = (2, 3, 4, 5, 0, 2, 3, 4, 5, 1)
_CLASS_SHARE = np.array([0.4, 0.25, 0.2, 0.15])
_BOX_MARGIN = 1.2  # annotators box a lesion with a little skin around it
_DIAMETER = {"comedone": (0.010, 0.020), "papule": (0.025, 0.045), "pustule": (0.030, 0.050), "nodule": (0.060, 0.100)}


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic export is made of; a folder made from the same spec is byte-identical."""

    n_images: int = 200
    size: int = 640
    seed: int = 0
    generator: int = 5  # bumped whenever the drawing changes, so a cached folder is regenerated
    counts: tuple[tuple[int, int], ...] = ((0, 5), (6, 20), (21, 50), (51, 64))  # lesions per grade, inclusive


def base_skin_ita(tone: np.ndarray) -> float:
    """The true ITA of a photo: that of its base skin colour (RGB in [0, 1]), before lighting,
    mottling and pores are applied, as OpenCV's CIELAB gives it."""
    from acne_detection.core.skin_tone import ita_of_lab

    lightness, _, b = cv2.cvtColor(np.asarray(tone, np.float32).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0]
    return ita_of_lab(float(lightness), float(b))


def _skin(
    rng: np.random.Generator, size: int, tones: list[float] | None = None, tone_index: int | None = None
) -> np.ndarray:
    """Skin of one base tone (drawn, or ``_SKIN_TONES[tone_index]``); its true ITA is appended to
    ``tones`` when given."""
    index = rng.integers(len(_SKIN_TONES)) if tone_index is None else tone_index
    tone = _SKIN_TONES[index] * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    if tones is not None:
        tones.append(base_skin_ita(tone))
    img = np.broadcast_to(tone, (size, size, 3)).copy()
    for sigma, amp in ((size / 12, 0.05), (size / 60, 0.025)):  # mottling at two scales
        noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
        img *= 1 + amp * noise[..., None] / (noise.std() + 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.08, 0.22) * ((xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle))
    light -= rng.uniform(0.05, 0.2) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)  # vignette
    img *= light[..., None]
    pores = np.zeros((size, size), np.float32)
    n = int(rng.integers(size, 3 * size))
    pores[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.uniform(0.5, 1.0, n)
    pores = cv2.GaussianBlur(pores, (0, 0), 0.8)
    img *= 1 - 0.35 * np.clip(pores, 0, 1)[..., None]
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.5 else 0):  # freckles: unlabelled look-alikes
        cx, cy, r = rng.uniform(0.05, 0.95) * size, rng.uniform(0.05, 0.95) * size, rng.uniform(0.008, 0.015) * size
        _blend(img, cx, cy, r, r, tone * np.float32(0.78), 0.6, edge=0.35)
    return img


def _blend(
    img: np.ndarray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    color: np.ndarray,
    alpha: float,
    *,
    edge: float = 0.15,
    profile: str = "disk",
) -> None:
    """Alpha-blend an elliptical blob into ``img`` in place, within its bounding patch."""
    size = img.shape[0]
    x0, x1 = max(int(cx - 2 * rx), 0), min(int(cx + 2 * rx) + 2, size)
    y0, y1 = max(int(cy - 2 * ry), 0), min(int(cy + 2 * ry) + 2, size)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    if profile == "gauss":
        mask = np.exp(-0.5 * (d / 0.5) ** 2)
    elif profile == "dome":
        mask = np.clip(1 - d**2, 0, 1) ** 0.6
    else:
        mask = 1 / (1 + np.exp((d - 1) / max(edge, 1e-3)))
    a = (alpha * mask)[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + color * a


def _draw_lesion(
    img: np.ndarray, rng: np.random.Generator, cls: str, cx: float, cy: float, r: float
) -> tuple[float, float]:
    """Draw one lesion centred at (cx, cy); return its half-width and half-height in pixels."""
    rx, ry = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
    skin = img[int(cy), int(cx)].copy()
    red = np.array([0.80, 0.22, 0.22], np.float32) * rng.uniform(0.9, 1.1)
    if cls == "comedone":
        if rng.random() < 0.5:  # blackhead
            _blend(img, cx, cy, rx, ry, np.array([0.16, 0.11, 0.08], np.float32), 0.9, edge=0.12)
        else:  # whitehead: pale dome with a faint pink rim
            _blend(img, cx, cy, rx * 1.3, ry * 1.3, skin * np.array([1.0, 0.85, 0.85], np.float32), 0.5, edge=0.3)
            _blend(img, cx, cy, rx, ry, np.array([0.97, 0.95, 0.86], np.float32), 0.9, edge=0.15)
    elif cls == "papule":
        _blend(img, cx, cy, rx, ry, red, 0.85, profile="dome")
        _blend(img, cx + rx * 0.35, cy + ry * 0.35, rx * 0.6, ry * 0.6, red * 0.6, 0.35, profile="gauss")  # shadow
        _blend(img, cx - rx * 0.35, cy - ry * 0.35, rx * 0.3, ry * 0.3, np.ones(3, np.float32), 0.35, profile="gauss")
    elif cls == "pustule":
        _blend(img, cx, cy, rx, ry, red, 0.85, profile="dome")
        _blend(img, cx, cy, rx * 0.45, ry * 0.45, np.array([0.98, 0.93, 0.66], np.float32), 0.95, edge=0.2)
    else:  # nodule: deep, diffuse, purplish swelling; its visible edge is ~0.9 r
        _blend(img, cx, cy, rx, ry, np.array([0.55, 0.15, 0.22], np.float32), 0.8, profile="gauss")
        _blend(img, cx, cy, rx * 0.9, ry * 0.9, red * 0.8, 0.35, profile="dome")
        rx, ry = rx * 0.9, ry * 0.9
    return rx, ry


def _place(
    rng: np.random.Generator, size: int, r: float, centres: list[tuple[float, float, float]]
) -> tuple[float, float] | None:
    """A centre for a lesion of radius ``r``: touching an earlier lesion a quarter of the time,
    else apart from all of them; ``None`` when the skin is too crowded to find one."""
    for _ in range(40):
        if centres and rng.random() < 0.25:  # touch or overlap an earlier lesion
            px, py, pr = centres[rng.integers(len(centres))]
            angle, dist = rng.uniform(0, 2 * np.pi), (pr + r) * rng.uniform(0.6, 1.1)
            cx, cy = px + dist * np.cos(angle), py + dist * np.sin(angle)
        else:
            cx, cy = rng.uniform(0.06, 0.94, 2) * size
            if any(np.hypot(cx - x, cy - y) < 0.9 * (r + q) for x, y, q in centres):
                continue
        if 2 * r < cx < size - 2 * r and 2 * r < cy < size - 2 * r:
            return cx, cy
    return None


def render_photo(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    grade: int | None = None,
    tones: list[float] | None = None,
    tone_index: int | None = None,
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """Render one photograph and its lesion boxes.

    Args:
        rng: the generator to draw from (its state advances).
        spec: the dataset specification.
        grade: the severity grade to draw a lesion count for (``spec.counts``); ``None``: drawn.
        tones: when given, the photo's true skin tone (ITA of its base colour) is appended.
        tone_index: which of the base skin tones (light to dark); ``None``: drawn.

    Returns:
        The image, ``(size, size, 3)`` uint8 RGB, and a list of ``(class, x_min, y_min, x_max,
        y_max)`` boxes in pixels.
    """
    size = spec.size
    img = _skin(rng, size, tones, tone_index)
    boxes: list[tuple[str, float, float, float, float]] = []
    grade = int(rng.integers(len(spec.counts))) if grade is None else grade
    low, high = spec.counts[grade]
    n = int(rng.integers(low, high + 1))
    centres: list[tuple[float, float, float]] = []
    for cls in rng.choice(CLASSES, size=n, p=_CLASS_SHARE):
        r = rng.uniform(*_DIAMETER[cls]) * size / 2
        place = _place(rng, size, r, centres)
        if place is None:
            continue
        cx, cy = place
        hw, hh = (v * _BOX_MARGIN + 1 for v in _draw_lesion(img, rng, str(cls), cx, cy, r))
        centres.append((cx, cy, r))
        boxes.append((str(cls), max(cx - hw, 0.0), max(cy - hh, 0.0), min(cx + hw, size), min(cy + hh, size)))
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)  # sensor noise
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), boxes


def _voc_xml(filename: str, size: int, boxes: list[tuple[str, float, float, float, float]]) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(SOURCE_NAMES[c])}</name>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x0:.1f}</xmin>\n\t\t\t<ymin>{y0:.1f}</ymin>\n\t\t\t<xmax>{x1:.1f}</xmax>\n\t\t\t<ymax>{y1:.1f}</ymax>\n"
        "\t\t</bndbox>\n\t</object>\n"
        for c, x0, y0, x1, y1 in boxes
    )
    return (
        f"<annotation>\n\t<filename>{escape(filename)}</filename>\n\t<size>\n\t\t<width>{size}</width>\n"
        f"\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n{objects}</annotation>\n"
    )


def write_voc_export(path: str | Path, **spec_kwargs: int | float) -> Path:
    """Write the synthetic dataset as a Pascal VOC export (``NAME.jpg`` beside ``NAME.xml``).

    Idempotent: a folder already holding the same specification is left as it is; one
    holding another specification is replaced.

    Args:
        path: the folder to write (created if missing).
        **spec_kwargs: fields of ``SyntheticSpec`` (``n_images``, ``size``, ``seed``, ...).

    Returns:
        The folder.
    """
    spec = SyntheticSpec(**spec_kwargs)
    root = Path(path)
    manifest = root / "synthetic.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if manifest.exists() and manifest.read_text(encoding="utf-8") == wanted:
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(spec.seed)
    grades, tones = [], []
    for i in range(spec.n_images):
        tone_index = _TONE_CYCLE[(i // len(spec.counts)) % len(_TONE_CYCLE)]
        pixels, boxes = render_photo(rng, spec, grade=i % len(spec.counts), tones=tones, tone_index=tone_index)
        name = f"synthetic_{i:05d}.jpg"
        Image.fromarray(pixels).save(root / name, quality=92)
        (root / name).with_suffix(".xml").write_text(_voc_xml(name, spec.size, boxes), encoding="utf-8")
        grades.append(f"{name},{int(severity_grade(len(boxes), [hi for _, hi in spec.counts[:-1]]))}")
        if (i + 1) % 50 == 0 or i + 1 == spec.n_images:
            logger.info("Synthetic photographs: %d/%d written to %s", i + 1, spec.n_images, root)
    (root / "grades.csv").write_text("image,grade\n" + "\n".join(grades) + "\n", encoding="utf-8")
    # the true skin tone of each photo, for testing tone estimates (a real export has none)
    (root / "skin_tones.csv").write_text(
        "image,ita\n" + "".join(f"synthetic_{i:05d}.jpg,{t:.2f}\n" for i, t in enumerate(tones)), encoding="utf-8"
    )
    manifest.write_text(wanted, encoding="utf-8")
    return root


# Lesion diameters in pixels of a phone photo of a face (~4000 px wide): absolute sizes, not
# scaled with the photo, so a comedone stays 5-15 px however large the photo is.
_PHONE_DIAMETER_PX = {"comedone": (5, 15), "papule": (15, 30), "pustule": (20, 36), "nodule": (40, 80)}


# What surrounds a face in a phone photo (sRGB), for photos with background
# (``render_phone_photo(background=True)``): a wall, hair above the face, a shirt below.
_WALLS = {
    "white wall": (236, 234, 230),
    "grey wall": (150, 150, 148),
    "beige wall": (245, 240, 215),
    "wheat wall": (245, 222, 179),
    "pine wood": (227, 192, 141),
}
_HAIR = {"black hair": (22, 20, 18), "dark-brown hair": (59, 48, 36), "blonde hair": (230, 206, 168)}
_SHIRTS = {"blue shirt": (50, 80, 140), "green shirt": (60, 110, 70), "white shirt": (240, 240, 240)}


def render_phone_photo(
    rng: np.random.Generator, width: int, height: int, n_lesions: int, *, background: bool = False
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """A large photo as a phone takes it: skin texture at a quarter of the resolution (smooth
    at this scale), lesions at their absolute pixel sizes (``_PHONE_DIAMETER_PX``).

    With ``background``, the face is an ellipse covering about a third of the frame (lesions
    only on it), under hair, above a shirt, before a wall (``_WALLS``, ``_HAIR``, ``_SHIRTS``,
    drawn at random, with grain on the wood, strands in the hair and shading on the wall): at
    least half of the photo is not skin.

    Returns:
        ``(height, width, 3)`` uint8 RGB pixels and ``(class, x_min, y_min, x_max, y_max)`` boxes.
    """
    side = max(width, height)
    small = _skin(rng, max(side // 4, 64))
    img = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    face = (0.5 * width, 0.55 * height, 0.30 * width, 0.33 * height)  # centre and semi-axes
    boxes: list[tuple[str, float, float, float, float]] = []
    centres: list[tuple[float, float, float]] = []
    for cls in rng.choice(CLASSES, size=n_lesions, p=_CLASS_SHARE):
        r = rng.uniform(*_PHONE_DIAMETER_PX[str(cls)]) / 2
        for _ in range(40):
            if background:  # on the face, a lesion's width inside its edge
                angle, reach = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.95
                cx, cy = face[0] + reach * face[2] * np.cos(angle), face[1] + reach * face[3] * np.sin(angle)
            else:
                cx, cy = rng.uniform(0.05 * width, 0.95 * width), rng.uniform(0.05 * height, 0.95 * height)
            if all(np.hypot(cx - x, cy - y) > 1.2 * (r + q) for x, y, q in centres):
                break
        else:
            continue
        hw, hh = (v * _BOX_MARGIN + 1 for v in _draw_lesion(img, rng, str(cls), cx, cy, r))
        centres.append((cx, cy, r))
        boxes.append((str(cls), max(cx - hw, 0.0), max(cy - hh, 0.0), min(cx + hw, width), min(cy + hh, height)))
    img = img[:height, :width]
    if background:
        img = _surround(rng, img, face)
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), boxes


def _surround(rng: np.random.Generator, img: np.ndarray, face: tuple[float, float, float, float]) -> np.ndarray:
    """The face ellipse of ``img`` kept; around it a wall, hair over the head and a shirt below."""
    height, width = img.shape[:2]
    yy, xx = np.ogrid[0:height, 0:width]
    cx, cy, ax, ay = face
    on_face = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    hair = (((xx - cx) / (ax * 1.15)) ** 2 + ((yy - cy + 0.08 * height) / (ay * 1.12)) ** 2 <= 1) & (yy < cy)
    shirt = np.broadcast_to(yy > cy + ay * 0.95, (height, width))
    wall_name = str(rng.choice(list(_WALLS)))
    wall = np.broadcast_to(np.asarray(_WALLS[wall_name], np.float32) / 255, img.shape).copy()
    shade = 1 + 0.06 * (xx / width - 0.5) - 0.04 * (yy / height - 0.5)  # light falls off across the wall
    wall *= shade[..., None].astype(np.float32)
    if wall_name == "pine wood":  # grain: wavy darker stripes
        grain = np.sin(2 * np.pi * (xx / 90.0 + 0.3 * np.sin(yy / 400.0))) * 0.5 + 0.5
        wall *= (1 - 0.12 * grain)[..., None].astype(np.float32)
    out = np.where(on_face[..., None], img, wall)
    strands = np.zeros((height, width), np.float32)
    for _ in range(4000):  # hair: thin strands, lighter and darker than the colour
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.normal(0, 60), y0 + rng.uniform(200, 600)
        cv2.line(strands, (int(x0), int(y0)), (int(x1), int(y1)), float(rng.uniform(-1, 1)), 3)
    hair_rgb = np.asarray(_HAIR[str(rng.choice(list(_HAIR)))], np.float32) / 255
    hair_px = hair_rgb * (1 + 0.25 * strands[..., None])
    out = np.where((hair & ~on_face)[..., None], hair_px, out)
    shirt_rgb = np.asarray(_SHIRTS[str(rng.choice(list(_SHIRTS)))], np.float32) / 255
    return np.where((shirt & ~on_face)[..., None], shirt_rgb, out).astype(np.float32)


def write_new_photos(
    path: str | Path,
    *,
    n_small: int = 4,
    n_phone: int = 2,
    seed: int = 1,
    size: int = 640,
    phone_size: tuple[int, int] = (3000, 4000),
    labels: bool = False,
    background: bool = False,
) -> Path:
    """Unlabelled photos to try ``kedro run --pipeline predict`` on: ``n_small`` like the
    training photos and ``n_phone`` at a phone's full resolution (portrait by default).

    Args:
        path: the folder (created).
        n_small: photos at ``size`` px, one per severity grade in turn.
        n_phone: photos at ``phone_size`` (width, height) with lesions of absolute size.
        seed: the random seed.
        size: side of the small photos.
        phone_size: width and height of the phone photos.
        labels: also write a VOC ``.xml`` beside each photo (for benchmarks; the default
            demo folder has none, as new photos would not).
        background: phone photos of a face before a wall, under hair, over a shirt (at least
            half of each photo is not skin) instead of skin filling the frame.

    Returns:
        The folder.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = SyntheticSpec(size=size)
    made = [(f"photo_{i:02d}.jpg", *render_photo(rng, spec, grade=i % len(spec.counts))) for i in range(n_small)]
    for i in range(n_phone):
        n_lesions = int(rng.integers(8, 40))
        made.append((f"phone_{i:02d}.jpg", *render_phone_photo(rng, *phone_size, n_lesions, background=background)))
    for name, pixels, boxes in made:
        Image.fromarray(pixels).save(root / name, quality=92)
        if labels:
            h, w = pixels.shape[:2]
            xml = _voc_xml(name, w, boxes).replace(f"<height>{w}</height>", f"<height>{h}</height>")
            (root / name).with_suffix(".xml").write_text(xml, encoding="utf-8")
    logger.info("Demo photos to predict on: %d written to %s", len(made), root)
    return root
