"""The pages a user opens, loaded in headless Chromium (Debian's ``chromium``; ``.ci/run``
installs it where missing): kedro-viz showing the DAG. (The MLflow UI on a real run is loaded
in ``tests/test_end_to_end.py``, where the run is.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from acne_detection.testing import copy_project, free_port, stop_process_tree
from tests.conftest import headless_dom


@pytest.mark.e2e
def test_kedro_viz_renders_the_four_pipelines(tmp_path: Path) -> None:
    port = free_port()  # below 32768 (kedro-viz refuses ports above the registered range, 49151)
    project = copy_project(tmp_path / "acne-detection", n_images=24, size=128)
    log = (tmp_path / "viz.log").open("wb")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "kedro"),
            "viz",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-browser",
        ],
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "viz.log").read_text()[-3000:]
                time.sleep(1)
        dom = headless_dom(url)
    finally:
        stop_process_tree(server)
    # one node of each stage of the default DAG, as rendered (not merely served)
    for name in (
        "validate_export",
        "measure_skin_tones",
        "preview_augmentations",
        "train_detector",
        "register_model",
        "evaluate_by_skin_tone",
        "report_headline",
    ):
        assert name in dom, name
    assert "raw_export" in dom and "trained_weights" in dom  # datasets are drawn too
