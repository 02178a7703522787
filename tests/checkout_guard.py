"""A pytest plugin (loaded by ``tests/conftest.py``): the suite leaves the checkout as it found it.

The quick start runs ``make run`` and then ``make test`` in one checkout, so the suite must pass
beside a run's outputs and must not change them: every test works in its own temporary folder.
At the start of the session this plugin records the checkout's ``data/`` (each file's size and
modification time) and its top-level entries; at the end, a file of ``data/`` added, removed or
changed, or a new entry at the top (an ``mlruns/`` or ``runs/`` a library wrote into the working
directory), is named and fails the run. Under pytest-xdist the controller checks, once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what tools write at the top of a checkout by design (caches, the venv, the docs' build)
EXPECTED = {".pytest_cache", ".hypothesis", ".ruff_cache", "__pycache__", ".venv", "site", ".coverage"}
_KEY = pytest.StashKey[tuple[dict[str, tuple[int, int]], set[str]]]()


def snapshot(root: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """``data/``'s files (path: size, mtime in ns) and the names at the top of ``root``."""
    files = {}
    data = root / "data"
    if data.is_dir():
        for path in data.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files, {p.name for p in root.iterdir()}


def changes(before: tuple[dict, set], after: tuple[dict, set]) -> list[str]:
    """What differs between two snapshots, a line each."""
    (old, old_top), (new, new_top) = before, after
    lines = [f"added: {p}" for p in sorted(new.keys() - old.keys())]
    lines += [f"removed: {p}" for p in sorted(old.keys() - new.keys())]
    lines += [f"changed: {p}" for p in sorted(old.keys() & new.keys()) if old[p] != new[p]]
    lines += [f"new at the top of the checkout: {n}" for n in sorted(new_top - old_top - EXPECTED)]
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
