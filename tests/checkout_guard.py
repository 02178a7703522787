"""A pytest plugin (loaded by ``tests/conftest.py``): the suite leaves the checkout as it found it.

The quick start runs ``make run`` and then ``make test`` in one checkout, so the suite must pass
beside a run's outputs and must not change them: every test works in its own temporary folder.
At the start of the session this plugin records the checkout's ``data/`` (each file's size and
modification time) and its top-level entries; at the end, a file of ``data/`` added, removed or
changed, a new entry at the top (an ``mlruns/`` or ``runs/`` a library wrote into the working
directory), or a new line in ``git status --ignored`` elsewhere (a tracked file changed, a file
written beside the code), is named and fails the run. Under pytest-xdist the controller checks, once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what tools write at the top of a checkout by design (caches, the venv, the docs' build)
EXPECTED = {".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__", ".venv", "site", ".coverage"}
_KEY = pytest.StashKey[tuple[dict[str, tuple[int, int]], set[str]]]()


def _git_status(root: Path) -> set[str]:
    """``git status``'s lines outside ``data/`` (tracked files changed, files added, ignored ones
    too), or nothing where ``root`` is not a git checkout."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--ignored"], cwd=root, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    if done.returncode:
        return set()
    lines = set()
    for line in done.stdout.splitlines():
        path = line[3:].strip('"')
        parts = Path(path).parts
        if not parts or parts[0] == "data" or "__pycache__" in parts or parts[0] in EXPECTED:
            continue
        lines.add(line)
    return lines


def snapshot(root: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """``data/``'s files (path: size, mtime in ns), and the names at the top of ``root`` with
    ``git status``'s lines for the rest of the checkout."""
    files = {}
    data = root / "data"
    if data.is_dir():
        for path in data.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    top = {p.name for p in root.iterdir()} - EXPECTED
    return files, top | {f"git: {line}" for line in _git_status(root)}


def changes(before: tuple[dict, set], after: tuple[dict, set]) -> list[str]:
    """What differs between two snapshots, a line each."""
    (old, old_rest), (new, new_rest) = before, after
    lines = [f"added: {p}" for p in sorted(new.keys() - old.keys())]
    lines += [f"removed: {p}" for p in sorted(old.keys() - new.keys())]
    lines += [f"changed: {p}" for p in sorted(old.keys() & new.keys()) if old[p] != new[p]]
    for entry in sorted(new_rest - old_rest):
        lines.append(f"new in git status: {entry[5:]}" if entry.startswith("git: ") else f"new at the top: {entry}")
    return lines


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _controller(config):
        config.stash[_KEY] = snapshot(ROOT)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _controller(session.config) or _KEY not in session.config.stash:
        return
    found = changes(session.config.stash[_KEY], snapshot(ROOT))
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"the suite changed the checkout ({ROOT}), which it must leave as it found it:\n  " + "\n  ".join(
        found[:50]
    )
    if reporter:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
