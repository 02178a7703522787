"""A team MLflow tracking server on real parts: PostgreSQL as the backend store (runs,
metrics, the model registry) and artifacts proxied by the server into a folder.

``make server`` runs ``python -m acne_detection.team_server``: with no database configured it
creates a local PostgreSQL cluster under ``data/team/`` (``initdb``; as root, owned by and run as
the ``postgres`` user, since PostgreSQL refuses to run as root), starts it on 127.0.0.1 only,
then serves MLflow on 127.0.0.1:5050. A team's own PostgreSQL is used instead when
``MLFLOW_BACKEND_STORE_URI`` is set (``postgresql+psycopg2://USER@HOST:PORT/DB``, the password in
``PGPASSWORD`` or ``~/.pgpass``: never in the repo). Runs point at the server with
``kedro run --env team`` or ``MLFLOW_TRACKING_URI=http://127.0.0.1:5050`` (README, "Scaling out").

The local cluster's password is generated on creation and kept in
``data/team/postgres.password`` (mode 600, under the git-ignored ``data/``); it reaches the
server and clients through ``PGPASSWORD``, never on a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5050
DEFAULT_PG_PORT = 5433
DATABASE = "mlflow"
ROLE = "mlflow"


def _pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, or in Debian's versioned folder."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if not found:
        raise RuntimeError(
            f"PostgreSQL's `{name}` is not installed (PostgreSQL 15+ is needed for the local cluster; "
            "or set MLFLOW_BACKEND_STORE_URI to an existing PostgreSQL database)"
        )
    return found


@dataclass(frozen=True)
class LocalPostgres:
    """A PostgreSQL cluster in a folder, listening on 127.0.0.1 only (no Unix socket).

    Args:
        root: the folder that holds the cluster (``cluster/``), its log and its password.
        port: the TCP port.
    """

    root: Path
    port: int = DEFAULT_PG_PORT

    @property
    def cluster(self) -> Path:
        return self.root / "cluster"

    @property
    def password_file(self) -> Path:
        return self.root / "postgres.password"

    def _as_owner(self, command: list[str]) -> list[str]:
        """Run as ``postgres`` when this process is root (PostgreSQL refuses root)."""
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _prepare_folder(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        owner = pwd.getpwnam("postgres")
        os.chown(self.root, owner.pw_uid, owner.pw_gid)
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(self.root)], check=False)
        if reachable.returncode != 0:
            raise RuntimeError(
                f"{self.root}: the postgres user cannot write here (a parent folder is not open to it). "
                "Give the cluster "
                "a folder it can reach: TEAM_PG_DIR=/srv/acne-pg make server"
            )

    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()

    def initialise(self) -> None:
        """``initdb`` with a generated password (SCRAM), once."""
        if (self.cluster / "PG_VERSION").exists():
            return
        self._prepare_folder()
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        self.password_file.chmod(0o600)
        pwfile = self.root / ".initdb-password"
        shutil.copy(self.password_file, pwfile)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        try:
            subprocess.run(
                self._as_owner(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(self.cluster),
                        "-U",
                        ROLE,
                        "--pwfile",
                        str(pwfile),
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-instructions",
                    ]
                ),
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as err:
            raise RuntimeError(f"initdb failed in {self.cluster}: {err.stderr.strip()[-800:]}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        logger.info("Created a PostgreSQL cluster in %s (password in %s)", self.cluster, self.password_file)

    def running(self) -> bool:
        if not (self.cluster / "PG_VERSION").exists():
            return False
        status = subprocess.run(
            self._as_owner([_pg_bin("pg_ctl"), "status", "-D", str(self.cluster)]),
            capture_output=True,
            text=True,
            check=False,
        )
        return status.returncode == 0

    def start(self) -> None:
        """Start the cluster (once) and create the ``mlflow`` database if missing."""
        self.initialise()
        if not self.running():
            options = f"-p {self.port} -c listen_addresses={DEFAULT_HOST} -c unix_socket_directories=''"
            done = subprocess.run(
                self._as_owner(
                    [
                        _pg_bin("pg_ctl"),
                        "start",
                        "-w",
                        "-t",
                        "60",
                        "-D",
                        str(self.cluster),
                        "-l",
                        str(self.root / "postgres.log"),
                        "-o",
                        options,
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                log = (
                    (self.root / "postgres.log").read_text(errors="replace")[-800:]
                    if (self.root / "postgres.log").exists()
                    else ""
                )
                raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {done.stderr.strip()} {log}")
        self._create_database()

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=DEFAULT_HOST,
            port=self.port,
            user=ROLE,
            password=self.password(),
            dbname="postgres",
            connect_timeout=10,
        )
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.running():
            subprocess.run(
                self._as_owner([_pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.cluster)]),
                capture_output=True,
                check=False,
            )

    def uri(self) -> str:
        """The backend store URI, without the password (it travels in ``PGPASSWORD``)."""
        return f"postgresql+psycopg2://{ROLE}@{DEFAULT_HOST}:{self.port}/{DATABASE}"


def start_tracking_server(
    backend_uri: str,
    artifacts: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 2,
    password: str | None = None,
    log: Path | None = None,
) -> subprocess.Popen:
    """Start ``mlflow server`` with proxied artifacts (``--artifacts-destination``): clients
    send artifacts through the server and need no access to the folder.

    Args:
        backend_uri: the PostgreSQL URI (or any SQLAlchemy URI MLflow accepts).
        artifacts: where the server stores artifacts (S3-compatible storage: an ``s3://`` URI).
        host: the address to bind; 127.0.0.1 unless a user asks for another.
        port: the port.
        workers: server worker processes.
        password: the database password, passed as ``PGPASSWORD``.
        log: a file for the server's output (default: inherited).

    Returns:
        The server process (``wait_until_up`` tells when it answers).
    """
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # GenAI jobs (scorers): seven worker processes, unused here
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    if password:
        env["PGPASSWORD"] = password
    destination = artifacts if "://" in str(artifacts) else Path(artifacts).resolve()
    if not isinstance(destination, str):
        destination.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(destination),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    out = open(log, "ab") if log else None  # noqa: SIM115 (the server outlives this function)
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)


def wait_until_up(url: str, server: subprocess.Popen, *, seconds: float = 120) -> None:
    """Poll ``url/health`` until it answers; fail when the server exits or time runs out."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {server.returncode} before answering at {url}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer at {url} within {seconds:.0f} s") from None
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acne_detection.team_server", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="start",
        choices=["start", "stop"],
        help="start: PostgreSQL (if local) + MLflow server, in the foreground; stop: stop the local cluster",
    )
    parser.add_argument("--host", default=os.environ.get("TEAM_HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(os.environ.get("TEAM_PORT", DEFAULT_PORT)))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("TEAM_PG_PORT", DEFAULT_PG_PORT)))
    parser.add_argument("--pg-dir", default=os.environ.get("TEAM_PG_DIR", "data/team/postgres"))
    parser.add_argument("--artifacts", default=os.environ.get("TEAM_ARTIFACTS", "data/team/artifacts"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    local = LocalPostgres(Path(args.pg_dir).resolve(), args.pg_port)
    if args.command == "stop":
        local.stop()
        return 0
    backend, password = os.environ.get("MLFLOW_BACKEND_STORE_URI"), None
    if not backend:
        local.start()
        backend, password = local.uri(), local.password()
        logger.info("PostgreSQL: %s (data in %s)", backend, local.cluster)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "Listening on %s: anyone who reaches this address can read and write every run (MLflow's "
            "server has no login here). Put it behind a proxy with authentication.",
            args.host,
        )

    def _stop(signum: int, frame: object) -> None:  # Ctrl-C, and SIGTERM from a supervisor or under nohup
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server = start_tracking_server(
        backend, Path(args.artifacts), host=args.host, port=args.port, workers=args.workers, password=password
    )
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    try:
        wait_until_up(url, server)
        logger.info(
            "MLflow tracking server: %s (artifacts in %s). Point runs at it: `kedro run --env team`, or "
            "MLFLOW_TRACKING_URI=%s. Ctrl-C stops it.",
            url,
            args.artifacts,
            url,
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if not os.environ.get("MLFLOW_BACKEND_STORE_URI"):
            local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
