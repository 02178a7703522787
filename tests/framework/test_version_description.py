"""A model card longer than a SQL registry's 5,000 characters is cut, never refused: its head to
the last whole line that fits, where the whole card is, and its caveats whole."""

from __future__ import annotations

from acne_detection.framework.tracking import DESCRIPTION_CHARS, version_description

CAVEATS = "## Caveats\n- Only 85 test photos: every interval is wide.\n"


def _card(metric_lines: int) -> str:
    rows = "".join(f"| metric {i} | {i / 1000:.3f} |\n" for i in range(metric_lines))
    return f"**Trained on synthetic photos.**\n\n## Metrics (test split)\n{rows}\n{CAVEATS}"


def test_a_card_that_fits_is_the_description_as_it_is() -> None:
    card = _card(10)
    assert version_description(card, "abc") == card


def test_a_long_card_keeps_its_head_its_caveats_and_says_where_the_rest_is() -> None:
    card = _card(400)  # about 9,000 characters
    described = version_description(card, "run123")
    assert len(card) > DESCRIPTION_CHARS >= len(described) > DESCRIPTION_CHARS - 200
    assert described.endswith(CAVEATS)
    head = described.split("\n\n*Cut to")[0]
    assert card.startswith(head) and head.endswith("|")  # whole lines only: no row cut in two
    assert "`model/model_card.md` of MLflow run `run123`" in described


def test_a_card_whose_last_section_is_long_is_cut_at_a_line() -> None:
    card = "# Card\n\n## Only section\n" + "".join(f"- line {i}\n" for i in range(900))
    described = version_description(card, "r")
    assert len(described) <= DESCRIPTION_CHARS and described.startswith("# Card\n\n## Only section\n- line 0\n")
    assert described.rstrip().endswith("of MLflow run `r`.*")
