"""Reference computations the tests hold the project's metrics to, and the benchmarks time the
project against: random detection tables, and pycocotools' own COCOeval summary, built here
independently of ``acne_detection.metrics``."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

COLS = ["image", "class_id", "x_min", "y_min", "x_max", "y_max"]


def random_detections(n_images: int, n_classes: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    gt_rows, dt_rows = [], []
    for i in range(n_images):
        image = f"img{i}"
        n_gt = 0 if rng.random() < 0.1 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(4, 120, 2)
            c = int(rng.integers(n_classes))
            gt_rows.append((image, c, x, y, x + w, y + h))
            if rng.random() < 0.8:  # a detection near it, sometimes of the wrong class
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() < 0.85 else int(rng.integers(n_classes))
                dt_rows.append(
                    (
                        image,
                        cls,
                        float(rng.uniform(0.05, 1)),
                        x + jitter[0],
                        y + jitter[1],
                        x + w + jitter[2],
                        y + h + jitter[3],
                    )
                )
        if rng.random() < 0.1:
            continue  # an image with no detection at all
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            x, y = rng.uniform(0, 500, 2)
            dt_rows.append((image, int(rng.integers(n_classes)), float(rng.uniform(0, 0.6)), x, y, x + 30, y + 30))
    gt = pd.DataFrame(gt_rows, columns=COLS)
    dt = pd.DataFrame(dt_rows, columns=["image", "class_id", "confidence", "x_min", "y_min", "x_max", "y_max"])
    return gt, dt


def pycocotools_summary(gt: pd.DataFrame, dt: pd.DataFrame, images: list[str], n_classes: int) -> np.ndarray:
    ids = {name: i for i, name in enumerate(images, 1)}
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in ids.values()],
        "categories": [{"id": c} for c in range(n_classes)],
        "annotations": [
            {
                "id": k,
                "image_id": ids[r.image],
                "category_id": int(r.class_id),
                "iscrowd": 0,
                "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min],
                "area": (r.x_max - r.x_min) * (r.y_max - r.y_min),
            }
            for k, r in enumerate(gt.itertuples(), 1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes(
            [
                {
                    "image_id": ids[r.image],
                    "category_id": int(r.class_id),
                    "score": r.confidence,
                    "bbox": [r.x_min, r.y_min, r.x_max - r.x_min, r.y_max - r.y_min],
                }
                for r in dt.itertuples()
            ]
        )
        ev = COCOeval(coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
