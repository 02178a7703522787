"""The session-end check that the suite leaves the checkout as it found it (tests/checkout_guard.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.checkout_guard import changes, snapshot


def test_a_changed_run_output_and_a_stray_folder_are_named(tmp_path: Path) -> None:
    (tmp_path / "data" / "08_reporting").mkdir(parents=True)
    kept, touched = tmp_path / "data" / "08_reporting" / "metrics.json", tmp_path / "data" / "model.pt"
    kept.write_text("{}")
    touched.write_bytes(b"weights")
    (tmp_path / ".pytest_cache").mkdir()
    before = snapshot(tmp_path)
    assert changes(before, snapshot(tmp_path)) == []  # nothing done, nothing found
    os.utime(touched, ns=(1, 1))  # rewritten with the same size: still a change
    (tmp_path / "data" / "new.csv").write_text("x")
    (tmp_path / "runs" / "detect").mkdir(parents=True)  # what Ultralytics' validator once left
    (tmp_path / ".hypothesis").mkdir()  # a cache a tool writes by design
    assert changes(before, snapshot(tmp_path)) == [
        "added: data/new.csv",
        "changed: data/model.pt",
        "new at the top of the checkout: runs",
    ]
    kept.unlink()
    assert "removed: data/08_reporting/metrics.json" in changes(before, snapshot(tmp_path))
