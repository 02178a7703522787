"""A runtime is one entry in ``core.runtimes.RUNTIMES``: with a stand-in entry (TorchScript, which
Ultralytics exports offline with torch alone), the settings accept it, predict's pipeline predicts
through it, the served model serves its registered export, and the benchmark measures it."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from PIL import Image

from acne_detection.core.params import PredictParams
from acne_detection.core.runtimes import RUNTIMES, Runtime, export_runtime
from acne_detection.datasets.photo_folder import Photos
from acne_detection.model.predictor import ModelChoice
from acne_detection.model.served import YoloDetector
from acne_detection.pipelines.predict.nodes import predict_new_photos

ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"
STAND_IN = Runtime(format="torchscript", target="model.torchscript", packages=("torch",))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(RUNTIMES, "torchscript", STAND_IN)
    return "torchscript"


def test_a_runtime_added_as_one_table_entry_is_used_by_predict_and_the_served_model(
    stand_in: str, coco_model, tmp_path: Path
) -> None:
    weights = tmp_path / "model" / "yolov8n.pt"
    weights.parent.mkdir()
    shutil.copy(coco_model.ckpt_path, weights)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        Image.open(ASSETS / name).convert("RGB").resize((320, 320)).save(photos / name)
    predict = PredictParams(runtime=stand_in, imgsz=320, slicing="never")  # the settings know it from the table
    with pytest.raises(ValueError, match=r"runtime must be one of (.+), got 'tensorrt'") as refused:
        PredictParams(runtime="tensorrt")
    named = re.search(r"one of (.+), got", str(refused.value)).group(1).split(", ")
    assert sorted(named) == sorted(["torch", "onnx", "openvino", "openvino-int8", "torchscript"])  # in any order
    choice = ModelChoice.of_checkpoint(weights, predict, threshold=0.3, source="test")
    folder = Photos(root=photos, photos=sorted(photos.glob("*.jpg")), unsupported=[], not_photos=[], other=[])
    lesions, table = predict_new_photos(folder, choice.model_dump(mode="json"), predict)
    made = sorted((weights.parent / "exports").glob("*-torchscript-320/model.torchscript"))
    assert len(made) == 1  # predict exported the weights for the stand-in, through the table's entry
    counts = lesions.groupby("image").size().reindex(["bus.jpg", "zidane.jpg"], fill_value=0)
    assert counts.sum() >= 2 and set(table.status) == {"predicted"}

    # the served model, registered with the export register makes through the same entry
    exported = export_runtime(weights, stand_in, 320, cache=tmp_path / "registered")
    served = YoloDetector()
    artifacts = {"weights": str(weights), "runtime_model": str(exported)}
    served.load_context(mlflow.pyfunc.PythonModelContext(artifacts, choice.record.to_config()))
    assert served.predictor.runtime == stand_in and Path(str(served.predictor.detector.model_name)) == exported
    request = pd.DataFrame({"image_b64": [base64.b64encode((photos / n).read_bytes()).decode() for n in counts.index]})
    answer = served.predict(None, request)
    assert answer.lesions.tolist() == counts.tolist()  # the same predictor, the same answer


def test_the_benchmark_measures_every_runtime_of_the_table(
    stand_in: str, coco_model, tmp_path: Path, monkeypatch
) -> None:
    from acne_detection.core.calibration import Calibration
    from benchmarks.predict import bench_slicing, measured_runtimes

    assert stand_in in measured_runtimes(None) and "openvino-int8" not in measured_runtimes(None)
    for name in ("onnx", "openvino", "openvino-int8"):  # only the baseline and the stand-in, to keep it short
        monkeypatch.delitem(RUNTIMES, name)
    weights = tmp_path / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    rows = bench_slicing(weights, tmp_path, 1, (Calibration.from_dict(None), 0.25, 0.7), None, size=(480, 640))
    assert any("torchscript" in row["benchmark"] and row["ours_s"]["median_s"] > 0 for row in rows)
