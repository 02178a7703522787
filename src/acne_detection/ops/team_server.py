"""A team MLflow tracking server on real parts: PostgreSQL as the backend store (runs,
metrics, the model registry) and artifacts proxied by the server into a folder.

``make server`` runs ``python -m acne_detection.ops.team_server``: with no database configured it
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
AUTH_DATABASE = "mlflow_auth"
ROLE = "mlflow"
ADMIN = "admin"
AUTH_CACHE_SECONDS = 60


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
        self.ensure_databases(DATABASE, AUTH_DATABASE)  # runs and registry; users and permissions

    def ensure_databases(self, *names: str) -> None:
        """Create each database that does not exist yet (Label Studio keeps its own beside MLflow's)."""
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
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.running():
            subprocess.run(
                self._as_owner([_pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.cluster)]),
                capture_output=True,
                check=False,
            )

    def uri(self, database: str = DATABASE) -> str:
        """A database's URI, without the password (it travels in ``PGPASSWORD``)."""
        return f"postgresql+psycopg2://{ROLE}@{DEFAULT_HOST}:{self.port}/{database}"


@dataclass(frozen=True)
class ServerSecrets:
    """The team server's generated secrets, one file each (mode 600) in a folder only its
    owner can enter: the admin's password, the key that signs the UI's sessions, and the
    password of each user ``add_user`` created. Never in the repo, a command line or a log.

    Args:
        root: the folder (``data/team/secrets``; kept by ``make clean-outputs``).
    """

    root: Path

    def _secret(self, name: str) -> str:
        path = self.root / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def admin_password(self) -> str:
        return self._secret("admin.password")

    def flask_key(self) -> str:
        return self._secret("flask.secret")

    def user_file(self, name: str) -> Path:
        return self.root / "users" / f"{name}.password"


@dataclass(frozen=True)
class Auth:
    """MLflow's basic-auth application for ``start_tracking_server``: users, passwords and
    per-experiment and per-registered-model permissions, kept in ``database_uri``.

    Args:
        database_uri: where users and permissions live (the team cluster's ``mlflow_auth``).
        secrets: the admin password and the session key.
        folder: where the generated ``basic_auth.ini`` is written (no secret in it).
        default_permission: what a user may do where nobody granted anything: ``READ``
            (see every run) or ``NO_PERMISSIONS`` (see only what is granted).
    """

    database_uri: str
    secrets: ServerSecrets
    folder: Path
    default_permission: str = "READ"

    def environment(self) -> dict[str, str]:
        """The server's variables: its configuration file, the admin password for the first
        start (MLflow creates the admin then, and ignores it afterwards), the session key."""
        self.folder.mkdir(parents=True, exist_ok=True)
        ini = self.folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            f"default_permission = {self.default_permission}\n"
            f"database_uri = {self.database_uri}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Each request's password is checked with PBKDF2; without this cache a training run's
            # few thousand requests made the tiny pipeline 10x slower. A changed password or
            # removed user reaches the other worker within this many seconds.
            f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n",
            encoding="utf-8",
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets.admin_password(),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets.flask_key(),
        }


ROLES = ("viewer", "trainer", "admin")


def add_user(url: str, name: str, role: str, secrets_: ServerSecrets, *, experiment: str, model: str) -> Path:
    """Create a user on the team server with a generated password, and grant its role.

    - viewer: READ on the project's experiment and registered model;
    - trainer: EDIT on both (runs, metrics, artifacts, new model versions), created first if missing;
    - admin: every right on the server, users included.

    Args:
        url: the server.
        name: the user's name.
        role: one of ``ROLES``.
        secrets_: where the admin password is, and where the new password is written.
        experiment: the project's experiment (``acne_detection``).
        model: the project's registered model (``acne-detector``).

    Returns:
        The file (mode 600) that holds the new user's password.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    if role not in ROLES:
        raise ValueError(f"role {role!r}: choose one of {', '.join(ROLES)}")
    password_file = secrets_.user_file(name)
    with _credentials(ADMIN, secrets_.admin_password()):
        users, tracking = AuthServiceClient(url), MlflowClient(tracking_uri=url)
        password = secrets.token_urlsafe(18)
        users.create_user(name, password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.touch(mode=0o600)
        password_file.write_text(password + "\n", encoding="utf-8")
        if role == "admin":
            users.update_user_admin(name, True)
            return password_file
        found = tracking.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else tracking.create_experiment(experiment, tags={"mlflow.experimentKind": "custom_model_development"})
        )
        try:
            tracking.get_registered_model(model)
        except MlflowException:
            tracking.create_registered_model(model)
        permission = "EDIT" if role == "trainer" else "READ"
        users.grant_user_permission(name, "experiment", str(experiment_id), permission)
        users.grant_user_permission(name, "registered_model", model, permission)
    return password_file


class _credentials:  # noqa: N801 - used as a context manager
    """MLflow's client reads a server's credentials from the environment: set them for a block."""

    NAMES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

    def __init__(self, user: str, password: str) -> None:
        self._values = dict(zip(self.NAMES, (user, password)))
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self._saved = {n: os.environ.get(n) for n in self.NAMES}
        os.environ.update(self._values)

    def __exit__(self, *exc: object) -> None:
        for n, v in self._saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def start_tracking_server(
    backend_uri: str,
    artifacts: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 2,
    password: str | None = None,
    log: Path | None = None,
    auth: Auth | None = None,
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
        auth: logins and permissions (MLflow's ``basic-auth`` app); ``None``: none.

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
    if auth is not None:
        env.update(auth.environment())
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
        *(["--app-name", "basic-auth"] if auth is not None else []),
    ]
    out = open(log, "ab") if log else None  # noqa: SIM115 (the server outlives this function)
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)


def wait_until_up(url: str, server: subprocess.Popen, *, seconds: float = 120, name: str = "mlflow server") -> None:
    """Poll ``url/health`` until it answers; fail when the server (``name``) exits or time runs out."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"{name} exited with code {server.returncode} before answering at {url}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer at {url} within {seconds:.0f} s") from None
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acne_detection.ops.team_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="start",
        choices=["start", "stop", "user"],
        help="start: PostgreSQL (if local) + MLflow server, in the foreground; stop: stop the local cluster; "
        "user NAME [ROLE]: add a user (viewer, trainer or admin) to the running server",
    )
    parser.add_argument("name", nargs="?", help="user: the new user's name")
    parser.add_argument("role", nargs="?", default="viewer", choices=ROLES, help="user: the new user's role")
    parser.add_argument("--host", default=os.environ.get("TEAM_HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(os.environ.get("TEAM_PORT", DEFAULT_PORT)))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("TEAM_PG_PORT", DEFAULT_PG_PORT)))
    parser.add_argument("--pg-dir", default=os.environ.get("TEAM_PG_DIR", "data/team/postgres"))
    parser.add_argument("--artifacts", default=os.environ.get("TEAM_ARTIFACTS", "data/team/artifacts"))
    parser.add_argument("--secrets", default=os.environ.get("TEAM_SECRETS", "data/team/secrets"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--default-permission",
        default=os.environ.get("TEAM_DEFAULT_PERMISSION", "READ"),
        choices=["READ", "NO_PERMISSIONS"],
        help="what a logged-in user may do where nobody granted anything",
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="no logins (only behind a proxy that authenticates every request)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    local = LocalPostgres(Path(args.pg_dir).resolve(), args.pg_port)
    server_secrets = ServerSecrets(Path(args.secrets).resolve())
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    if args.command == "stop":
        local.stop()
        return 0
    if args.command == "user":
        if not args.name:
            parser.error("user needs a NAME: python -m acne_detection.ops.team_server user alice trainer")
        where = add_user(url, args.name, args.role, server_secrets, experiment="acne_detection", model="acne-detector")
        logger.info(
            "User %s (%s) created on %s. Their password is in %s (mode 600): hand it over privately; they set "
            "MLFLOW_TRACKING_USERNAME=%s and MLFLOW_TRACKING_PASSWORD to it (conf/team/README.md).",
            args.name,
            args.role,
            url,
            where,
            args.name,
        )
        return 0
    backend, password = os.environ.get("MLFLOW_BACKEND_STORE_URI"), None
    auth_db = os.environ.get("TEAM_AUTH_DATABASE_URI")
    if not backend:
        local.start()
        backend, password = local.uri(), local.password()
        auth_db = auth_db or local.uri(AUTH_DATABASE)
        logger.info("PostgreSQL: %s (data in %s)", backend, local.cluster)
    auth = None
    if not args.no_auth:
        auth = Auth(
            auth_db or f"sqlite:///{server_secrets.root / 'auth.db'}",
            server_secrets,
            Path(args.secrets).resolve().parent / "auth",
            args.default_permission,
        )
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "Listening on %s without logins: anyone who reaches this address can read and write every run. "
            "Put it behind a proxy with authentication.",
            args.host,
        )

    def _stop(signum: int, frame: object) -> None:  # Ctrl-C, and SIGTERM from a supervisor or under nohup
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server = start_tracking_server(
        backend,
        Path(args.artifacts),
        host=args.host,
        port=args.port,
        workers=args.workers,
        password=password,
        auth=auth,
    )
    try:
        wait_until_up(url, server)
        logger.info(
            "MLflow tracking server: %s (artifacts in %s). %s Point runs at it: `kedro run --env team`, or "
            "MLFLOW_TRACKING_URI=%s. Ctrl-C stops it.",
            url,
            args.artifacts,
            (
                f"Logins on: user {ADMIN}, password in {server_secrets.root / 'admin.password'}; add people with "
                "`make server-user NAME=alice ROLE=trainer`."
                if auth
                else "No logins (--no-auth)."
            ),
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
