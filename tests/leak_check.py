"""A pytest plugin (loaded by ``tests/conftest.py``): nothing the suite starts outlives it.

Every process the test run starts inherits a marker in its environment, so even a server's
worker that its parent orphaned (re-parented to init, no longer our child) is found. At the end of
the session, whatever still carries the marker after a short grace period is named, killed, and
fails the run.
"""

from __future__ import annotations

import os
import uuid

import psutil
import pytest

MARK = "ACNE_DETECTION_TEST_SESSION"
GRACE_SECONDS = 10
# the interpreter's own helpers, children of pytest that end with it
_OWN_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def pytest_configure(config: pytest.Config) -> None:
    os.environ[MARK] = uuid.uuid4().hex  # a fresh mark: a nested pytest run checks its own processes


def leaked_processes(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark`` (not this one, nor its own helpers)."""
    found = []
    for process in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        info = process.info
        if info["pid"] == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        if info["ppid"] == os.getpid() and any(helper in cmdline for helper in _OWN_HELPERS):
            continue
        try:
            if process.environ().get(MARK) == mark:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


@pytest.hookimpl(trylast=True)  # under pytest-xdist, after the controller has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mark = os.environ.get(MARK, "")
    _, alive = psutil.wait_procs(leaked_processes(mark), timeout=GRACE_SECONDS)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if not alive:
        return
    names = []
    for process in alive:
        try:
            names.append(f"pid {process.pid}: {' '.join(process.cmdline())[:200]} (in {process.cwd()})")
            process.kill()
        except psutil.Error:
            continue
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(names)} process(es) started by the test run outlived it (now killed):\n  " + "\n  ".join(names)
    if reporter:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
