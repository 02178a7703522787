"""Each photo's true severity grade, from the export: a ``grades.csv`` beside it, or its file name."""

from __future__ import annotations

import logging

import pandas as pd

from acne_detection.core.grading import grades_from_names, parse_grades_file
from acne_detection.core.ingestion import PROBLEM_COLUMNS
from acne_detection.core.params import DataParams, GradingParams
from acne_detection.datasets.export import RawExport

logger = logging.getLogger(__name__)


def attach_grades(
    images: pd.DataFrame, raw: RawExport, params: DataParams, grading: GradingParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give every accepted image its true grade, where the export states one.

    The grades file wins over the file name where both give a grade. A grade is never guessed:
    an image without one keeps ``<NA>`` (it is left out of grading accuracy, still counted).

    Args:
        images: accepted images (``image_id``).
        raw: the export (its ``grades`` table, read from ``grades.csv`` when present).
        params: the ``data`` parameters (``grades.pattern``).
        grading: the ``grading`` parameters (the number of grades).

    Returns:
        ``images`` with a ``grade`` column, and the grade report: one row per unusable line of
        the grades file and, when some images have a grade, per image without one.
    """
    n_grades = len(grading.names)
    from_names = grades_from_names(images["image_id"], params.grades.pattern)
    bad_name = from_names.notna() & (from_names >= n_grades)
    from_file, problems = parse_grades_file(raw.grades, images["image_id"], n_grades=n_grades, file="grades.csv")
    grade = from_file.fillna(from_names.mask(bad_name))
    out = images.assign(grade=grade)
    rows = [
        problems,
        pd.DataFrame(
            {
                "file": images.loc[bad_name, "image_id"],
                "image_id": images.loc[bad_name, "image_id"],
                "reason": "unparseable grade",
                "detail": "grade " + from_names[bad_name].astype(str) + f" in the file name is not 0..{n_grades - 1}",
            }
        ),
    ]
    if grade.notna().any():
        missing = grade.isna() & ~bad_name
        rows.append(
            pd.DataFrame(
                {
                    "file": images.loc[missing, "image_id"],
                    "image_id": images.loc[missing, "image_id"],
                    "reason": "no grade",
                    "detail": "neither grades.csv nor the file name gives a grade",
                }
            )
        )
    report = (
        pd.concat([r for r in rows if len(r)], ignore_index=True)
        if any(len(r) for r in rows)
        else pd.DataFrame(columns=PROBLEM_COLUMNS)
    )
    counts = out.grade.value_counts().sort_index()
    if grade.notna().any():
        logger.info(
            "Grades: %s; %d images without a grade (data/08_reporting/grade_report.csv)",
            {grading.names[int(k)]: int(v) for k, v in counts.items()},
            int(grade.isna().sum()),
        )
    else:
        logger.info("Grades: the export gives none (no grades.csv, no grade in file names): grading is not measured")
    if len(problems):
        logger.warning("grades.csv: %d unusable lines (data/08_reporting/grade_report.csv)", len(problems))
    return out, report[PROBLEM_COLUMNS]
