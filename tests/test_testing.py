"""The shared test helpers' free port: free, and below the kernel's ephemeral range, where no
client's source port can land on it (a client connecting there before the server listens would
otherwise connect to itself)."""

from __future__ import annotations

import socket

from acne_detection.testing import _ephemeral_low, free_port


def test_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(5)}
    assert all(20000 <= port < _ephemeral_low() <= 65535 for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: binds
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", min(ports)))
        taken.listen()
        assert min(ports) not in {free_port() for _ in range(50)}  # a port in use is never handed out


def test_free_port_ignores_the_global_random_seed() -> None:
    """pytest-randomly seeds ``random`` alike before each test in every worker: ports drawn from it
    would be the same in concurrent tests (two Label Studio servers on one port, seen in CI)."""
    import random

    drawn = []
    for _ in range(3):
        random.seed(0)
        drawn.append(free_port())
    assert len(set(drawn)) > 1
