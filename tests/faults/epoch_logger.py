"""A training run's tracking, without the training: the child process ``test_tracking_restart``
breaks the server under. It opens a run, then logs one epoch per ``interval`` seconds through the
project's own per-epoch logger (``LiveMetrics.on_fit_epoch_end``, one ``log_batch`` per epoch, as
Ultralytics calls it), then ends the run FINISHED. Where the store cannot be reached, it stops as
a run does (``hooks.RunReport``): it says why, and tries to mark the run FAILED.

``python -m tests.faults.epoch_logger URI EPOCHS INTERVAL`` (from the project root). Prints
``run ID``, then ``epoch N logged in S s`` per epoch, then ``FINISHED``.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from acne_detection.framework.checks import set_client_retries
from acne_detection.framework.live_metrics import LiveMetrics


def _trainer(epoch: int) -> SimpleNamespace:
    """What ``live_metrics.epoch_metrics`` reads from an Ultralytics trainer after an epoch."""
    return SimpleNamespace(
        epoch=epoch,
        tloss=(1.0 / (epoch + 1), 2.0 / (epoch + 1)),
        label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": loss[0], f"{prefix}/cls_loss": loss[1]},
        metrics={"metrics/mAP50(B)": epoch / 100, "val/box_loss": 1.5 / (epoch + 1)},
        lr={"lr/pg0": 0.01},
        epoch_time=1.0,
        train_loader=SimpleNamespace(dataset=range(8)),
    )


def main(uri: str, epochs: int, interval: float) -> int:
    set_client_retries()  # as every kedro run does first
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run("0", run_name="fault-injection").info.run_id
    print(f"run {run_id}", flush=True)
    live = LiveMetrics(run_id, uri, tags={"device": "cpu"})
    try:
        live.on_train_start(_trainer(0))
        for epoch in range(epochs):
            started = time.monotonic()
            live.on_train_epoch_start(_trainer(epoch))
            live.on_fit_epoch_end(_trainer(epoch))
            print(f"epoch {epoch + 1} logged in {time.monotonic() - started:.2f} s", flush=True)
            time.sleep(interval)
        client.set_terminated(run_id, status="FINISHED")
    except Exception as err:  # noqa: BLE001 - reported, and the run marked, as RunReport does
        print(f"The run stopped: {err}", flush=True)
        try:
            client.set_terminated(run_id, status="FAILED")
            print("marked FAILED", flush=True)
        except Exception as again:  # noqa: BLE001
            print(f"could not mark the run FAILED: {again}", flush=True)
        return 1
    print("FINISHED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
