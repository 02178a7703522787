"""Ray, when one machine is not enough: joining a cluster, or a local instance on loopback.

Everything here imports Ray lazily: without the ``ray`` extra (``pip install -e ".[ray]"``) the
package imports, ``ray_installed()`` says no, and the pipelines stay in one process.

One setting says where to run: ``RAY_ADDRESS`` (or ``distributed.address`` in
``conf/<env>/parameters_distributed.yml``, which wins). Unset, ``ray_session`` starts a local
instance bound to 127.0.0.1 with no dashboard and stops it on leaving; set, it joins that
cluster and leaves it running. ``python -m acne_detection.framework.distributed head`` and
``... worker --address HOST:PORT`` (``make ray-head``, ``make ray-worker``) start the nodes of a
cluster, on 127.0.0.1 unless told another address.

Why the loopback takes code: on Linux Ray replaces 127.0.0.1 by the machine's routable address
(``ray._private.services.resolve_ip_for_localhost``) and its servers then listen on every
interface. Ray keeps a loopback node on loopback only when the address reaches it as 127.0.0.1,
so while Ray starts or connects here, a loopback address is handed on as it is
(``_loopback_kept``). A node on another address listens on every interface of its machine
(Ray binds the named address only for loopback): docs/scaling-out.md says how to fence it.

Used by the sweep (trials on Ray Tune) and by batch prediction (``model.batch`` on Ray Data).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from acne_detection.framework.privacy import PRIVACY_DEFAULTS

logger = logging.getLogger(__name__)

ADDRESS_VARIABLE = "RAY_ADDRESS"
LOOPBACK = "127.0.0.1"
# The tracking server's address and the credentials a worker logs with (the team server's
# logins): handed from the driver to every worker of the session, with the privacy defaults.
FORWARDED_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_EXPERIMENT_NAME",
    *PRIVACY_DEFAULTS,
)


def ray_installed() -> bool:
    """Whether the ``ray`` extra is installed (``pip install -e ".[ray]"``); nothing is imported."""
    return importlib.util.find_spec("ray") is not None


def cluster_address(address: str | None = None) -> str | None:
    """The Ray cluster to join: ``address`` when given (``distributed.address``), else
    ``RAY_ADDRESS``; ``None``: no cluster named, a local instance will do. ``"local"`` and
    ``""`` name none."""
    chosen = address if address else os.environ.get(ADDRESS_VARIABLE, "")
    return None if chosen in ("", "local") else chosen


@dataclass(frozen=True)
class RaySession:
    """The Ray instance a ``ray_session`` is connected to.

    Attributes:
        address: its GCS address (``host:port``).
        started: ``True`` when the session started it (a local instance, stopped on leaving).
    """

    address: str
    started: bool

    def nodes(self) -> list[str]:
        """The ids of the nodes alive now (hex strings, as ``node_id()`` gives them)."""
        import ray

        return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]

    def cpus(self) -> float:
        """The CPUs of the whole cluster (every node alive), free or not."""
        import ray

        return float(ray.cluster_resources().get("CPU", 0.0))


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    env_vars: Mapping[str, str] | None = None,
) -> Iterator[RaySession]:
    """Connected to Ray for the ``with`` block: the named cluster, or a local instance.

    Nested sessions, and a caller that connected already, share the connection: only the
    session that connected (or started an instance) disconnects (or stops it) on leaving.
    Workers of the session get the driver's MLflow tracking variables and the privacy
    defaults (``FORWARDED_VARIABLES``) as Ray's ``runtime_env``, plus ``env_vars``.

    Args:
        address: a cluster's ``host:port``; ``None``: ``RAY_ADDRESS``, else a local instance
            on 127.0.0.1 (no dashboard, usage statistics off).
        num_cpus: the local instance's CPUs (``None``: all of them); ignored when joining.
        env_vars: more environment variables for the workers.

    Yields:
        The ``RaySession``.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
        ConnectionError: the named cluster cannot be reached (the message names it).
    """
    if not ray_installed():
        raise ImportError('Ray is not installed: pip install -e ".[ray]" (make test installs it)')
    import ray

    if ray.is_initialized():
        yield RaySession(address=_gcs_address(), started=False)
        return
    target = cluster_address(address)
    forwarded = {k: os.environ[k] for k in FORWARDED_VARIABLES if k in os.environ}
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": {**forwarded, **(env_vars or {})}},
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    with _loopback_kept():
        if target:
            _token_auth_if_token()
            host = target.rsplit(":", 1)[0]
            if _is_loopback(host):
                kwargs["_node_ip_address"] = LOOPBACK  # the driver's node: the cluster's, on loopback
            try:
                ray.init(address=target, **kwargs)
            except (ConnectionError, TimeoutError, RuntimeError) as err:
                raise ConnectionError(
                    f"Ray cluster at {target} (from {'distributed.address' if address else ADDRESS_VARIABLE}) "
                    f"cannot be reached: {err}. Start one with `make ray-head`, or unset {ADDRESS_VARIABLE} "
                    "to use a local instance."
                ) from err
            logger.info("Joined the Ray cluster at %s", target)
        else:
            ray.init(
                # "local": a new instance, always. With no address Ray would join the newest
                # cluster `ray start` left running on this machine (/tmp/ray/ray_current_cluster),
                # whoever started it: nothing set must mean this run's own instance
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                **kwargs,
            )
            logger.info("Started a local Ray instance on %s (%s CPUs)", LOOPBACK, num_cpus or "all")
    try:
        yield RaySession(address=_gcs_address(), started=not target)
    finally:
        ray.shutdown()  # a joined cluster keeps running: this only disconnects


def _token_auth_if_token() -> None:
    """A driver joining a cluster authenticates with Ray's token when it has one (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and ``RAY_AUTH_MODE`` is unset, as a node
    started by ``ray start`` does; Ray's own driver would not, and a token cluster would not answer."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def node_id() -> str:
    """The id of the Ray node this code runs on (a task's, an actor's, or the driver's), as hex.

    Raises:
        RuntimeError: not inside a Ray session.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("node_id() needs a Ray session (ray_session)")
    return ray.get_runtime_context().get_node_id()


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def _loopback_kept() -> Iterator[None]:
    """While Ray starts or connects: a loopback address stays 127.0.0.1 (see the module's
    docstring); any other address resolves as Ray resolves it."""
    from ray._private import services

    original = services.resolve_ip_for_localhost

    def _resolve(host: str) -> str:
        return LOOPBACK if _is_loopback(host) else original(host)

    services.resolve_ip_for_localhost = _resolve
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = original


def node_command(
    role: str, *, host: str = LOOPBACK, port: int = 6379, address: str | None = None, extra: list[str] | None = None
) -> list[str]:
    """The ``ray start`` arguments of a node (``make ray-head``, ``make ray-worker``, the tests' cluster).

    Args:
        role: ``head`` or ``worker``.
        host: the address this node listens on and is reached at (127.0.0.1: this machine only).
        port: the head's port (``head`` only).
        address: the head's ``host:port`` (``worker`` only).
        extra: more ``ray start`` options (``--num-cpus 1``, ``--resources '{"gpu_box": 1}'``).

    Returns:
        The arguments after ``ray``: the node blocks in the foreground until stopped (Ctrl-C, SIGTERM).
    """
    common = ["--node-ip-address", host, "--disable-usage-stats", "--block", *(extra or [])]
    if role == "head":
        return ["start", "--head", "--port", str(port), "--include-dashboard", "false", *common]
    if not address:
        raise ValueError("a worker node needs the head's address: make ray-worker ADDRESS=<head host>:<port>")
    return ["start", "--address", address, *common]


def main(argv: list[str] | None = None) -> None:
    """``python -m acne_detection.framework.distributed {head,worker} [--host H] [--port P]
    [--address A] [ray start options...]``: a node in the foreground (Ctrl-C stops it)."""
    parser = argparse.ArgumentParser(prog="python -m acne_detection.framework.distributed")
    parser.add_argument("role", choices=["head", "worker"])
    parser.add_argument("--host", default=LOOPBACK, help="the address this node listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6379, help="the head's port")
    parser.add_argument("--address", default=None, help="the head's host:port (worker)")
    args, extra = parser.parse_known_args(argv)
    try:
        command = node_command(args.role, host=args.host, port=args.port, address=args.address, extra=extra)
    except ValueError as err:
        parser.error(str(err))
    if not ray_installed():
        parser.error('Ray is not installed: pip install -e ".[ray]"')
    # Ray's token: a head makes one (~/.ray/auth_token) where there is none; a worker needs the
    # head's (docs/scaling-out.md). RAY_AUTH_MODE=disabled opts out. Set before Ray is imported,
    # which reads it once.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray.scripts.scripts import cli

    logger.info("ray %s", " ".join(command))
    with _loopback_kept():
        cli.main(args=command, prog_name="ray")


if __name__ == "__main__":
    sys.exit(main())
