"""Two people, two copies of the project, one tracking store, two ``kedro run`` at once: is
anything lost? Measured against a team server (PostgreSQL + ``mlflow server``) and against
one shared SQLite file, with one run alone as the baseline for time.

``python -m benchmarks.concurrency`` (a few minutes; needs PostgreSQL for the server row).
Rows go into ``benchmarks/RESULTS.md`` through ``benchmarks.run.merge_results``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from acne_detection.ops.team_server import LocalPostgres, start_tracking_server, wait_until_up
from acne_detection.testing import copy_project
from benchmarks.run import merge_results

TINY = "train.epochs=3,train.imgsz=64,train.batch=8,preview.samples=4"
EPOCH_METRICS = ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "metrics/mAP50B", "lr/pg0")


def _copy(root: Path, env: str) -> Path:
    """A copy of the project on 24 synthetic photos (128 px), as a colleague's checkout, its
    data configured for environment ``env``."""
    copy_project(root, n_images=24, size=128)
    if env != "local":
        shutil.copy(root / "conf" / "local" / "catalog.yml", root / "conf" / env / "catalog.yml")
    return root


def _runs(projects: list[Path], uri: str, env: str) -> tuple[float, list[int], list[str]]:
    """Start one ``kedro run`` per project at once; their wall time, exit codes and output tails."""
    kedro = str(Path(sys.executable).parent / "kedro")
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [kedro, "run", "--env", env, "--params", TINY],
            cwd=p,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        )
        for p in projects
    ]
    outs = [p.communicate()[0] for p in procs]
    return time.perf_counter() - start, [p.returncode for p in procs], [o[-1500:] for o in outs]


def _audit(uri: str) -> dict[str, object]:
    """What the store holds after the runs: finished runs, complete metric histories, artifacts, versions."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("acne_detection")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    steps_expected = len(EPOCH_METRICS) * 3 * len(runs)
    steps = sum(len(client.get_metric_history(r.info.run_id, m)) for r in runs for m in EPOCH_METRICS)
    weights = sum(any(a.path.endswith(".pt") for a in client.list_artifacts(r.info.run_id, "model")) for r in runs)
    versions = {v.version for v in client.search_model_versions("name='acne-detector'")}
    return {
        "finished": sum(r.info.status == "FINISHED" for r in runs),
        "runs": len(runs),
        "steps": steps,
        "steps_expected": steps_expected,
        "weights": weights,
        "versions": len(versions),
    }


def once(seconds: float) -> dict[str, float]:
    """One measurement, in the results table's shape (median, min, max)."""
    return {"median_s": seconds, "min_s": seconds, "max_s": seconds}


def _row(store: str, alone: float, together: float, codes: list[int], audit: dict) -> dict:
    lost = audit["steps_expected"] - audit["steps"]
    note = (
        f"exit codes {codes}; {audit['finished']}/{audit['runs']} runs finished, metric points "
        f"{audit['steps']}/{audit['steps_expected']} ({lost} lost), weights logged {audit['weights']}/2, "
        f"registered versions {audit['versions']} distinct"
    )
    return {
        "benchmark": f"two concurrent runs, {store}",
        "baseline": "the same run alone",
        "baseline_s": once(alone),
        "ours": "two kedro run at once from two checkouts",
        "ours_s": once(together),
        "ratio": together / alone,
        "note": note,
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # one shared SQLite file: new (the two runs create it), then already created
        alone, _, _ = _runs([_copy(tmp / "solo-sqlite", "local")], f"sqlite:///{tmp / 'solo.db'}", "local")
        for label, ready in (("one new SQLite file", False), ("one existing SQLite file", True)):
            shared = tmp / f"shared-{ready}"
            shared.mkdir()
            uri = f"sqlite:///{shared / 'mlflow.db'}"
            if ready:
                MlflowClient(tracking_uri=uri).search_experiments()  # creates the schema
            projects = [_copy(tmp / f"{n}-sqlite-{ready}", "local") for n in ("alice", "bob")]
            together, codes, tails = _runs(projects, uri, "local")
            rows.append(_row(label, alone, together, codes, _audit(uri)))
            print(rows[-1], *tails, sep="\n")
        # team server: PostgreSQL + mlflow server with proxied artifacts
        pg = LocalPostgres(Path(tempfile.mkdtemp(prefix="acne-pg-bench-")), 5439)
        pg.start()
        server = start_tracking_server(
            pg.uri(), tmp / "artifacts", port=5059, password=pg.password(), log=tmp / "server.log"
        )
        url = "http://127.0.0.1:5059"
        try:
            wait_until_up(url, server)
            alone_env = _copy(tmp / "solo-team", "team")
            alone, _, _ = _runs([alone_env], url, "team")
            client = MlflowClient(tracking_uri=url)
            for run in client.search_runs([client.get_experiment_by_name("acne_detection").experiment_id]):
                client.delete_run(run.info.run_id)  # the audit counts the two concurrent runs only
            for version in client.search_model_versions("name='acne-detector'"):
                client.delete_model_version("acne-detector", version.version)
            together, codes, tails = _runs([_copy(tmp / f"{n}-team", "team") for n in ("alice", "bob")], url, "team")
            rows.append(_row("team server (PostgreSQL + mlflow server)", alone, together, codes, _audit(url)))
            print(rows[-1], *tails, sep="\n")
        finally:
            server.terminate()
            server.wait(timeout=30)
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)
    merge_results(rows)


if __name__ == "__main__":
    main()
