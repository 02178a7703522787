"""A model card for each trained detector (Mitchell et al., "Model Cards for Model Reporting",
FAT* 2019): what it is, what it is for and not for, what data it saw, how well it does and
where it fails, in one Markdown page. ``eval`` writes it (``data/06_models/model_card.md``,
logged beside the model) and ``register`` makes it the registered version's description, the
page the MLflow UI shows for that version; a later ``eval`` of the same weights refreshes it.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from acne_detection.core.grading import interval_words

SYNTHETIC_WARNING = (
    "Trained on synthetic photos: a demonstration model, not for use on real skin. "
    'Train on a real, labelled export first (README, "Use your own dataset").'
)
SYNTHETIC_MARKER = "synthetic.json"  # written by acne_detection.core.synthetic into the export it generates


def export_root(manifest: pd.DataFrame) -> Path | None:
    """The folder the photos were read from (the deepest folder holding them all)."""
    files = manifest["file"].dropna().astype(str).tolist() if "file" in manifest else []
    if not files:
        return None
    common = os.path.commonpath(files)
    return Path(common).parent if len(files) == 1 else Path(common)


def trained_on(manifest: pd.DataFrame) -> str:
    """``synthetic`` when the export is the project's generated demo set (its marker file sits
    in the export folder or one of its two parents), else ``real``."""
    root = export_root(manifest)
    if root is None:
        return "real"
    return "synthetic" if any((p / SYNTHETIC_MARKER).is_file() for p in [root, *root.parents][:3]) else "real"


def code_commit(where: Path | None = None) -> str:
    """The git commit the code ran at (``-dirty`` with uncommitted changes), or ``unknown``."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=where or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


_NETWORKS = {"yolov8n": "YOLOv8n", "yolov8n-p2": "YOLOv8n with a stride-4 (P2) head", "yolov8s": "YOLOv8s"}
_CHECKPOINTS = {
    "yolov8n.pt": "COCO-pretrained `yolov8n.pt`",
    "yolov8s-worldv2.pt": "YOLO-World v2's `yolov8s-worldv2.pt`",
}


def _network(training: dict[str, Any]) -> str:
    """The detector's network as the card names it (summaries before the setting: yolov8n)."""
    architecture = str(training.get("architecture", "yolov8n"))
    return _NETWORKS.get(architecture, architecture)


def _starting_point(training: dict[str, Any]) -> str:
    """Where training started, as the card says it."""
    if str(training.get("pretrained", "True")) == "False":
        return "trained from scratch"
    name = str(training.get("pretrained_checkpoint") or "yolov8n.pt")
    return f"fine-tuned from {_CHECKPOINTS.get(name, f'`{name}`')}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any], key: str) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    value = _fmt(row.get(key))
    return value if low is None or high is None else f"{value} ({_fmt(low)}-{_fmt(high)})"


def _split_table(manifest: pd.DataFrame, truth: pd.DataFrame, grade_names: list[str]) -> list[str]:
    lines = ["| split | photos | source photos | lesions |" + "".join(f" {n} |" for n in grade_names)]
    lines.append("|---" * (4 + len(grade_names)) + "|")
    lesions = truth.groupby("split").size() if "split" in truth else pd.Series(dtype=int)
    for split in ("train", "val", "test"):
        part = manifest[manifest["split"] == split]
        grades = part["grade"].value_counts() if "grade" in part else pd.Series(dtype=int)
        lines.append(
            f"| {split} | {len(part)} | {part['group'].nunique() if 'group' in part else 'n/a'} | "
            f"{int(lesions.get(split, 0))} |" + "".join(f" {int(grades.get(g, 0))} |" for g in range(len(grade_names)))
        )
    return lines


def _audit_summary(audit: dict[str, Any]) -> str:
    share, photos = audit.get("single_class_share"), audit.get("photos_with_2plus_boxes")
    if share is None or not photos:
        return "too few photos with 2+ boxes to judge"
    return f"{share:.0%} of the {photos} photos with 2+ boxes hold a single class name"


def _correction_sentence(correction: dict[str, Any]) -> str:
    """How this model's count becomes a grade: the rule as it is, or corrected (and why)."""
    if correction.get("used"):
        thresholds = ", ".join(f"{t:.1f}" for t in correction["thresholds"])
        return (
            f"This model misjudges counts by a steady factor, so its count is graded by thresholds {thresholds} "
            f"(the rule's divided by {correction['scale']:.2f}, the true count per counted lesion, fitted on "
            f"{correction.get('photos', '?')} validation photos, where it {correction['reason']})."
        )
    return f"The rule grades this model's count as it is (count correction: {correction.get('reason', 'none')})."


def _grade_model_sentence(grade_model: dict[str, Any] | None) -> str:
    """What gives a photo its grade and grade probabilities (one answer: the grade shown is the
    most probable), and how it was chosen."""
    if not grade_model:
        return "The grade shown is the most probable under the count's probabilities."
    if grade_model.get("kind") == "expected":
        return (
            "The grade shown is the rule's grade of an estimated count: the expected count (the sum of the "
            f"detector's calibrated probabilities) x {float(grade_model.get('scale') or 0):.2f}, the scale fitted on "
            f"the {grade_model.get('fitted_on', '?')}; the count correction above is not applied to it. It was "
            f"chosen on validation photos: {grade_model.get('reason', '')}. Its probabilities say how often, and "
            "how far, that grade missed on validation."
        )
    if grade_model.get("kind") == "logistic":
        return (
            "The grade shown is the most probable under a logistic grade model on the detector's evidence (counts at "
            f"{len(grade_model.get('ladder', []))} confidences, the expected count, box sizes), fitted on the "
            f"{grade_model.get('fitted_on', '?')} and chosen on validation photos: {grade_model.get('reason', '')}."
        )
    return (
        "The grade shown is the most probable under the count's probabilities, graded by the rule "
        f"({grade_model.get('reason') or 'no learned grade model was tried'})."
    )


def _calibration_lines(calibration: dict[str, Any], grades: dict[str, Any]) -> list[str]:
    """What the confidences and grade probabilities mean for this model, measured."""
    if calibration.get("method") == "platt":
        how = (
            f"- Confidences are recalibrated (Platt scaling, p = sigmoid({_fmt(calibration.get('a'))} x logit(c) "
            f"{float(calibration.get('b', 0)):+.3f}), fitted on {calibration.get('detections', '?')} validation "
            f"detections at raw confidence >= {calibration.get('min_conf', '?')}); every confidence this model "
            "reports, and its operating point, is on that scale."
        )
    else:
        how = (
            "- Confidences are the detector's raw scores, not recalibrated "
            f'({calibration.get("reason") or "no calibration recorded"}): read 0.6 as "more likely than 0.4", '
            "not as a 60 % chance."
        )
    lines = [
        how,
        f"- Detection calibration error on the test split (D-ECE, 10 bins): {_fmt(calibration.get('dece_before'))} "
        f"raw, {_fmt(calibration.get('dece_after'))} as reported, on {_fmt(calibration.get('detections'), 0)} "
        "detections; per skin tone band: "
        + (
            ", ".join(
                f"{k.split('.', 1)[1]} {_fmt(v)}" for k, v in sorted(calibration.items()) if k.startswith("dece_after.")
            )
            or "not measured"
        )
        + ".",
    ]
    if "brier" in grades:
        lines.append(
            f"- Grade probabilities (under the grade model this card names): Brier score "
            f"{_fmt(grades.get('brier'))}, most probable grade right on {_fmt(grades.get('accuracy'))} of "
            f"{_fmt(grades.get('photos_graded'), 0)} test photos, agreeing with the count rule's grade on "
            f"{_fmt(grades.get('agreement'))}."
        )
    return lines


def render_model_card(facts: dict[str, Any]) -> str:
    """The card as Markdown.

    Args:
        facts: ``model`` (name, sha256, commit, source), ``trained_on``, ``export`` (name,
            photos read/accepted/quarantined, boxes), ``training`` (training summary and
            settings), ``health``, ``label_audit``, ``manifest``, ``truth``, ``grade_names``,
            ``detection`` (test metrics), ``grading``, ``tones`` (per-band table) and
            ``threshold`` (operating point and rule, NMS IoU and how it was chosen).

    Returns:
        The Markdown page.
    """
    model, export, training = facts["model"], facts["export"], facts["training"]
    detection, grading, audit = facts["detection"], facts["grading"], facts["label_audit"]
    first = (
        f"**{SYNTHETIC_WARNING}**"
        if facts["trained_on"] == "synthetic"
        else f"**Acne lesion detector trained on {export['images_accepted']} real photos of the "
        f"`{export['name']}` export; decision support for counting and grading, not a diagnosis.**"
    )
    gate = detection.get("gate", "n/a")
    tones = facts["tones"]
    lines = [
        first,
        "",
        f"# Model card: {model['name']}",
        "",
        "## Model details",
        f"- {_network(training)} (Ultralytics {training.get('ultralytics_version', '?')}), "
        f"{_starting_point(training)} ({training.get('weights_source', '?')}); "
        f"{training.get('parameters_total', '?')} parameters, "
        f"{training.get('frozen_layers', '?')} layers frozen.",
        f"- Weights SHA-256 `{model['sha256']}`; code at commit `{model['commit']}`; "
        f"trained in MLflow run `{training.get('mlflow_run_id', '?')}` on {training.get('device_name', '?')}.",
        f"- Training: {training.get('epochs_run', '?')} epoch(s) at {training.get('imgsz', '?')} px "
        f"(best epoch {training.get('best_epoch', '?')}); settings {facts['train_settings']}. "
        f"Training health: **{facts['health'].get('verdict', '?')}** ({facts['health'].get('hint', '')}).",
        f"- Operating point: confidence >= {_fmt(facts['threshold'].get('threshold'), 2)} "
        f"({facts['threshold'].get('rule', 'n/a')}); the served model answers at it by default.",
        f"- Overlapping boxes: of two boxes of one class overlapping by IoU above "
        f"{_fmt(facts['threshold'].get('nms_iou'), 2)}, the lower is dropped "
        f"({facts['threshold'].get('nms_rule', 'n/a')}).",
        "",
        "## Intended use",
        "- Decision support for dermatology teams and researchers: find, count and grade acne lesions on "
        "facial photos, for review by a clinician. Grades follow the count rule "
        f"{facts['grading_rule']}. {_correction_sentence(facts['correction'])} "
        f"{_grade_model_sentence(facts.get('grade_model'))}",
        "- Out of scope: diagnosis or treatment decisions without a clinician; other skin conditions; "
        "photos unlike the training data (other body sites, lighting, devices, skin tones it saw few of); "
        + ("any real photo (this model saw only synthetic ones)." if facts["trained_on"] == "synthetic" else "")
        + ("" if facts["trained_on"] == "synthetic" else "use without checking the per-tone figures below."),
        "",
        "## Training data",
        f"- Export `{export['name']}` ({export['format']}, {facts['trained_on']} photos): {export['images_read']} "
        f"photos read = {export['images_accepted']} accepted + {export['images_quarantined']} quarantined; "
        f"{export['boxes_read']} boxes read = {export['boxes_accepted']} accepted + {export['boxes_quarantined']} "
        f"quarantined; {export['files_quarantined']} other files quarantined.",
        f"- Dataset manifest SHA-256 `{facts['manifest_sha256']}`.",
        f"- Label audit: **{audit.get('status', 'n/a')}** ({_audit_summary(audit)}; the reasoning, which quotes "
        "file-name tokens, is in the run's `data/label_audit.json`, not on this page).",
        "",
        *_split_table(facts["manifest"], facts["truth"], facts["grade_names"]),
        "",
        "Photos per skin tone band (ITA) and split: see `skin_tone_report.csv` among the run's data artifacts.",
        "",
        "## Evaluation data",
        f"- The test split: {int((facts['manifest']['split'] == 'test').sum())} photos, "
        f"{int(facts['truth'].get('split', pd.Series(dtype=str)).eq('test').sum())} lesions, never seen in "
        "training, in choosing the operating point or in choosing the grade model; copies of one source photo "
        "are never in two splits.",
        "",
        "## Metrics (test split)",
        "| metric | value |",
        "|---|---|",
        f"| mAP@50 | {_fmt(detection.get('mAP50'))} |",
        f"| mAP@50-95 | {_fmt(detection.get('mAP50-95'))} |",
        f"| recall at the operating point | {_fmt(detection.get('recall'))} |",
        f"| precision at the operating point | {_fmt(detection.get('precision'))} |",
        f"| counting error (MAE, lesions per photo) | {_fmt(grading.get('count_mae'), 1)} |",
        *(
            [
                "| counting error of the grade model's estimated count (MAE) | "
                f"{_fmt(grading['count_mae_estimated'], 1)} |"
            ]
            if "count_mae_estimated" in grading
            else []
        ),
        f"| grading accuracy ({interval_words(grading)}) | {_interval(grading, 'grade_accuracy')} |",
        f"| grading ceiling (true counts through the rule) | {_fmt(grading.get('grade_ceiling'))} |",
        f"| grading accuracy of the rule on the detector's count alone | {_fmt(grading.get('grade_accuracy_rule'))} |",
        f"| graded within one grade | {_fmt(grading.get('grade_within_one'))} |",
        f"| quality gate | {gate} |",
        "",
        "Targets people quote for medical use: mAP@50 > 0.80, recall > 0.85, precision > 0.75; the published "
        "ACNE04 grading accuracy is 0.841.",
        "",
        "### Per skin tone band (95 % bootstrap intervals; small bands are wide)",
        "| band | photos | lesions | AP@50 | recall | grading accuracy |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['tone_band']} | {r['photos']} | {r['lesions']} | {_interval(r, 'ap50')} | {_interval(r, 'recall')} "
            f"| {_interval(r, 'grade_accuracy')} |"
            for r in tones
        ],
        "",
        "## Calibration",
        *_calibration_lines(facts["calibration"], facts["grade_probability"]),
        "",
        "## Caveats",
        *[f"- {c}" for c in facts["caveats"]],
    ]
    return "\n".join(lines) + "\n"
