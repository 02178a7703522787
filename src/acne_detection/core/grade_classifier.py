"""A whole-photo grade classifier: the grade model's second signal, beside the detector's evidence.

A detector trained on ACNE04's 5x-downscaled photos sees lesions of a few pixels and misses many;
a classifier looking at the whole face sees redness, texture and spread that no single box
holds. Fine-tuned from the COCO backbone (``yolov8n-cls.yaml`` with ``yolov8n.pt``'s backbone
transferred by Ultralytics' ``load``) at 224 px, it grades unseen ACNE04 photos about as well as
the detector's count (0.66 against 0.67), and the two together grade better (issue 34). The
grade model (``core.grade_model``) takes its probabilities as features and is chosen on
validation like everything else: where they do not help there, they are not used.

Photos are decoded once, the project's way (``inference.load_photo``: EXIF orientation, any
depth, HEIC), so eval, predict and the served model score the same pixels.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from acne_detection.core.inference import load_photo

SCORE_PREFIX = "cls."  # a scores table's column per grade: cls.0 .. cls.<K-1>


def write_image_folders(photos: pd.DataFrame, root: Path) -> dict[str, int]:
    """The ImageFolder layout Ultralytics' classification trainer reads: ``root/<split>/<grade>/``,
    hard links to the photos (copies where links cannot be made), made anew.

    Args:
        photos: one row per photo: ``path`` (the file), ``split`` (``train`` or ``val``) and ``grade``.
        root: the folder to write.

    Returns:
        Photos per split.
    """
    shutil.rmtree(root, ignore_errors=True)
    counts: dict[str, int] = {}
    for row in photos.itertuples():
        folder = root / str(row.split) / str(int(row.grade))
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(row.path)
        target = folder / f"{len(list(folder.iterdir())):05d}{source.suffix.lower()}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        counts[str(row.split)] = counts.get(str(row.split), 0) + 1
    return counts


def grade_scores(
    model: Any, photos: Sequence[tuple[str, str | Path | bytes]], *, n_grades: int, imgsz: int, batch: int = 16
) -> pd.DataFrame:
    """Each photo's probability of each grade under the classifier.

    Args:
        model: an Ultralytics classification model (``YOLO(<grade classifier>.pt)``); its class
            names are the grades it was trained on (``"0"`` .. ``"3"``; a grade with no training
            photo is not among them and scores 0).
        photos: ``(key, path or bytes)`` pairs.
        n_grades: grades of the rule.
        imgsz: the classifier's image size.
        batch: photos per forward pass.

    Returns:
        One row per photo, indexed by key, columns ``cls.0`` .. ``cls.<n_grades-1>``; rows sum to 1.
    """
    grade_of = {i: int(name) for i, name in model.names.items()}
    rows = np.zeros((len(photos), n_grades))
    for start in range(0, len(photos), batch):
        chunk = photos[start : start + batch]
        # the project's decoding (RGB), handed to Ultralytics as the BGR arrays it expects
        pixels = [np.ascontiguousarray(load_photo(source, max_side=4 * imgsz)[0][..., ::-1]) for _, source in chunk]
        for i, result in enumerate(model.predict(pixels, imgsz=imgsz, verbose=False, device="cpu")):
            probs = result.probs.data.cpu().numpy().astype(float)
            for k, p in enumerate(probs):
                rows[start + i, grade_of[k]] = p
    rows /= np.maximum(rows.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(rows, index=pd.Index([key for key, _ in photos], name="image"), columns=score_columns(n_grades))


def score_columns(n_grades: int) -> list[str]:
    return [f"{SCORE_PREFIX}{k}" for k in range(n_grades)]
