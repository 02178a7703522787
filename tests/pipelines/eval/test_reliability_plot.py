"""The reliability diagram of a model that detected nothing: drawn, not a failed run (seen on the
ACNE04 dev slice with a 1-epoch, 64 px yolov8s: matplotlib refused to log-scale counts all zero)."""

from __future__ import annotations

import io

import pandas as pd

from acne_detection.pipelines.eval.calibration import plot_reliability


def _table(detections: list[int]) -> pd.DataFrame:
    rows = []
    for stage in ("raw", "calibrated"):
        for i, n in enumerate(detections):
            low = i / len(detections)
            rows.append(
                {
                    "stage": stage,
                    "low": low,
                    "high": low + 1 / len(detections),
                    "confidence": low + 0.05,
                    "precision": 0.5 if n else float("nan"),
                    "detections": n,
                }
            )
    return pd.DataFrame(rows)


def test_no_detections_draw_on_a_linear_scale_and_some_on_a_log_one() -> None:
    for detections, scale in (([0] * 10, "linear"), ([0, 3, 40, 0, 0, 0, 0, 0, 0, 0], "log")):
        fig = plot_reliability(_table(detections), {"detections": float(sum(detections))})
        fig.savefig(io.BytesIO(), format="png")  # where matplotlib raised before
        assert fig.axes[1].get_yscale() == scale
