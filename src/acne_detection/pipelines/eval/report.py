"""The run's headline, ``results_summary.md``: metrics per class, the operating point,
grading, skin tone, the gate, and how this AP relates to Ultralytics'."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from acne_detection.core.grading import GradingRule, interval_words
from acne_detection.core.params import GradingParams

logger = logging.getLogger(__name__)

AP_NOTE = (
    "AP here is COCO's (faster-coco-eval, equal to pycocotools to 1e-9 in the tests: 101-point interpolated, at most "
    "100 detections per image and class, on the test split). Ultralytics' validator, printed during training, "
    "integrates a continuous PR curve on the validation split, so its mAP differs by a few points."
)


def chosen_how(operating_point: dict[str, Any]) -> str:
    """How the operating point was chosen, in words: ``max_f1 on validation``; the rule alone for a
    point recorded before the choice moved to validation."""
    on = operating_point.get("chosen_on")
    return (
        f"{operating_point['rule']} on validation"
        if on == "validation"
        else str(operating_point["rule"]) + (" (no validation lesion: the lowest threshold)" if on == "none" else "")
    )


def _acne04_style(manifest: pd.DataFrame | None) -> bool:
    """Whether the photos are ACNE04's (their grade in the ``levleN`` file names), where its anchor means something."""
    return manifest is not None and "image_id" in manifest and manifest.image_id.astype(str).str.contains("levle").any()


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %"


def _plain_lines(per_class: pd.DataFrame, grading: dict[str, float], manifest: pd.DataFrame | None, legend: str) -> str:
    """The summary's opening, for a clinician: what was measured, on what photos, how good against the ceiling."""
    from acne_detection.core.model_card import trained_on

    kind = trained_on(manifest) if manifest is not None else "unknown"
    photos = f"{kind} test photos" if kind != "unknown" else "test photos"
    overall = per_class[per_class["class"] == "all"] if "class" in per_class else per_class.iloc[0:0]
    found = (
        f" It found {_pct(overall.recall.iloc[0])} of the lesions, and {_pct(overall.precision.iloc[0])} of what it "
        "marked were lesions."
        if len(overall) and pd.notna(overall.recall.iloc[0])
        else ""
    )
    if "grade_accuracy" not in grading:
        return f"This model was tested on {photos} with no true grade, so its grading is not measured.{found}\n\n"
    text = (
        f"On {grading['photos_graded']:.0f} {photos} it never trained on, this model gave "
        f"{_pct(grading['grade_accuracy'])} of them their true severity grade ({interval_words(grading)}: "
        f"{_pct(grading['grade_accuracy_low'])}-{_pct(grading['grade_accuracy_high'])}) and "
        f"{_pct(grading.get('grade_within_one', float('nan')))} a grade at most one off. Counting every lesion "
        f"perfectly would have graded {_pct(grading['grade_ceiling'])} of them right against these grades.{found}"
    )
    if kind == "synthetic":
        text += " These are synthetic photos: the figures say the pipeline works, not how it does on real skin."
    if grading["grade_ceiling"] < 0.5:
        text += (
            f"\n\n**The grading rule and the data's grades disagree**: graded by the rule ({legend}), the true "
            f"lesion counts give the true grade on only {_pct(grading['grade_ceiling'])} of the test photos. "
            "Check `grading.thresholds` and `names` against how the data was graded."
        )
    return text + "\n\n"


def _grading_lines(grading: dict[str, float], *, anchor: bool = True) -> str:
    """The grading section of the summary: accuracy with its interval and the ceiling beside it."""
    counting = (
        (
            f"Counting error per test photo (lesions at the operating point vs true): MAE {grading['count_mae']:.2f}, "
            f"RMSE {grading['count_rmse']:.2f}"
            + (
                f"; of the grade model's estimated count (what its grade grades): MAE "
                f"{grading['count_mae_estimated']:.2f}, RMSE {grading['count_rmse_estimated']:.2f}"
                if "count_mae_estimated" in grading
                else ""
            )
            + ".\n\n"
        )
        if "count_mae" in grading
        else ""
    )
    if "grade_accuracy" not in grading:
        return (
            "## Severity grading\n\nNo test photo has a true grade, so grading accuracy is not measured.\n" + counting
        )
    recalls = ", ".join(
        f"{k.removeprefix('grade_recall.')} {v:.2f}" for k, v in grading.items() if k.startswith("grade_recall.")
    )
    return (
        "## Severity grading\n\n"
        f"Grade accuracy on {grading['photos_graded']:.0f} test photos: **{grading['grade_accuracy']:.3f}** "
        f"({interval_words(grading)}: {grading['grade_accuracy_low']:.3f}-{grading['grade_accuracy_high']:.3f}); "
        f"ceiling {grading['grade_ceiling']:.3f} (the true lesion counts graded by the same rule: what a perfect "
        "counter would reach against these grades)."
        + (" Published anchor on ACNE04: 84.1 %." if anchor else "")
        + "\n\n"
        + (
            f"The count rule alone on the detector's count: {grading['grade_accuracy_rule']:.3f}. "
            if "grade_accuracy_rule" in grading
            else ""
        )
        + (f"Graded within one grade: {grading['grade_within_one']:.3f}." if "grade_within_one" in grading else "")
        + "\n\n"
        f"Recall per true grade: {recalls}.\n\n" + counting
    )


def report_headline(
    per_class: pd.DataFrame,
    operating_point: dict[str, Any],
    gate: dict[str, str],
    grading: dict[str, float],
    tones: pd.DataFrame,
    tone_check: dict[str, str],
    confusion: pd.DataFrame | None = None,
    manifest: pd.DataFrame | None = None,
    grading_params: GradingParams = GradingParams(),  # frozen: one default, shared safely
) -> str:
    """The run's headline as Markdown, also logged so the terminal shows it.

    Args:
        per_class: ``evaluate_detections``'s per-class table.
        operating_point: the chosen threshold.
        gate: ``check_quality_gate``'s verdicts.
        grading: ``evaluate_grading``'s metrics.
        tones: ``evaluate_by_skin_tone``'s table.
        tone_check: its verdict tags.
        confusion: ``evaluate_grading``'s grade confusion matrix (a ``true`` column, then one per
            predicted grade), shown under the grading.
        manifest: the split manifest (synthetic or real photos; ACNE04's file names).
        grading_params: the ``grading`` parameters (the rule's legend, when the ceiling says the
            rule and the data's grades disagree).

    Returns:
        Markdown: the metrics per class and overall, the operating point, grading, the metrics
        per skin tone band, the gate, and a note
        on how this AP relates to the one Ultralytics printed during training.
    """
    columns = ["class", "instances", "ap50", "ap50_95", "precision", "recall", "f1"]
    table = per_class[columns].rename(columns={"ap50": "mAP@50", "ap50_95": "mAP@50-95"})
    cells = table.map(lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in cells.to_numpy()]
    gate_lines = [f"- {k.removeprefix('gate.')}: {v}" for k, v in gate.items() if k != "gate"]
    legend = GradingRule.from_params(grading_params).legend()
    if grading.get("grade_ceiling", 1.0) < 0.5:
        logger.warning(
            "The grading rule (%s) and the data's grades disagree: the true lesion counts give the true grade on "
            "%.0f%% of the test photos. Check grading.thresholds and names.",
            legend,
            100 * grading["grade_ceiling"],
        )
    text = (
        "## In short\n\n"
        + _plain_lines(per_class, grading, manifest, legend)
        + "## Test-split results\n\n"
        + "\n".join(lines)
        + "\n\n"
        f"Precision, recall and F1 at the operating point: confidence >= {operating_point['threshold']:.2f} "
        f"({chosen_how(operating_point)}).\n\n"
        + _grading_lines(grading, anchor=manifest is None or _acne04_style(manifest))
        + _confusion_lines(confusion)
        + skin_tone_lines(tones, tone_check)
        + f"Quality gate: **{gate['gate'].upper()}**\n"
        + "\n".join(gate_lines)
        + "\n\n"
        + AP_NOTE
        + "\n"
    )
    logger.info("\n%s", text)
    return text


def _confusion_lines(confusion: pd.DataFrame | None) -> str:
    """The grade confusion matrix as a table: where the grades go wrong, most often one grade off."""
    if confusion is None or confusion.empty or not confusion.drop(columns="true").to_numpy().sum():
        return ""
    names = [c for c in confusion.columns if c != "true"]
    lines = ["| true \\ graded | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [
        f"| {row['true']} | " + " | ".join(str(int(row[n])) for n in names) + " |" for _, row in confusion.iterrows()
    ]
    return "Test photos by true grade (rows) and grade given (columns):\n\n" + "\n".join(lines) + "\n\n"


def skin_tone_lines(table: pd.DataFrame, check: dict[str, str]) -> str:
    """The skin tone section of ``results_summary.md``."""
    if table.empty:
        return f"## Skin tone\n\nSkin tone {check['skin_tone.check']}.\n\n"

    def cell(row: Any, metric: str) -> str:
        value = row[metric]
        if pd.isna(value):
            return "–"
        low, high = row[f"{metric}_low"], row[f"{metric}_high"]
        return f"{value:.3f} ({low:.2f}-{high:.2f})" if pd.notna(low) else f"{value:.3f}"

    lines = [
        "| skin tone (ITA band) | photos | lesions | AP@50 | recall | precision | grade accuracy | judged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        judged = (
            "**flagged**" if r.flagged else ("yes" if r.judged else ("–" if r.tone_band == "all" else "too few photos"))
        )
        lines.append(
            f"| {r.tone_band} | {r.photos} | {r.lesions} | {cell(r, 'ap50')} | {cell(r, 'recall')} | "
            f"{cell(r, 'precision')} | {cell(r, 'grade_accuracy')} | {judged} |"
        )
    return (
        "## Skin tone\n\n" + "\n".join(lines) + "\n\n"
        "95 % bootstrap intervals over photos (copies of one source photo drawn together) in brackets; "
        "recall and precision at the operating point. "
        f"Check: {check['skin_tone.check']}.\n\n"
    )
