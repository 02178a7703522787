"""The clinician's HTML page: a card per photo, most severe first, in the rule's own words and colours."""

from __future__ import annotations

import base64
import re
from io import BytesIO
from pathlib import Path

import pandas as pd
from PIL import Image

from acne_detection.core.grading import GradingRule
from acne_detection.core.params import parse
from acne_detection.model.predictor import ModelChoice
from acne_detection.model.record import ModelRecord
from acne_detection.pipelines.predict.report import render_report

THREE_GRADES = {"thresholds": [3, 9], "names": ["low", "mid", "high"]}


def test_the_report_shows_each_photo_with_its_counts_grade_and_embedded_thumbnail(tmp_path: Path) -> None:
    summary = pd.DataFrame(
        {
            "photo": ["a.jpg", "sub/b.jpg"],
            "lesions": [1, 12],
            "papule": [1, 7],
            "pustule": [0, 5],
            "grade": [0, 2],
            "grade_name": ["low", "high"],
            "grade_probabilities": ["low 0.9, mid 0.1", "high 0.8, mid 0.2"],
            "p.low": [0.9, 0.0],
            "width": [800, 640],
            "height": [600, 480],
            "sliced": [False, True],
            "model": ["v1", "v1"],
            "threshold": [0.4, 0.4],
        }
    )
    annotated = []
    for name in ("a.jpg", "sub__b.jpg"):  # draw_annotated_photos' names for a.jpg and sub/b.jpg
        annotated.append(tmp_path / name)
        Image.new("RGB", (800, 600), (200, 150, 140)).save(annotated[-1])
    skipped = pd.DataFrame({"photo": ["c.gif"], "reason": ["unsupported image format"], "detail": ["GIF"]})
    rule = GradingRule.from_params(parse("grading", THREE_GRADES))
    model = ModelChoice(
        checkpoint="model.pt",
        source="registry",
        model_version="acne-detector v1",
        threshold=0.4,
        threshold_source="eval",
        record=ModelRecord.default("ab" * 32, rule, warning="Trained on synthetic photos."),
    ).model_dump(mode="json")
    page = render_report(
        summary,
        skipped,
        annotated,
        model,
        parse("predict", {"report_thumb_side": 100}),
        parse("grading", THREE_GRADES),
    )
    cards = re.findall(r'<div class="card g(\d)">(.*?)</div>', page)
    assert [grade for grade, _ in cards] == ["2", "0"]  # the most severe first
    severe, mild = (body for _, body in cards)
    assert 'href="annotated/sub__b.jpg"' in severe and "12 lesions: papule 7, pustule 5" in severe
    assert "640 x 480 px, sliced" in severe and "Grade 2: high" in severe
    assert "1 lesion: papule 1, pustule 0" in mild and "p.low" not in page and "threshold 0.4" not in mild
    thumb = re.search(r'src="data:image/jpeg;base64,([^"]+)"', severe).group(1)
    assert Image.open(BytesIO(base64.b64decode(thumb))).size == (100, 75)
    assert "0-3 low, 4-9 mid, more than 9 high" in page
    assert "<td>c.gif</td><td>unsupported image format</td>" in page
    assert "<b>Trained on synthetic photos.</b>" in page  # the record's warning, and the missing calibration's
    assert "<b>confidences and grade probabilities are not calibrated (no calibration recorded" in page
    assert "Predictions: 2 photos, 13 lesions" in page
