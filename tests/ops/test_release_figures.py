"""The figure tables of the README and the docs are generated from files: docs/figures.json (measured
run figures, each naming its commit and machine) and benchmarks/results.json (the benchmarks' rows,
each naming its commit, the file its machine); a figure typed by hand into a table fails here."""

from __future__ import annotations

import json

import pytest

from acne_detection.ops.release_figures import (
    BENCH,
    BENCH_GROUPS,
    FIGURES,
    MARKER,
    README,
    RESULTS,
    bench_rows,
    documents,
    render,
    render_bench,
    render_table,
)


def test_every_generated_table_equals_its_file() -> None:
    figures, results = json.loads(FIGURES.read_text()), json.loads(RESULTS.read_text())
    assert README in documents() and len(documents()) > 10  # the README and every docs page
    marked_anywhere = set()
    for document in documents():
        text = document.read_text()
        marked = {m["name"] for m in MARKER.finditer(text)}
        runs = {name for name in marked if not name.startswith(BENCH)}
        assert runs <= set(figures), f"{document.name}: tables without figures: {runs - set(figures)}"
        benches = {name.removeprefix(BENCH) for name in marked - runs}
        assert benches <= set(BENCH_GROUPS), f"{document.name}: unknown benchmark groups: {benches - set(BENCH_GROUPS)}"
        assert render(text, figures, results) == text, (
            f"{document.name}: a table differs from docs/figures.json or benchmarks/results.json: make figures"
        )
        marked_anywhere |= marked
    assert {"synthetic", "acne04-dev"} <= marked_anywhere
    assert {BENCH + group for group in BENCH_GROUPS} <= marked_anywhere  # every group is shown somewhere


def test_every_benchmark_group_selects_rows() -> None:
    results = json.loads(RESULTS.read_text())
    for group in BENCH_GROUPS:
        assert bench_rows(results, group), group
    with pytest.raises(KeyError, match="no benchmark group"):
        bench_rows(results, "no-such-group")
    with pytest.raises(ValueError, match="selects no row"):
        bench_rows({"meta": {}, "results": []}, "metrics")


def test_a_figure_edited_by_hand_is_caught() -> None:
    figures = json.loads(FIGURES.read_text())
    name = next(MARKER.finditer(README.read_text()))["name"]
    table = render_table(figures[name])
    accuracy = f"{figures[name]['grading']['grade_accuracy']:.3f}"
    edited = README.read_text().replace(table, table.replace(f"**{accuracy}**", "**0.999**"))
    assert edited != README.read_text() and render(edited, figures) != edited
    assert f"commit `{figures[name]['commit']}`" in table and figures[name]["machine"] in table


def test_a_benchmark_figure_edited_by_hand_is_caught() -> None:
    figures, results = json.loads(FIGURES.read_text()), json.loads(RESULTS.read_text())
    document = next(d for d in documents() if "<!-- figures:bench:" in d.read_text())
    text = document.read_text()
    group = next(m["name"] for m in MARKER.finditer(text) if m["name"].startswith(BENCH)).removeprefix(BENCH)
    table = render_bench(results, group)
    row = next(r for r in bench_rows(results, group) if r.get("ours_s"))
    median = f"{row['ours_s']['median_s']:.2f}"
    assert f" {median} (" in table
    edited = text.replace(table, table.replace(f" {median} (", " 0.01 (", 1))
    assert edited != text and render(edited, figures, results) == text  # caught, and make figures puts it back
    assert results["meta"]["machine"] in table
    assert all(f"`{r['commit']}` |" in table for r in bench_rows(results, group))


def test_the_operating_point_row_says_where_it_was_chosen() -> None:
    """An entry that recorded its operating point shows its threshold and the split that chose it,
    apart from the test figures read at it; an entry from before it was recorded shows no such row."""
    figures = json.loads(FIGURES.read_text())
    entry = {
        **figures["acne04-dev"],
        "operating_point": {
            "threshold": 0.35,
            "rule": "max_f1",
            "chosen_on": "validation",
            "val_recall": 0.5,
            "val_precision": 0.25,
        },
    }
    table = render_table(entry)
    assert (
        "| operating point (calibrated confidence) | 0.35, max_f1 on the validation split "
        "(there: recall 0.500, precision 0.250) |" in table
    )
    assert "| recall / precision at the operating point, on test |" in table
    lowest = {**entry, "operating_point": {"threshold": 0.05, "rule": "max_f1", "chosen_on": "none"}}
    assert "| operating point (calibrated confidence) | 0.05, the lowest: no validation lesion |" in render_table(
        lowest
    )
    older = {k: v for k, v in entry.items() if k != "operating_point"}
    assert "operating point (calibrated" not in render_table(older)


def test_the_nms_row_gives_each_iou_tried_and_the_one_kept() -> None:
    figures = json.loads(FIGURES.read_text())
    nms = {
        "nms_iou": 0.5,
        "chosen_on": "validation",
        "candidates": [{"nms_iou": 0.7, "val_mAP50": 0.148}, {"nms_iou": 0.5, "val_mAP50": 0.163}],
    }
    table = render_table({**figures["acne04-dev"], "nms": nms})
    assert "| NMS IoU | 0.50, highest validation mAP@50 (0.148 at 0.70, 0.163 at 0.50) |" in table
    assert "| NMS IoU |" not in render_table({k: v for k, v in figures["acne04-dev"].items() if k != "nms"})
