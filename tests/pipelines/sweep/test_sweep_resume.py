"""A sweep killed in the middle of a recipe (SIGKILL to ``kedro run`` and everything it started,
like a power cut): the next ``kedro run --pipeline sweep`` resumes that recipe from its last
checkpoint, not from epoch 0, and its history holds each epoch once.

The recipe runs in the node's own process here (``sweep.use_ray: false``): a Ray trial calls the
same ``train_recipe`` on the same recipe folder, so what resumes is the same code either way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from acne_detection.testing import copy_project
from tests.conftest import kedro_run

EPOCHS = 20  # enough for the kill to land between the first checkpoint and the last
RECIPES = {"sweep": {"budget_minutes": 20, "checkpoint_every": 1, "use_ray": False, "configs": [{"name": "tiny"}]}}
TINY = {"train": {"epochs": EPOCHS, "imgsz": 64, "batch": 8, "augment": {"close_mosaic": 0}}}


def _epochs_done(last: Path) -> int:
    try:
        return int(torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1)) + 1
    except Exception:  # noqa: BLE001 - a checkpoint being written: not yet
        return 0


@pytest.mark.e2e
def test_a_sweep_killed_mid_recipe_resumes_that_recipe_from_its_last_epoch(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "acne-detection", n_images=24, size=128)
    (project / "conf" / "local" / "parameters_sweep.yml").write_text(yaml.safe_dump(RECIPES))
    (project / "conf" / "local" / "parameters_train.yml").write_text(yaml.safe_dump(TINY))
    assert kedro_run(project, "--pipeline", "data").returncode == 0
    first = subprocess.Popen(
        [str(Path(sys.executable).parent / "kedro"), "run", "--pipeline", "sweep"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sweeps = project / "data" / "06_models" / "sweep"
    deadline = time.monotonic() + 300
    try:
        while True:
            if list(sweeps.glob("tiny-*/checkpoints/epoch1.pt")):  # kept once epoch 1 was saved
                break
            assert first.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the sweep and anything it started
        first.wait()
    (folder,) = sweeps.glob("tiny-*")
    done_before = _epochs_done(folder / "work" / "train" / "weights" / "last.pt")
    assert 1 <= done_before < EPOCHS, done_before
    assert not (folder / "result.json").exists()  # interrupted: not a finished recipe

    second = kedro_run(project, "--pipeline", "sweep")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    said = [line for line in (second.stdout + second.stderr).splitlines() if "Training: " in line]
    assert said and f"resuming the interrupted run after epoch {done_before} of {EPOCHS}" in said[0], said
    history = pd.read_csv(folder / "history.csv")
    assert history.epoch.astype(int).tolist() == list(range(1, EPOCHS + 1))  # each epoch once
    results = pd.read_csv(project / "data" / "08_reporting" / "sweep_results.csv").set_index("recipe")
    assert results.loc["tiny", "status"] == "trained", results.loc["tiny", "status"]  # else: why it failed
    assert (folder / "result.json").exists()
