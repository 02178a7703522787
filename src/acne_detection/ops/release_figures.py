"""Figures in the README and the docs come from files, never from typing.

A run's reports (``data/08_reporting/*.json``, ``data/06_models/grade_model.json``) are collected
into one committed file of measured release figures (``docs/figures.json``), each entry naming the
commit, the machine and the date it was measured on; the benchmarks write theirs to
``benchmarks/results.json`` (each row naming its commit, the file its machine). ``render`` writes
each table between its markers in the README and the docs: ``<!-- figures:NAME -->`` ...
``<!-- /figures:NAME -->`` for an entry of ``docs/figures.json``, ``<!-- figures:bench:GROUP -->``
... ``<!-- /figures:bench:GROUP -->`` for the rows of one group of benchmarks (``BENCH_GROUPS``).
The suite fails when a table there differs from its file (``tests/ops/test_release_figures.py``).

Usage::

    python -m acne_detection.ops.release_figures collect <project dir> NAME --data "what it ran on"
    python -m acne_detection.ops.release_figures render          # README.md and docs/ from the files
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

from acne_detection.core.grading import interval_words

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures.json"
RESULTS = ROOT / "benchmarks" / "results.json"
README = ROOT / "README.md"
BENCH = "bench:"

# The benchmarks' rows shown together: a group's rows are those whose name starts with one of its prefixes.
BENCH_GROUPS: dict[str, tuple[str, ...]] = {
    "ingestion": ("ingestion, ", "peak resident memory of ingestion"),
    "metrics": ("metrics, ",),
    "pipeline": (
        "whole run, ",
        "training only",
        "peak resident memory per pipeline",
        "whole run at the defaults",
    ),
    "scale": ("whole DAG on an ACNE04-shaped export", "peak memory of kedro run in one process"),
    "concurrency": ("two concurrent runs",),
    "phone": ("sliced inference on phone photos", "sliced phone photo"),
    "predict": ("prediction throughput", "prediction on ONNX Runtime", "peak resident memory of prediction"),
    "ray-sweep": ("sweep of ",),
    "ray-predict": ("predict ",),
    "serve": ("served model",),
    "install": ("install: ",),
    "suite": ("suite: ",),
}


def documents() -> list[Path]:
    """The files whose tables are generated: the README and every docs page."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


MARKER = re.compile(r"(<!-- figures:(?P<name>[\w.:-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.DOTALL)


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
    point, nms = _json(models / "operating_point.json"), _json(models / "nms_choice.json")
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
        "operating_point": {
            k: point.get(k) for k in ("threshold", "rule", "chosen_on", "val_recall", "val_precision") if k in point
        },
        **({"nms": nms} if nms else {}),
    }


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _point_rows(point: dict[str, Any]) -> list[tuple[str, str]]:
    """The operating point's row, where the entry recorded it: the threshold, the rule, where it was chosen."""
    if "threshold" not in point:
        return []
    how = (
        f"{point.get('rule', '-')} on the validation split (there: recall {_f(point.get('val_recall'))}, "
        f"precision {_f(point.get('val_precision'))})"
        if point.get("chosen_on") == "validation"
        else "the lowest: no validation lesion"
    )
    return [("operating point (calibrated confidence)", f"{_f(point['threshold'], 2)}, {how}")]


def _nms_rows(nms: dict[str, Any]) -> list[tuple[str, str]]:
    """The NMS IoU's row, where the entry recorded it: the one kept and each one's validation mAP@50."""
    if "nms_iou" not in nms:
        return []
    tried = ", ".join(f"{_f(row.get('val_mAP50'))} at {_f(row['nms_iou'], 2)}" for row in nms.get("candidates", []))
    how = "highest validation mAP@50" if nms.get("chosen_on") == "validation" else "eval.nms_iou"
    return [("NMS IoU", f"{_f(nms['nms_iou'], 2)}, {how} ({tried})")]


def render_table(entry: dict[str, Any]) -> str:
    """The markdown table of one entry: detection, grading with its interval, the rule beside it, the ceiling."""
    d, g, p, m = entry["detection"], entry["grading"], entry["grade_probabilities"], entry["grade_model"]
    validation = m.get("validation") or {}
    # a learned model's reason starts with its name; the rule's says why no learned model replaced it
    shown = f"the count rule: {m.get('reason', '')}" if m.get("kind") == "rule" else str(m.get("reason", ""))
    rows = [
        ("test photos graded", f"{int(g.get('photos_graded', 0))}"),
        ("mAP@50 / mAP@50-95", f"{_f(d.get('mAP50'))} / {_f(d.get('mAP50-95'))}"),
        *_nms_rows(entry.get("nms") or {}),
        *_point_rows(entry.get("operating_point") or {}),
        ("recall / precision at the operating point, on test", f"{_f(d.get('recall'))} / {_f(d.get('precision'))}"),
        (
            f"grading accuracy ({interval_words(g)})",
            f"**{_f(g.get('grade_accuracy'))}** ({_f(g.get('grade_accuracy_low'), 2)}-"
            f"{_f(g.get('grade_accuracy_high'), 2)})",
        ),
        ("the count rule alone", _f(g.get("grade_accuracy_rule"))),
        ("ceiling (true counts through the rule)", _f(g.get("grade_ceiling"))),
        ("within one grade", _f(g.get("grade_within_one"))),
        ("counting MAE of the lesions found (per photo)", _f(g.get("count_mae"), 2)),
        *(
            [("counting MAE of the grade model's estimated count", _f(g["count_mae_estimated"], 2))]
            if "count_mae_estimated" in g
            else []
        ),
        ("grade probabilities: Brier score", _f(p.get("brier"))),
        ("what grades", shown),
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


def bench_rows(results: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """The rows of ``benchmarks/results.json`` in one group of ``BENCH_GROUPS``, in the file's order."""
    if group not in BENCH_GROUPS:
        raise KeyError(f"no benchmark group {group!r}: the groups are {', '.join(BENCH_GROUPS)}")
    rows = [r for r in results.get("results", []) if r["benchmark"].startswith(BENCH_GROUPS[group])]
    if not rows:
        raise ValueError(f"benchmark group {group!r} selects no row of benchmarks/results.json")
    return rows


def _seconds(t: dict[str, float] | None) -> str:
    return "-" if t is None else f"{t['median_s']:.2f} ({t['min_s']:.2f}-{t['max_s']:.2f})"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _bench_row(r: dict[str, Any], commit: str) -> str:
    """One row as ``benchmarks/RESULTS.md`` shows it."""
    if "memory_mb" in r:
        notes = ", ".join(f"{k}: {v:.0f} MB" for k, v in r["memory_mb"].items())
        cells = [r["benchmark"], "-", "-", r["ours"], "-", "-", notes]
    else:
        notes = r.get("note", "")
        if "images_per_s" in r:
            notes = (notes + f" {r['images_per_s']:.1f} images/s").strip()
        if "baseline_images_per_s" in r:
            notes += f" (baseline {r['baseline_images_per_s']:.1f})"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        base, ours = _seconds(r["baseline_s"]), _seconds(r["ours_s"])
        cells = [r["benchmark"], r["baseline"], base, r["ours"], ours, ratio, notes]
    return "| " + " | ".join(_cell(c) for c in [*cells, f"`{commit}`"]) + " |"


def render_bench(results: dict[str, Any], group: str) -> str:
    """The markdown table of one group of benchmark rows: the machine, then each row with its commit."""
    meta, rows = results.get("meta", {}), bench_rows(results, group)
    machines = sorted({r.get("machine") or meta.get("machine", "unknown") for r in rows})
    commits = [r.get("commit") or meta.get("commit", "unknown") for r in rows]
    head = (
        f"From `benchmarks/results.json`: measured on {' and '.join(machines)}, at the commit in each row's "
        "last column. Times in seconds: the median of the runs (min-max); ratio = ours / baseline (lower is better)."
    )
    return (
        "\n".join(
            [
                head,
                "",
                "| benchmark | baseline | baseline time (s) | ours | our time (s) | ratio | notes | commit |",
                "|---|---|---|---|---|---|---|---|",
                *(_bench_row(r, c) for r, c in zip(rows, commits, strict=True)),
            ]
        )
        + "\n"
    )


def render(text: str, figures: dict[str, Any], results: dict[str, Any] | None = None) -> str:
    """``text`` with every marked table rewritten: ``NAME`` from ``figures`` (an unknown name is left as
    it is), ``bench:GROUP`` from ``results``, the benchmarks' file (an unknown or empty group raises)."""

    def _one(match: re.Match[str]) -> str:
        name = match["name"]
        if name.startswith(BENCH):
            if results is None:
                return match.group(0)
            return match.group(1) + render_bench(results, name.removeprefix(BENCH)) + match.group(4)
        entry = figures.get(name)
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
    sub.add_parser(
        "render", help="rewrite the tables of the README and docs/ from docs/figures.json and benchmarks/results.json"
    )
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
        rendered = render(text, _json(FIGURES), _json(RESULTS))
        if rendered != text:
            document.write_text(rendered)


if __name__ == "__main__":
    main()
