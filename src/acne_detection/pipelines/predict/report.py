"""What ``predict`` shows a clinician: each photo with its lesions boxed, and one HTML page of
every photo's count, grade and grade probabilities (the grading rule's own legend and colours,
however many grades it has)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from acne_detection.core.grading import GradingRule
from acne_detection.core.inference import load_photo
from acne_detection.core.params import GradingParams, PredictParams
from acne_detection.datasets.photo_folder import Photos
from acne_detection.model.predictor import ModelChoice

_COLOURS = ["#ff3030", "#30a0ff", "#ffd000", "#c040ff", "#00d080", "#ff8000"]


def _estimate(record: dict) -> str:
    """Where the grade model grades an estimated count: that count, beside the lesions boxed."""
    n = record.get("estimated_lesions")
    return "" if n is None or pd.isna(n) else f" (about {int(n)} estimated in all: the count the grade is of)"


def _lesions(n: int) -> str:
    """``"1 lesion"``, ``"3 lesions"``."""
    return f"{n} lesion{'' if n == 1 else 's'}"


def draw_annotated_photos(
    photos: Photos, lesions: pd.DataFrame, summary: pd.DataFrame, params: PredictParams
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
    colour = {c: _COLOURS[i % len(_COLOURS)] for i, c in enumerate(sorted(lesions["class"].unique()))}
    out = {}
    for row in summary.itertuples():
        pixels, _ = load_photo(photos.root / row.photo, max_side=params.annotated_max_side)
        img = Image.fromarray(pixels)
        img.thumbnail((params.annotated_max_side, params.annotated_max_side))
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
            f"{_lesions(row.lesions)} - grade {row.grade} ({row.grade_name})",
            fill="white",
            font=ImageFont.load_default(size=size),
        )
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=88)
        out[_output_name(row.photo)] = buffer.getvalue()
    return out


def _output_name(photo: str) -> str:
    return photo.replace("/", "__").rsplit(".", 1)[0] + ".jpg"


# ``summarise_photos``' columns that are not a per-class lesion count (nor ``p.<grade>``, a probability)
_NOT_COUNTS = frozenset(
    {
        "photo",
        "lesions",
        "estimated_lesions",
        "grade",
        "grade_name",
        "grade_probabilities",
        "width",
        "height",
        "sliced",
        "model",
        "threshold",
    }
)


def render_report(
    summary: pd.DataFrame,
    skipped: pd.DataFrame,
    annotated: list[Path],
    model_info: dict[str, Any],
    params: PredictParams,
    grading: GradingParams,
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
        grading: the ``grading`` parameters (the legend; a colour per grade).

    Returns:
        The page.
    """
    rule = GradingRule.from_params(grading)
    grade_css = "".join(f".g{k}{{border-left-color:{c}}}" for k, c in enumerate(rule.colours()))
    files = {path.name: path for path in annotated}
    counts = [c for c in summary.columns if c not in _NOT_COUNTS and not c.startswith("p.")]
    cards = [
        _photo_card(record, files[_output_name(record["photo"])], counts=counts, thumb_side=params.report_thumb_side)
        for record in summary.sort_values(["grade", "lesions"], ascending=False).to_dict("records")
    ]
    skipped_rows = "".join(
        f"<tr><td>{html.escape(r.photo)}</td><td>{html.escape(r.reason)}</td><td>{html.escape(str(r.detail))}</td></tr>"
        for r in skipped.itertuples()
    )
    warnings = ModelChoice.model_validate(model_info).record.warnings()
    warning = "".join(f"<p><b>{html.escape(w)}</b></p>" for w in warnings if w)
    thumb = params.report_thumb_side
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>acne-detection: predictions</title>
<style>body{{font-family:sans-serif;margin:1.5em;background:#fafafa}}.cards{{display:flex;flex-wrap:wrap;gap:1em}}
.card{{background:white;border:1px solid #ddd;border-left:6px solid #999;padding:.6em;width:{thumb}px}}
.card img{{max-width:100%}}.card h3{{font-size:.9em;margin:.3em 0;word-break:break-all}}.grade{{font-weight:bold}}
{grade_css}
.small{{color:#666;font-size:.8em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body>
<h1>Predictions: {len(summary)} photo{"" if len(summary) == 1 else "s"}, {_lesions(int(summary.lesions.sum()))}</h1>
{warning}
<p>Model: {html.escape(str(model_info["model_version"]))} ({html.escape(str(model_info["source"]))}); confidence
&ge; {model_info["threshold"]:.2f} ({html.escape(model_info["threshold_source"])}). Grades by lesion count:
{html.escape(rule.legend())}. A screening aid, not a diagnosis.</p>
<div class="cards">{"".join(cards)}</div>
<h2>Skipped files ({len(skipped)})</h2>
<table><tr><th>file</th><th>reason</th><th>detail</th></tr>{skipped_rows}</table>
</body></html>
"""


def _photo_card(record: dict[str, Any], annotated: Path, *, counts: list[str], thumb_side: int) -> str:
    """One photo's card: its annotated copy's thumbnail (embedded, linking to the full copy), its
    grade, lesion counts (per class: the ``counts`` columns) and grade probabilities, and its size."""
    row = pd.Series(record)
    thumb = Image.open(annotated)
    thumb.thumbnail((thumb_side, thumb_side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80)
    per_class = ", ".join(f"{c} {record[c]}" for c in counts)
    return (
        f'<div class="card g{row.grade}"><a href="annotated/{html.escape(annotated.name)}">'
        f'<img src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}" '
        f'alt="{html.escape(row.photo)}"></a>'
        f"<h3>{html.escape(row.photo)}</h3><p class=grade>Grade {row.grade}: {html.escape(str(row.grade_name))}</p>"
        f"<p>{_lesions(row.lesions)}{': ' + html.escape(per_class) if per_class else ''}{_estimate(record)}</p>"
        f"<p class=probs>Grade probabilities: {html.escape(str(record.get('grade_probabilities', '')))}</p>"
        f"<p class=small>{row.width} x {row.height} px{', sliced' if row.sliced else ''}</p></div>"
    )
