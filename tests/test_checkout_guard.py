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
        "new at the top: runs",
    ]
    kept.unlink()
    assert "removed: data/08_reporting/metrics.json" in changes(before, snapshot(tmp_path))


def test_in_a_git_checkout_a_changed_tracked_file_and_a_file_beside_the_code_are_named(tmp_path: Path) -> None:
    import subprocess

    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("*-quick.md\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text("{}")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    before = snapshot(tmp_path)
    (tmp_path / "bench" / "results.json").write_text('{"rows": 1}')  # a test rewrote a tracked file
    (tmp_path / "bench" / "RESULTS-quick.md").write_text("table")  # and wrote an ignored one beside the code
    assert changes(before, snapshot(tmp_path)) == [
        "new in git status:  M bench/results.json",
        "new in git status: !! bench/RESULTS-quick.md",
    ]
