"""The sweep's figure: recipes side by side, and learning curves against epochs and photos."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from acne_detection.pipelines.sweep.nodes import recipe_label


def plot_sweep(results: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Three panels: validation mAP@50 and grading accuracy per recipe (with the grading's 95 %
    interval); validation mAP@50 against epochs per recipe (Ultralytics' per-epoch line, the
    project's checkpoint measurements as markers, grading accuracy dashed); both against
    training photos for the recipes trained on shares of the photos.

    Args:
        results: ``run_sweep``'s recipe table.
        curves: ``run_sweep``'s learning curves.

    Returns:
        The figure.
    """
    fig = Figure(figsize=(17, 4.8))
    ax_bar, ax_epochs, ax_photos = fig.subplots(1, 3)
    done = results[results["val_mAP50"].notna()] if "val_mAP50" in results else results.iloc[:0]
    x = np.arange(len(done))
    ax_bar.bar(x - 0.2, done.get("val_mAP50", []), 0.4, label="mAP@50")
    if "val_grade_accuracy" in done:
        acc = done.val_grade_accuracy.to_numpy(float)
        err = np.vstack([acc - done.val_grade_accuracy_low, done.val_grade_accuracy_high - acc])
        ax_bar.bar(x + 0.2, acc, 0.4, yerr=err, capsize=3, label="grading accuracy (95 % CI)")
    ax_bar.set_xticks(x, done.recipe, rotation=25, ha="right")
    ax_bar.set(ylim=(0, 1), title="validation split, per recipe")
    ax_bar.legend(fontsize=8)
    for name, curve in curves.groupby("recipe") if len(curves) else ():
        line = curve.dropna(subset=["ultralytics_val_mAP50"]) if "ultralytics_val_mAP50" in curve else curve.iloc[:0]
        (drawn,) = ax_epochs.plot(line.epoch, line.ultralytics_val_mAP50, "-", lw=1.2, label=f"{name} mAP@50")
        if "val_grade_accuracy" in curve:
            marks = curve.dropna(subset=["val_grade_accuracy"])
            ax_epochs.plot(
                marks.epoch, marks.val_grade_accuracy, "--o", ms=4, color=drawn.get_color(), label=f"{name} grading"
            )
    ax_epochs.set(xlabel="epoch", ylim=(0, 1), title="validation, against epochs")
    ax_epochs.legend(fontsize=7)
    shares = done.groupby("overrides").filter(lambda g: g.train_fraction.nunique() > 1) if len(done) else done
    for overrides, group in shares.groupby("overrides") if len(shares) else ():
        overrides = recipe_label(overrides)
        group = group.sort_values("train_photos")
        ax_photos.plot(group.train_photos, group.val_mAP50, "-o", label=f"mAP@50 ({overrides})")
        if "val_grade_accuracy" in group:
            ax_photos.plot(group.train_photos, group.val_grade_accuracy, "--s", label=f"grading ({overrides})")
    ax_photos.set(xscale="log", xlabel="training photos", ylim=(0, 1), title="validation, against training photos")
    if len(shares):
        ax_photos.legend(fontsize=7)
    fig.tight_layout()
    return fig
