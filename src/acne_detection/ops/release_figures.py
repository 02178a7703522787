"""Figures in the README come from files, never from typing.

A run's reports (``data/08_reporting/*.json``, ``data/06_models/grade_model.json``) are collected
into one committed file of measured release figures (``docs/figures.json``), each entry naming the
commit, the machine and the date it was measured on; ``render`` writes each table between its
markers in the README and the docs (``<!-- figures:NAME -->`` ... ``<!-- /figures:NAME -->``), and
the suite fails when a table there differs from its file (``tests/ops/test_release_figures.py``).

Usage::

    python -m acne_detection.ops.release_figures collect <project dir> NAME --data "what it ran on"
    python -m acne_detection.ops.release_figures render          # README.md and docs/ from docs/figures.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures.json"
README = ROOT / "README.md"


def documents() -> list[Path]:
    """The files whose tables are generated: the README and every docs page."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


MARKER = re.compile(r"(<!-- figures:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.DOTALL)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(
    project: Path, name: str, *, data: str, elapsed: str = "", peak: str = "", commit: str = ""
) -> dict[str, Any]:
    """One entry of measured figures from a finished run's reports.

    Args:
        project: the project folder the run wrote (its ``data/``).
        name: the entry's name (the README's marker).
        data: what the run ran on, in words.
        elapsed: wall-clock time of the run, as measured (``"21 min 40 s"``), if known.
        peak: its peak resident memory, as measured, if known.
        commit: the commit the run ran (default: the project's HEAD now).

    Returns:
        The entry: ``commit``, ``machine``, ``date``, ``data``, ``elapsed``, ``peak`` and the figures.
    """
    reporting, models = project / "data" / "08_reporting", project / "data" / "06_models"
    detection, grading = _json(reporting / "test_metrics.json"), _json(reporting / "grading_metrics.json")
    probabilities, model = _json(reporting / "grade_probability_metrics.json"), _json(models / "grade_model.json")
    commit = (
        commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True
        ).stdout.strip()
    )
    return {
        "commit": commit or "unknown",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": dt.date.today().isoformat(),
        "data": data,
        "elapsed": elapsed,
        "peak": peak,
        "detection": {k: detection.get(k) for k in ("mAP50", "mAP50-95", "recall", "precision", "threshold")},
        "grading": grading,
        "grade_probabilities": {k: probabilities.get(k) for k in ("brier", "top_dece", "photos_graded")},
        "grade_model": {k: model.get(k) for k in ("kind", "fitted_on", "reason", "validation", "recipe")},
    }


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def render_table(entry: dict[str, Any]) -> str:
    """The markdown table of one entry: detection, grading with its interval, the rule beside it, the ceiling."""
    d, g, p, m = entry["detection"], entry["grading"], entry["grade_probabilities"], entry["grade_model"]
    validation = m.get("validation") or {}
    shown = "the count rule" if m.get("kind") == "rule" else f"logistic, fitted on the {m.get('fitted_on')}"
    rows = [
        ("test photos graded", f"{int(g.get('photos_graded', 0))}"),
        ("mAP@50 / mAP@50-95", f"{_f(d.get('mAP50'))} / {_f(d.get('mAP50-95'))}"),
        ("recall / precision at the operating point", f"{_f(d.get('recall'))} / {_f(d.get('precision'))}"),
        (
            "grading accuracy (95 % Wilson interval)",
            f"**{_f(g.get('grade_accuracy'))}** ({_f(g.get('grade_accuracy_low'), 2)}-"
            f"{_f(g.get('grade_accuracy_high'), 2)})",
        ),
        ("the count rule alone", _f(g.get("grade_accuracy_rule"))),
        ("ceiling (true counts through the rule)", _f(g.get("grade_ceiling"))),
        ("within one grade", _f(g.get("grade_within_one"))),
        ("counting MAE (lesions per photo)", _f(g.get("count_mae"), 2)),
        ("grade probabilities: Brier score", _f(p.get("brier"))),
        ("what grades", f"{shown}: {m.get('reason', '')}"),
        (
            "validation accuracy of each candidate",
            ", ".join(f"{k} {_f(v)}" for k, v in validation.items()) or "-",
        ),
    ]
    cost = ", ".join(x for x in (entry.get("elapsed"), entry.get("peak") and f"peak {entry['peak']}") if x)
    head = (
        f"Measured at commit `{entry['commit']}` on {entry['machine']}, {entry['date']}: {entry['data']}"
        + (f" ({cost})" if cost else "")
        + "."
    )
    return "\n".join([head, "", "| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]) + "\n"


def render(text: str, figures: dict[str, Any]) -> str:
    """``text`` with every marked table rewritten from ``figures`` (unknown names are left as they are)."""

    def _one(match: re.Match[str]) -> str:
        entry = figures.get(match["name"])
        return match.group(0) if entry is None else match.group(1) + render_table(entry) + match.group(4)

    return MARKER.sub(_one, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m acne_detection.ops.release_figures", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    got = sub.add_parser("collect", help="add a finished run's figures to docs/figures.json")
    got.add_argument("project", type=Path)
    got.add_argument("name")
    got.add_argument("--data", required=True)
    got.add_argument("--elapsed", default="")
    got.add_argument("--peak", default="")
    got.add_argument("--commit", default="", help="the commit the run ran (default: HEAD)")
    sub.add_parser("render", help="rewrite the tables of the README and docs/ from docs/figures.json")
    args = parser.parse_args(argv)
    if args.command == "collect":
        figures = _json(FIGURES)
        figures[args.name] = collect(
            args.project, args.name, data=args.data, elapsed=args.elapsed, peak=args.peak, commit=args.commit
        )
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    for document in documents():
        text = document.read_text()
        rendered = render(text, _json(FIGURES))
        if rendered != text:
            document.write_text(rendered)


if __name__ == "__main__":
    main()
