"""A team tracking server on real parts: a real PostgreSQL cluster (run as the ``postgres``
user when the suite runs as root) and a real ``mlflow server`` process with proxied artifacts
and MLflow's basic-auth logins (users and permissions in the same cluster). Two trainers, each
from their own copy of the project, run the whole tiny pipeline at once against it with their
credentials; a third run started in one of those checkouts is refused; a viewer can read and
not write; nothing on the server names a photo of the export (``tracking.pseudonymize``); then
the registry is used from the server by ``eval`` and ``mlflow.pyfunc``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from acne_detection.ops.team_server import (
    ADMIN,
    AUTH_DATABASE,
    Auth,
    LocalPostgres,
    ServerSecrets,
    add_user,
    start_tracking_server,
    wait_until_up,
)
from acne_detection.testing import copy_project, free_port, stop_process_tree

TINY = "train.epochs=2,train.imgsz=64,train.batch=8,preview.samples=4"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    if not (shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL (initdb) is not installed: .ci/run must install it")
        pytest.skip("PostgreSQL is not installed here (initdb not found): the team server test needs it")
    # PostgreSQL refuses root, and the postgres user cannot enter pytest's private temp folders
    pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="acne-pg-")), free_port())
    pg.start()
    port = free_port()
    folder = tmp_path_factory.mktemp("server")
    artifacts, log = folder / "artifacts", folder / "server.log"
    secrets = ServerSecrets(folder / "secrets")
    auth = Auth(pg.uri(AUTH_DATABASE), secrets, folder / "auth")
    proc = start_tracking_server(pg.uri(), artifacts, port=port, password=pg.password(), log=log, auth=auth)
    url = f"http://127.0.0.1:{port}"
    saved = {n: os.environ.get(n) for n in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        wait_until_up(url, proc, seconds=180)
        users = {
            name: add_user(url, name, role, secrets, experiment="acne_detection", model="acne-detector")
            .read_text()
            .strip()
            for name, role in (("alice", "trainer"), ("bob", "trainer"), ("vera", "viewer"))
        }
        # the suite's own client is the admin
        os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=secrets.admin_password())
        yield {
            "url": url,
            "artifacts": artifacts,
            "client": MlflowClient(tracking_uri=url),
            "pg": pg,
            "users": users,
            "secrets": secrets,
            "log": log,
        }
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        stop_process_tree(proc)
        pg.stop()
        shutil.rmtree(pg.root, ignore_errors=True)


def _team_copy(root: Path) -> Path:
    """A copy of the project whose ``team`` environment reads the tiny synthetic export."""
    copy_project(root, n_images=24, size=128)
    shutil.copy(root / "conf" / "local" / "catalog.yml", root / "conf" / "team" / "catalog.yml")
    return root


def _kedro(project: Path, url: str, user: tuple[str, str], *extra: str) -> subprocess.Popen:
    """``kedro run --env team`` as ``user`` (name, password): the credentials travel in the
    variables MLflow's client reads, as conf/team/README.md tells a team member."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": user[0],
        "MLFLOW_TRACKING_PASSWORD": user[1],
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "400",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "kedro"), "run", "--env", "team", "--params", TINY, *extra],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def two_runs(server: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Alice's and Bob's copies run the whole pipeline at once; meanwhile a second run is
    started in Alice's checkout, and must be refused."""
    alice, bob = (_team_copy(tmp_path_factory.mktemp(name) / "acne-detection") for name in ("alice", "bob"))
    users = {name: (name, server["users"][name]) for name in ("alice", "bob")}
    runs = {name: _kedro(project, server["url"], users[name]) for name, project in (("alice", alice), ("bob", bob))}
    deadline = time.monotonic() + 300
    while not (alice / "data" / ".kedro_run.json").exists():
        assert runs["alice"].poll() is None and time.monotonic() < deadline, "Alice's run never took the checkout"
        time.sleep(0.2)
    intruder = _kedro(alice, server["url"], users["alice"], "--pipeline", "data")
    refused = intruder.communicate(timeout=300)[0]
    out = {name: proc.communicate(timeout=1500)[0] for name, proc in runs.items()}
    for name, proc in runs.items():
        assert proc.returncode == 0, f"{name}: {out[name][-4000:]}"
    # the runs the store holds now, before any test adds its own (the eval below does, in any order)
    experiment = server["client"].get_experiment_by_name("acne_detection")
    run_ids = [r.info.run_id for r in server["client"].search_runs([experiment.experiment_id])]
    return {"alice": alice, "bob": bob, "refused": (intruder.returncode, refused), "output": out, "run_ids": run_ids}


@pytest.mark.e2e
def test_two_concurrent_runs_lose_nothing(server: dict, two_runs: dict, tmp_path: Path) -> None:
    client = server["client"]
    experiment = client.get_experiment_by_name("acne_detection")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server, not a client path
    found = [client.get_run(run_id) for run_id in two_runs["run_ids"]]
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}  # the refused run left none
    versions = client.search_model_versions("name='acne-detector'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {r.info.run_id for r in found}  # one version per run, distinct
    weights_by_run = {}
    for run in found:
        for metric in ("train/box_loss", "train/cls_loss", "val/dfl_loss", "metrics/mAP50B", "lr/pg0"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
        for metric in ("test.mAP50", "test.recall", "data.images_read", "test.grade_accuracy"):
            assert metric in run.data.metrics, metric
        assert any(m.startswith("test.tone.") for m in run.data.metrics)
        folder = client.download_artifacts(run.info.run_id, "model", dst_path=str(tmp_path / run.info.run_id))
        weights_by_run[run.info.run_id] = hashlib.sha256((Path(folder) / "acne_yolov8n.pt").read_bytes()).hexdigest()
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        logged = {
            a.path for folder in ("eval", "data", "preview") for a in client.list_artifacts(run.info.run_id, folder)
        }
        assert {"eval/confusion_matrix.png", "eval/skin_tone_metrics.csv", "data/quarantine_report.csv"} <= logged
        # conf/team sets tracking.log_photos: false: figures made of photos stay in the checkout
        assert not {"eval/error_gallery.png", "preview/augmentation_preview.png"} & logged
    local = {
        hashlib.sha256((two_runs[name] / "data" / "06_models" / "acne_yolov8n.pt").read_bytes()).hexdigest()
        for name in ("alice", "bob")
    }
    assert set(weights_by_run.values()) == local  # each run's artifact is its own checkout's weights, intact
    assert all((two_runs[name] / "data" / "08_reporting" / "error_gallery.png").exists() for name in ("alice", "bob"))
    # the server's folder holds them (each run's copy, and the registered model's), byte-identical to the checkouts'
    stored = {hashlib.sha256(p.read_bytes()).hexdigest() for p in server["artifacts"].rglob("acne_yolov8n.pt")}
    assert stored == local
    for name in ("alice", "bob"):
        assert not (two_runs[name] / "data" / "mlflow" / "artifacts").exists()


@pytest.mark.e2e
def test_a_second_run_in_the_same_checkout_is_refused(two_runs: dict) -> None:
    code, output = two_runs["refused"]
    assert code != 0
    assert "Another kedro run is using this checkout's data folder" in " ".join(output.split())


@pytest.mark.e2e
def test_the_registry_on_the_server_serves_eval_and_pyfunc(server: dict, two_runs: dict, tmp_path: Path) -> None:
    import json

    import mlflow
    import pandas as pd

    client = server["client"]
    bobs = hashlib.sha256((two_runs["bob"] / "data/06_models/acne_yolov8n.pt").read_bytes()).hexdigest()
    bob_version = next(
        v
        for v in client.search_model_versions("name='acne-detector'")
        if hashlib.sha256(
            Path(client.download_artifacts(v.run_id, "model/acne_yolov8n.pt", str(tmp_path / v.run_id))).read_bytes()
        ).hexdigest()
        == bobs
    )
    evaluation = _kedro(
        two_runs["alice"],
        server["url"],
        ("alice", server["users"]["alice"]),
        "--pipeline",
        "eval",
        "--params",
        f"{TINY},eval.model=models:/acne-detector/{bob_version.version}",
    )
    output = evaluation.communicate(timeout=900)[0]
    assert evaluation.returncode == 0, output[-4000:]
    latest = client.search_runs(
        [client.get_experiment_by_name("acne_detection").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert latest.data.tags["model_run_id"] == bob_version.run_id  # Alice evaluated Bob's registered model
    mlflow.set_tracking_uri(server["url"])
    try:
        model = mlflow.pyfunc.load_model(f"models:/acne-detector/{bob_version.version}", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    photo = next((two_runs["alice"] / "data" / "05_model_input" / "yolo" / "test" / "images").iterdir())
    answer = model.predict(pd.DataFrame({"image": [str(photo)]}), params={"conf": 0.001})
    boxes = json.loads(answer.boxes[0])
    assert answer.lesions[0] == len(boxes) > 0 and answer.grade_name[0] in ("mild", "moderate", "severe", "very severe")


def test_the_experiment_race_between_two_starting_runs_is_tolerated(server: dict, monkeypatch, tmp_path: Path) -> None:
    """Both runs look the experiment up, find none, and create it: the second creation must not
    kill the second run (it did, in CI: RESOURCE_ALREADY_EXISTS from PostgreSQL's unique key)."""
    from mlflow.tracking import MlflowClient as Client

    from acne_detection.framework.checks import ensure_experiment

    conf = {"server": {"mlflow_tracking_uri": server["url"]}, "tracking": {"experiment": {"name": "race"}}}
    ensure_experiment(conf, tmp_path)  # the first run creates it
    monkeypatch.setattr(Client, "get_experiment_by_name", lambda self, name: None)  # the second saw none
    ensure_experiment(conf, tmp_path)
    monkeypatch.undo()
    race = server["client"].get_experiment_by_name("race")
    assert race is not None and race.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.e2e
def test_logins_keep_out_strangers_and_viewers_cannot_write(server: dict, two_runs: dict) -> None:
    import urllib.error
    import urllib.request

    from mlflow.exceptions import MlflowException

    from acne_detection.ops.team_server import _credentials

    search = f"{server['url']}/api/2.0/mlflow/experiments/search?max_results=5"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(search, timeout=10)
    assert anonymous.value.code == 401
    experiment = server["client"].get_experiment_by_name("acne_detection")
    with _credentials("vera", server["users"]["vera"]):
        viewer = MlflowClient(tracking_uri=server["url"])
        runs = viewer.search_runs([experiment.experiment_id])
        assert len(runs) >= 2 and viewer.get_registered_model("acne-detector").name == "acne-detector"
        writes = {
            "a run": lambda: viewer.create_run(experiment.experiment_id),
            "a metric on a trainer's run": lambda: viewer.log_metric(runs[0].info.run_id, "forged", 1.0),
            "a model version": lambda: viewer.create_model_version("acne-detector", runs[0].info.artifact_uri),
            "an alias": lambda: viewer.set_registered_model_alias("acne-detector", "champion", "1"),
        }
        for what, write in writes.items():
            with pytest.raises(MlflowException, match="403") as refused:
                write()
            assert "Permission denied" in str(refused.value), what
    # the command `make server-user NAME=carol ROLE=viewer` runs: the password only in its file
    port = server["url"].rsplit(":", 1)[1]
    added = subprocess.run(
        [sys.executable, "-m", "acne_detection.ops.team_server", "user", "carol", "viewer", "--port", port]
        + ["--secrets", str(server["secrets"].root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    carol = server["secrets"].user_file("carol")
    assert added.returncode == 0, added.stderr[-2000:]
    assert carol.stat().st_mode & 0o777 == 0o600 and carol.read_text().strip() not in added.stdout + added.stderr
    with _credentials("carol", carol.read_text().strip()):
        assert MlflowClient(tracking_uri=server["url"]).search_runs([experiment.experiment_id])
    with _credentials("vera", "a wrong password"), pytest.raises(MlflowException, match="401"):
        MlflowClient(tracking_uri=server["url"]).search_experiments()
    # the generated admin password is in its file (mode 600) and nowhere else: no log, no output, no tracked file
    admin = server["secrets"].admin_password()
    assert (server["secrets"].root / "admin.password").stat().st_mode & 0o777 == 0o600
    assert admin not in server["log"].read_text(errors="replace")
    assert not any(admin in text for text in two_runs["output"].values())
    from acne_detection.testing import PROJECT_ROOT

    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.split()
    for name in tracked:
        path = PROJECT_ROOT / name
        if path.is_file():
            assert admin not in path.read_text(errors="replace"), name


@pytest.mark.e2e
def test_no_photo_name_reaches_the_server(server: dict, two_runs: dict, tmp_path: Path) -> None:
    """conf/team sets tracking.pseudonymize: every artifact, param, tag and metric key on the
    server is searched for every file name of the export (and its name without extension)."""
    client = server["client"]
    export = two_runs["alice"] / "data" / "01_raw" / "synthetic"
    photos = [p for p in export.iterdir() if p.suffix in (".jpg", ".xml")]
    names = {p.name for p in photos} | {p.stem for p in photos}
    assert len(photos) >= 24
    experiment = client.get_experiment_by_name("acne_detection")
    texts = []
    for run in client.search_runs([experiment.experiment_id]):
        texts += [*run.data.params, *run.data.params.values(), *run.data.tags, *run.data.tags.values()]
        texts += list(run.data.metrics)
        folder = Path(client.download_artifacts(run.info.run_id, "", dst_path=str(tmp_path / run.info.run_id)))
        logged = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".md", ".html")]
        texts += [p.read_text(errors="replace") for p in logged]
    assert len(list(tmp_path.rglob("split_manifest.csv"))) == 2  # both trainers' full runs
    leaked = sorted(name for name in names if any(name in text for text in texts))
    assert not leaked, leaked[:5]
    import pandas as pd

    shared = [pd.read_csv(path) for path in tmp_path.rglob("split_manifest.csv")]
    for manifest in shared:  # every photo named, by its pseudonym
        assert manifest.image_id.str.fullmatch(r"p-[0-9a-f]{16}\.jpg").all()
    # each checkout keeps the names, and its own key's mapping joins them to one of the shared manifests
    for name in ("alice", "bob"):
        local = pd.read_csv(two_runs[name] / "data" / "03_primary" / "split_manifest.csv")
        assert set(local.image_id) == {p.name for p in photos if p.suffix == ".jpg"}
        mapping = pd.read_csv(two_runs[name] / "data" / "08_reporting" / "pseudonyms.csv")
        joined = dict(zip(mapping.name, mapping.pseudonym))
        assert sum(set(m.image_id) == {joined[i] for i in local.image_id} for m in shared) == 1, name
