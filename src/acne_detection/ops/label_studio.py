"""Label Studio for the review loop, on 127.0.0.1, in its own virtual environment.

``make labelstudio`` runs ``python -m acne_detection.ops.label_studio start``:

* Label Studio (``label-studio`` 1.23.2) is installed once into ``.venv-labelstudio/`` beside
  the project's ``.venv``, never into it: its SDK replaces OpenCV's ``cv2`` with the headless
  build and downgrades numpy, and the server pins ``pyarrow<25``. The project talks to it over
  its REST API with a plain HTTP client (``acne_detection.datasets.label_studio``).
* It listens on 127.0.0.1 only, signup is disabled, its analytics, version check and Sentry
  are off, and photos are served read-only from their folder through its local-files storage
  (``LOCAL_FILES_DOCUMENT_ROOT``: ``data/01_raw`` unless ``--document-root`` says otherwise),
  never uploaded or copied.
* The admin (``ADMIN_EMAIL``) gets a generated password and a personal access token, each in a
  file of mode 600 under ``data/labelstudio/secrets/`` (``data/`` is git-ignored); neither is
  printed. The ``review`` pipeline reads the token from that file.
* Its database is SQLite under ``data/labelstudio/server/``, or with ``--database postgres``
  a ``labelstudio`` database in the team server's PostgreSQL cluster (``make server``'s, under
  ``data/team/``).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

VERSION = "1.23.2"
DEFAULT_PORT = 8080
HOST = "127.0.0.1"
ADMIN_EMAIL = "admin@acne-detection.local"
_TOKEN_SNIPPET = (
    "from users.models import User\n"
    "from jwt_auth.models import LSAPIToken\n"
    "user = User.objects.get(email={email!r})\n"
    "print('PAT=' + LSAPIToken.for_user(user).get_full_jwt())\n"
)


@dataclass(frozen=True)
class LabelStudioHome:
    """Where Label Studio lives for this project.

    Args:
        root: its data folder (``data/labelstudio``): ``server/`` (the database and uploads),
            ``secrets/`` (password and token, mode 600), ``server.log``.
        venv: its own virtual environment (``.venv-labelstudio``).
    """

    root: Path
    venv: Path

    @property
    def program(self) -> Path:
        return self.venv / "bin" / "label-studio"

    @property
    def token_file(self) -> Path:
        return self.root / "secrets" / "token"

    @property
    def password_file(self) -> Path:
        return self.root / "secrets" / "admin.password"

    def install(self) -> None:
        """Create the virtual environment and install Label Studio into it, once."""
        if self.program.exists():
            return
        logger.info("Installing label-studio %s into %s (about 1 GB, once)", VERSION, self.venv)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True)
        subprocess.run(
            [str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={VERSION}"], check=True
        )

    def _secret(self, path: Path, make: Callable[[], str]) -> str:
        """The secret in ``path``, made by ``make`` the first time (its folder and file owner-only)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        if not path.exists():
            path.write_text(make() + "\n", encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()

    def password(self) -> str:
        return self._secret(self.password_file, lambda: secrets.token_urlsafe(18))

    def environment(self, document_root: Path, database: str = "sqlite") -> dict[str, str]:
        """The server's environment: privacy off-switches, local files, signup off, the database."""
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.root / "server"),
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root.resolve()),
            "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
            "LABEL_STUDIO_PASSWORD": self.password(),
        }
        env.pop("LABEL_STUDIO_USER_TOKEN", None)
        if database == "postgres":
            env.update(_postgres_environment(self.root.parent / "team"))
        else:
            env["DJANGO_DB"] = "sqlite"
        return env

    def start(self, *, port: int, document_root: Path, database: str = "sqlite") -> subprocess.Popen:
        """Start the server (it migrates its database on first start); its output goes to ``server.log``."""
        self.install()
        (self.root / "server").mkdir(parents=True, exist_ok=True)
        log = (self.root / "server.log").open("ab")
        return subprocess.Popen(
            [
                str(self.program),
                "start",
                "--no-browser",
                "--internal-host",
                HOST,
                "--port",
                str(port),
                "--data-dir",
                str(self.root / "server"),
            ],
            env=self.environment(document_root, database),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )

    def token(self, document_root: Path, database: str = "sqlite") -> str:
        """The admin's personal access token (created once, through ``label-studio shell``)."""
        if self.token_file.exists():
            return self.token_file.read_text(encoding="utf-8").strip()
        done = subprocess.run(
            [str(self.program), "shell"],
            input=_TOKEN_SNIPPET.format(email=ADMIN_EMAIL),
            env=self.environment(document_root, database),
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=300,
            check=False,
        )
        found = [line.split("PAT=", 1)[1].strip() for line in done.stdout.splitlines() if "PAT=" in line]
        if not found:
            raise RuntimeError(f"could not create Label Studio's access token: {(done.stderr or done.stdout)[-800:]}")
        return self._secret(self.token_file, lambda: found[-1])


def _postgres_environment(team_root: Path) -> dict[str, str]:
    from acne_detection.ops.team_server import DEFAULT_HOST, ROLE, LocalPostgres

    cluster = LocalPostgres(root=team_root)
    cluster.start()
    cluster.ensure_databases("labelstudio")
    return {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "labelstudio",
        "POSTGRE_USER": ROLE,
        "POSTGRE_PASSWORD": cluster.password(),
        "POSTGRE_HOST": DEFAULT_HOST,
        "POSTGRE_PORT": str(cluster.port),
    }


def wait_until_up(url: str, server: subprocess.Popen, *, seconds: float = 300) -> None:
    """Wait for ``/health`` (about 45 s on a first start, which migrates the database; its log: server.log)."""
    from acne_detection.ops.team_server import wait_until_up as wait_for_health

    wait_for_health(url, server, seconds=seconds, name="Label Studio (see data/labelstudio/server.log)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acne_detection.ops.label_studio", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["install", "start"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABEL_STUDIO_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--document-root", type=Path, default=Path("data/01_raw"), help="the folder photos are served from"
    )
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    home = LabelStudioHome(root=Path("data/labelstudio").resolve(), venv=Path(".venv-labelstudio").resolve())
    home.install()
    if args.command == "install":
        return 0
    args.document_root.mkdir(parents=True, exist_ok=True)
    server = home.start(port=args.port, document_root=args.document_root, database=args.database)
    url = f"http://{HOST}:{args.port}"

    def _stop(signum: int, frame: object) -> None:
        os.killpg(server.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    wait_until_up(url, server)
    home.token(args.document_root, args.database)
    logger.info(
        "Label Studio: %s  (log in as %s; password in %s, API token in %s; photos served from %s). Ctrl-C stops it.",
        url,
        ADMIN_EMAIL,
        home.password_file,
        home.token_file,
        args.document_root.resolve(),
    )
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
