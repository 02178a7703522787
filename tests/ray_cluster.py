"""A real two-node Ray cluster on loopback, for the tests of the sweep and batch prediction.

Usage, in a test module::

    from tests.ray_cluster import RayCluster, ray_cluster  # noqa: F401 - the fixture

    def test_runs_on_both_nodes(ray_cluster: RayCluster, monkeypatch):
        monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
        ...  # work through framework.distributed.ray_session()
        assert {ray_cluster.head_id, ray_cluster.second_id} <= nodes_the_work_recorded

The head and the second node are separate ``ray start --block`` processes (through
``python -m acne_detection.framework.distributed``, as ``make ray-head`` and ``make ray-worker``
start them), each in its own process group, on 127.0.0.1, one CPU each, a small object store,
and a custom resource of their own (``{"head": 1}``, ``{"second": 1}``) so a test can pin work to
one of them. The cluster is started once per test session and stopped at its end, everything
each node started with it, even when a test failed (the leak check, ``tests/leak_check.py``,
fails the run otherwise). A test that kills the second node (``kill_second``) brings it back
(``start_second``) before it ends, so the next test finds two nodes again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from acne_detection.testing import free_port

NODE_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's smallest is 75 MiB
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
# a lost node is declared dead in about 3 s, not Ray's 30 (the killed-node tests wait for it)
HEALTH_CHECKS = json.dumps(
    {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
)


@dataclass
class RayCluster:
    """The running cluster: ``address`` (``127.0.0.1:port``, what ``RAY_ADDRESS`` takes), the
    nodes' ids (hex, as ``framework.distributed.node_id()`` gives them) and their processes."""

    address: str
    folder: Path
    head: subprocess.Popen | None = None
    second: subprocess.Popen | None = None
    head_id: str = ""
    second_id: str = ""
    _processes: dict[str, set[int]] = field(default_factory=dict)

    def start_head(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self.head = self._start("head", ["head", "--port", port, "--system-config", HEALTH_CHECKS], {"head": 1})
        self.head_id = self._wait_for_node("head")

    def start_second(self) -> None:
        """Start the second node (again: a new node, a new id) and wait until it is alive."""
        self.second = self._start("second", ["worker", "--address", self.address], {"second": 1})
        self.second_id = self._wait_for_node("second", not_id=self.second_id)

    def kill_second(self) -> None:
        """The second machine is lost: SIGKILL to its node and everything it started, at once."""
        self._stop("second", signal.SIGKILL)

    def stop(self) -> None:
        """Both nodes, second first, politely (SIGTERM: ``ray start --block`` stops what it
        started), then SIGKILL to whatever is left of them."""
        for name in ("second", "head"):
            self._stop(name, signal.SIGTERM)

    def alive_nodes(self) -> set[str]:
        """The ids of the nodes the cluster sees alive now (asked from a separate process)."""
        return {n for n, _ in self._nodes() if n}

    def _start(self, name: str, args: list[str], resources: dict[str, int]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("ab")
        command = [
            sys.executable,
            "-m",
            "acne_detection.framework.distributed",
            *args,
            "--num-cpus",
            "1",
            "--resources",
            json.dumps(resources),
            "--object-store-memory",
            str(NODE_OBJECT_STORE_BYTES),
            "--temp-dir",
            str(self.folder),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._processes[name] = {process.pid}
        return process

    def _wait_for_node(self, resource: str, *, not_id: str = "") -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            process = self.head if resource == "head" else self.second
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the {resource} node stopped at start:\n{self._log_tail(resource)}")
            found = [n for n, r in self._nodes() if resource in r and n != not_id]
            if found:
                self._remember(resource)
                return found[0]
            time.sleep(1)
        raise TimeoutError(f"the {resource} node did not join within {START_TIMEOUT_S} s:\n{self._log_tail(resource)}")

    def _nodes(self) -> list[tuple[str, dict]]:
        """(node id, resources) of every node alive, from a short-lived driver in its own process,
        so the test process's own Ray connection stays untouched."""
        host, port = self.address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return []  # the head's GCS is not listening yet
        probe = (
            "import json, ray; from acne_detection.framework.distributed import ray_session\n"
            f"with ray_session({self.address!r}):\n"
            "    print(json.dumps([[n['NodeID'], n['Resources']] for n in ray.nodes() if n['Alive']]))"
        )
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        try:
            done = subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return []
        if done.returncode != 0:
            return []
        return [tuple(n) for n in json.loads(done.stdout.strip().splitlines()[-1])]

    def _remember(self, name: str) -> None:
        """Every process of the node (its GCS, raylet, agents, workers: some in process groups of
        their own), so that stopping it leaves none behind."""
        for pid in list(self._processes.get(name, ())):
            try:
                self._processes[name] |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                continue

    def _stop(self, name: str, sig: signal.Signals) -> None:
        process = self.head if name == "head" else self.second
        if process is None:
            return
        self._remember(name)
        if sig == signal.SIGKILL:  # all at once, as when the machine is lost
            for pid in self._processes.get(name, ()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        elif process.poll() is None:
            process.send_signal(sig)  # `ray start --block` stops its node's processes itself
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
        left = []
        for pid in self._processes.pop(name, set()):
            try:
                left.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(left, timeout=STOP_TIMEOUT_S if sig == signal.SIGTERM else 1)
        for p in alive:  # workers in their own process groups, orphaned by their raylet
            try:
                p.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
        if name == "head":
            self.head = None
        else:
            self.second = None

    def _log_tail(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    """A two-node Ray cluster on 127.0.0.1 (see the module's docstring), for the whole session."""
    from acne_detection.framework.distributed import ray_installed

    if not ray_installed():
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: make test (and .ci/run) install the ray extra")
        pytest.skip('Ray is not installed here (pip install -e ".[ray]"): the Ray tests need it')
    # Ray's socket paths must stay under 107 characters: a short folder, not pytest's tmp_path
    folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    cluster = RayCluster(address=f"127.0.0.1:{free_port()}", folder=folder)
    try:
        cluster.start_head()
        cluster.start_second()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
