"""Nodes of the ``predict`` pipeline: new photos → lesions → counts and grade per photo →
annotated copies and an HTML report a clinician can scroll.

Prediction goes through ``acne_detection.inference.predict_boxes``, the same function
``eval`` and the served model use.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from acne_detection.accelerator import detect_device
from acne_detection.calibration import Calibration
from acne_detection.datasets.export import progress_bar
from acne_detection.datasets.photo_folder import Photos
from acne_detection.datasets.weights import sha256_of
from acne_detection.grading import (
    count_lesions,
    describe_grade_probabilities,
    photo_grade_probabilities,
    severity_grade,
)
from acne_detection.image_check import probe_image
from acne_detection.inference import (
    PREDICTION_COLUMNS,
    InferenceSettings,
    iter_predictions,
    load_detector,
    load_photo,
    needs_slicing,
)
from acne_detection.model_card import SYNTHETIC_WARNING
from acne_detection.params import parse
from acne_detection.tracking import model_version_tag, resolve_model

logger = logging.getLogger(__name__)
PHOTO_COLUMNS = ["photo", "status", "reason", "detail", "width", "height", "sliced"]
_COLOURS = ["#ff3030", "#30a0ff", "#ffd000", "#c040ff", "#00d080", "#ff8000"]


def choose_model(weights: Path, model_threshold: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The model to predict with, and the confidence threshold ``eval`` chose *for that model*.

    The threshold comes, in order, from ``predict.threshold`` when set; the operating point
    the last ``eval`` recorded, if it evaluated this very checkpoint (same SHA-256); the
    ``operating_threshold`` tag of the registered version (``models:/``) or of the versions
    registered from the run (``runs:/``, the trained model); else ``default_threshold``,
    with a warning. Never another model's threshold.

    Args:
        weights: the checkpoint ``train`` saved.
        model_threshold: ``eval``'s record (``model_sha256``, ``threshold``), ``{}`` if none.
        params: the ``predict`` parameters.

    Returns:
        ``checkpoint``, ``source``, ``model_sha256``, ``model_version`` (registry version or
        run, where known), ``threshold`` (a calibrated confidence when the model has a
        calibration), ``threshold_source``, ``calibration`` (eval's, for these weights, or the
        registered version's; the identity when neither), ``grading_thresholds`` (eval's count
        correction for these weights; ``None``: the rule's) and ``warning`` (the registered
        version was trained on synthetic photos; "" otherwise).
    """
    p = parse("predict", params)
    checkpoint, source = resolve_model(p.model, Path(weights))
    sha = sha256_of(checkpoint)
    version = model_version_tag(p.model, sha)
    if p.threshold is not None:
        threshold, origin = p.threshold, "predict.threshold"
    elif model_threshold.get("model_sha256") == sha:
        threshold, origin = (
            float(model_threshold["threshold"]),
            f"eval's operating point ({model_threshold.get('rule')})",
        )
    elif version.get("operating_threshold"):
        threshold, origin = float(version["operating_threshold"]), f"registered {version['model_version']}"
    else:
        threshold, origin = p.default_threshold, "predict.default_threshold"
        logger.warning(
            "No operating point recorded for %s (eval has not evaluated this model): using "
            "predict.default_threshold %.2f. Run `kedro run --pipeline eval` with the same model to get one.",
            source,
            threshold,
        )
    if model_threshold.get("model_sha256") == sha:  # calibration and grading eval fitted for these very weights
        calibration = Calibration.from_dict(model_threshold.get("calibration"))
        grading_thresholds = model_threshold.get("grading_thresholds")
    else:
        calibration = Calibration.from_dict(json.loads(version.get("calibration") or "{}"))
        grading_thresholds = json.loads(version.get("grading_thresholds") or "null")
    logger.info("Predicting with %s at confidence >= %.2f (%s)", source, threshold, origin)
    if calibration.warning:
        logger.warning("%s: %s", source, calibration.warning)
    warning = SYNTHETIC_WARNING if version.get("trained_on") == "synthetic" else ""
    if warning:
        logger.warning("%s: %s", version.get("model_version", source), warning)
    return {
        "checkpoint": str(checkpoint),
        "source": source,
        "model_sha256": sha,
        "model_version": version.get("model_version", source),
        "threshold": threshold,
        "threshold_source": origin,
        "calibration": calibration.to_dict(),
        "grading_thresholds": grading_thresholds,  # None: the grading rule's own
        "warning": warning,
    }


def predict_new_photos(
    photos: Photos, model_info: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file, predict every good photo (streamed, in batches, sliced when large).

    Args:
        photos: the folder's files (``PhotoFolder``).
        model_info: ``choose_model``'s result.
        params: the ``predict`` parameters.

    Returns:
        The lesions counted (``inference.PREDICTION_COLUMNS``, ``image`` the photo's path in the
        folder, boxes in its own pixels as displayed, calibrated ``confidence`` at or above the
        threshold), and one row per file that is or looks like a photo: ``status``
        ``predicted`` or ``skipped`` with ``reason`` and ``detail``, size, ``sliced`` and, for a
        predicted photo, ``candidates`` (its detections down to the calibration's floor: what
        its grade probabilities come from). Annotation files beside the photos are not listed (the log counts them).
    """
    p = parse("predict", params)
    model, imgsz = load_detector(Path(model_info["checkpoint"]), runtime=p.runtime, imgsz=p.imgsz)
    device, device_name = detect_device(p.device)
    calibration = Calibration.from_dict(model_info.get("calibration"))
    settings = InferenceSettings(
        imgsz=imgsz,
        conf=calibration.detector_floor(model_info["threshold"]),
        iou=p.nms_iou,
        max_det=p.max_det,
        device=device,
        slicing=p.slicing,
        slice_above=p.slice_above,
        overlap=p.overlap,
        batch=p.batch,
    )
    rows, good = [], []
    for f in photos.unsupported:
        rows.append(
            _photo_row(
                photos.root,
                f,
                "unsupported image format",
                f"{f.suffix} photos are not read; export them as JPEG or PNG",
            )
        )
    for f in photos.other:
        rows.append(_photo_row(photos.root, f, "not an image", "a file of no photo or annotation type"))
    for f in photos.photos:
        probe = probe_image(str(f))
        if probe["image_problem"]:
            rows.append(_photo_row(photos.root, f, probe["image_problem"], probe["image_detail"]))
        else:
            good.append((f, probe))
    logger.info(
        "Predicting %d photos on %s (%s, %s) at %d px, slicing %s; %d files skipped",
        len(good),
        device,
        device_name,
        p.runtime,
        settings.imgsz,
        settings.slicing,
        len(rows),
    )
    lesions, candidates = [], {}
    keyed = [(f.relative_to(photos.root).as_posix(), f) for f, _ in good]
    with progress_bar() as bar:
        task = bar.add_task(f"Predicting {len(good)} photos", total=len(good))
        for key, found in iter_predictions(model, keyed, settings):
            counted, candidate = calibration.split(
                pd.DataFrame(found, columns=PREDICTION_COLUMNS), model_info["threshold"]
            )
            lesions.append(counted)
            candidates[key] = candidate
            bar.advance(task)
    for f, probe in good:
        w, h = int(probe["width"]), int(probe["height"])
        rows.append(
            {
                **_photo_row(photos.root, f, "", ""),
                "status": "predicted",
                "width": w,
                "height": h,
                "sliced": needs_slicing(w, h, settings),
                "candidates": candidates[f.relative_to(photos.root).as_posix()],
            }
        )
    table = pd.DataFrame(rows, columns=[*PHOTO_COLUMNS, "candidates"]).sort_values("photo", ignore_index=True)
    found = pd.concat(lesions, ignore_index=True) if lesions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    return found[PREDICTION_COLUMNS], table


def _photo_row(root: Path, f: Path, reason: str, detail: str) -> dict[str, Any]:
    return {
        "photo": f.relative_to(root).as_posix(),
        "status": "skipped",
        "reason": reason,
        "detail": detail,
        "width": 0,
        "height": 0,
        "sliced": False,
    }


def summarise_photos(
    lesions: pd.DataFrame, photo_table: pd.DataFrame, model_info: dict[str, Any], grading: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Lesions per class, total, and severity grade per predicted photo; the skipped files.

    Args:
        lesions: ``predict_new_photos``'s lesions.
        photo_table: ``predict_new_photos``'s files.
        model_info: ``choose_model``'s result (model and threshold, recorded on every row).
        grading: the ``grading`` parameters (the count→grade rule, counted classes).

    Returns:
        The summary (one row per predicted photo: ``photo``, one count column per class,
        ``lesions`` (the counted classes' total), ``grade``, ``grade_name`` (the count rule's),
        ``p.<grade name>`` and ``grade_probabilities`` ("moderate 72 %, severe 26 %": from the
        calibrated confidences of the photo's detections), ``width``,
        ``height``, ``sliced``, ``model``, ``threshold``), the skipped files with their reason,
        and MLflow metrics (photos predicted and skipped, lesions, photos per grade).
    """
    g = parse("grading", grading)
    predicted = photo_table[photo_table.status == "predicted"].reset_index(drop=True)
    classes = sorted(lesions["class"].unique()) if len(lesions) else []
    per_class = pd.crosstab(lesions["image"], lesions["class"]) if len(lesions) else pd.DataFrame()
    summary = predicted[["photo"]].copy()
    for cls in classes:
        summary[cls] = summary.photo.map(per_class[cls]).fillna(0).astype(int)
    summary["lesions"] = count_lesions(lesions, summary.photo, g.count_classes)
    thresholds = model_info.get("grading_thresholds") or g.thresholds  # eval's count correction, if it has one
    summary["grade"] = severity_grade(summary.lesions, thresholds)
    summary["grade_name"] = summary.grade.map(dict(enumerate(g.names)))
    empty = pd.DataFrame(columns=PREDICTION_COLUMNS)
    candidates = [c if isinstance(c, pd.DataFrame) else empty for c in predicted.get("candidates", [])]
    probabilities = photo_grade_probabilities(
        pd.concat([empty, *candidates], ignore_index=True), summary.photo, thresholds, g.count_classes
    )
    for k, name in enumerate(g.names):
        summary[f"p.{name}"] = probabilities[:, k].round(4)
    summary["grade_probabilities"] = [describe_grade_probabilities(row, g.names) for row in probabilities]
    summary = summary.join(predicted[["width", "height", "sliced"]])
    summary["model"] = model_info["model_version"]
    summary["threshold"] = model_info["threshold"]
    skipped = photo_table[photo_table.status == "skipped"][["photo", "reason", "detail"]].reset_index(drop=True)
    metrics = {
        "photos_predicted": len(summary),
        "photos_skipped": len(skipped),
        "lesions": int(summary.lesions.sum()),
        "threshold": float(model_info["threshold"]),
        **{f"photos_graded.{name}": int((summary.grade == k).sum()) for k, name in enumerate(g.names)},
    }
    for row in skipped.itertuples():
        logger.warning("Skipped %s: %s (%s)", row.photo, row.reason, row.detail)
    logger.info(
        "Predicted %d photos (%d lesions), skipped %d; grades: %s",
        len(summary),
        metrics["lesions"],
        len(skipped),
        summary.grade_name.value_counts().to_dict(),
    )
    return summary, skipped, metrics


def draw_annotated_photos(
    photos: Photos, lesions: pd.DataFrame, summary: pd.DataFrame, params: dict[str, Any]
) -> dict[str, bytes]:
    """Each predicted photo with its lesions boxed (colour per class) and its count and grade,
    at most ``annotated_max_side`` px, as JPEG bytes.

    Args:
        photos: the folder (the photos are read again, one at a time).
        lesions: the lesions, in each photo's own pixels.
        summary: ``summarise_photos``'s table.
        params: the ``predict`` parameters.

    Returns:
        ``{file name in the output folder: JPEG bytes}``.
    """
    p = parse("predict", params)
    colour = {c: _COLOURS[i % len(_COLOURS)] for i, c in enumerate(sorted(lesions["class"].unique()))}
    out = {}
    for row in summary.itertuples():
        pixels, _ = load_photo(photos.root / row.photo, max_side=p.annotated_max_side)
        img = Image.fromarray(pixels)
        img.thumbnail((p.annotated_max_side, p.annotated_max_side))
        scale = img.width / row.width
        draw = ImageDraw.Draw(img)
        width = max(1, round(img.width / 500))
        mine = lesions.loc[lesions.image == row.photo, ["class", "x_min", "y_min", "x_max", "y_max"]]
        for cls, *box in mine.itertuples(index=False, name=None):
            draw.rectangle([v * scale for v in box], outline=colour[cls], width=width)
        size = max(12, img.width // 40)  # legible on the copy and on its thumbnail in the report
        draw.rectangle([0, 0, img.width, int(size * 1.6)], fill="black")
        draw.text(
            (size // 2, size // 4),
            f"{row.lesions} lesions - grade {row.grade} ({row.grade_name})",
            fill="white",
            font=ImageFont.load_default(size=size),
        )
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=88)
        out[_output_name(row.photo)] = buffer.getvalue()
    return out


def _output_name(photo: str) -> str:
    return photo.replace("/", "__").rsplit(".", 1)[0] + ".jpg"


def render_report(
    summary: pd.DataFrame,
    skipped: pd.DataFrame,
    annotated: list[Path],
    model_info: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """One HTML page that opens from disk: a card per photo (thumbnail, counts, grade), the
    skipped files, and the model and threshold used.

    Args:
        summary: ``summarise_photos``'s table.
        skipped: the skipped files.
        annotated: the annotated copies ``draw_annotated_photos`` wrote (thumbnails are
            embedded, so the page stands alone; each links to its full copy in ``annotated/``).
        model_info: ``choose_model``'s result.
        params: the ``predict`` parameters (``report_thumb_side``).

    Returns:
        The page.
    """
    p = parse("predict", params)
    files = {path.name: path for path in annotated}
    counts = [
        c
        for c in summary.columns
        if c
        not in {
            "photo",
            "lesions",
            "grade",
            "grade_name",
            "grade_probabilities",
            "width",
            "height",
            "sliced",
            "model",
            "threshold",
        }
        and not c.startswith("p.")
    ]
    cards = []
    for record in summary.sort_values(["grade", "lesions"], ascending=False).to_dict("records"):
        row = pd.Series(record)
        name = _output_name(row.photo)
        thumb = Image.open(files[name])
        thumb.thumbnail((p.report_thumb_side, p.report_thumb_side))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=80)
        per_class = ", ".join(f"{c} {record[c]}" for c in counts)
        cards.append(
            f'<div class="card g{row.grade}"><a href="annotated/{html.escape(name)}">'
            f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" '
            f'alt="{html.escape(row.photo)}"></a>'
            f"<h3>{html.escape(row.photo)}</h3><p class=grade>Grade {row.grade}: {html.escape(str(row.grade_name))}</p>"
            f"<p>{row.lesions} lesions{': ' + html.escape(per_class) if per_class else ''}</p>"
            f"<p class=probs>Grade probabilities: {html.escape(str(record.get('grade_probabilities', '')))}</p>"
            f"<p class=small>{row.width} x {row.height} px{', sliced' if row.sliced else ''}</p></div>"
        )
    skipped_rows = "".join(
        f"<tr><td>{html.escape(r.photo)}</td><td>{html.escape(r.reason)}</td><td>{html.escape(str(r.detail))}</td></tr>"
        for r in skipped.itertuples()
    )
    warnings = [model_info.get("warning", ""), Calibration.from_dict(model_info.get("calibration")).warning]
    warning = "".join(f"<p><b>{html.escape(w)}</b></p>" for w in warnings if w)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>acne-detection: predictions</title>
<style>body{{font-family:sans-serif;margin:1.5em;background:#fafafa}}.cards{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{background:white;border:1px solid #ddd;border-left:6px solid #999;padding:.6em;width:{p.report_thumb_side}px}}
.card img{{max-width:100%}}.card h3{{font-size:.9em;margin:.3em 0;word-break:break-all}}.grade{{font-weight:bold}}
.g0{{border-left-color:#3a3}}.g1{{border-left-color:#db3}}.g2{{border-left-color:#e73}}.g3{{border-left-color:#c22}}
.small{{color:#666;font-size:.8em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body>
<h1>Predictions: {len(summary)} photos, {int(summary.lesions.sum())} lesions</h1>
{warning}
<p>Model: {html.escape(str(model_info["model_version"]))} ({html.escape(str(model_info["source"]))}); confidence
&ge; {model_info["threshold"]:.2f} ({html.escape(model_info["threshold_source"])}). Grades by lesion count (ACNE04):
0-5 mild, 6-20 moderate, 21-50 severe, more than 50 very severe. A screening aid, not a diagnosis.</p>
<div class="cards">{"".join(cards)}</div>
<h2>Skipped files ({len(skipped)})</h2>
<table><tr><th>file</th><th>reason</th><th>detail</th></tr>{skipped_rows}</table>
</body></html>
"""
