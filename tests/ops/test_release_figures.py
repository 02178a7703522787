"""The README's figure tables are generated from docs/figures.json (measured release figures, each
naming its commit and machine); a figure typed by hand into the README fails here."""

from __future__ import annotations

import json

from acne_detection.ops.release_figures import FIGURES, MARKER, README, documents, render, render_table


def test_every_generated_table_equals_its_file() -> None:
    figures = json.loads(FIGURES.read_text())
    assert README in documents() and len(documents()) > 10  # the README and every docs page
    marked_anywhere = set()
    for document in documents():
        text = document.read_text()
        marked = {m["name"] for m in MARKER.finditer(text)}
        assert marked <= set(figures), f"{document.name}: tables without figures: {marked - set(figures)}"
        assert render(text, figures) == text, f"{document.name}: a table differs from docs/figures.json: make figures"
        marked_anywhere |= marked
    assert {"synthetic", "acne04-dev"} <= marked_anywhere


def test_a_figure_edited_by_hand_is_caught() -> None:
    figures = json.loads(FIGURES.read_text())
    name = next(MARKER.finditer(README.read_text()))["name"]
    table = render_table(figures[name])
    accuracy = f"{figures[name]['grading']['grade_accuracy']:.3f}"
    edited = README.read_text().replace(table, table.replace(f"**{accuracy}**", "**0.999**"))
    assert edited != README.read_text() and render(edited, figures) != edited
    assert f"commit `{figures[name]['commit']}`" in table and figures[name]["machine"] in table
