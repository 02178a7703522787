"""The suite's leak check (tests/leak_check.py) catches a server a test leaves running, even one
orphaned into its own session, names it, kills it and fails the run; a clean run passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from tests.conftest import PROJECT_ROOT

LEAKY = """
import subprocess, sys

def test_leaves_a_server_running(tmp_path):
    subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""
CLEAN = """
import subprocess, sys

def test_stops_its_server():
    server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.terminate()
    server.wait()
"""


def _pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_probe.py"
    test.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leak_check", "-p", "no:cacheprovider", "-q", str(test)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_leaked_server_fails_the_run_named(tmp_path: Path) -> None:
    done = _pytest(tmp_path, LEAKY)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "outlived it" in done.stdout and "http.server" in done.stdout
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if "http.server" in " ".join(p.info["cmdline"] or [])]
    assert not leftovers  # and it was killed


def test_a_run_that_stops_its_servers_passes(tmp_path: Path) -> None:
    done = _pytest(tmp_path, CLEAN)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "outlived" not in done.stdout
