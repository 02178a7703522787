"""The one prediction path: photo decoding, sliced inference's merging across tile edges, and
big or unusual photos, with a real COCO-pretrained YOLOv8n on Ultralytics' own sample photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from acne_detection.core.inference import InferenceSettings, load_photo, predict_boxes
from tests.conftest import PROJECT_ROOT

ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"


@pytest.fixture(scope="module")
def runtime_models(coco_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The COCO model on every runtime ``predict.runtime`` offers, exported as ``load_detector``
    exports them (INT8 calibrated on a two-photo training split of Ultralytics' own photos)."""
    import shutil

    from acne_detection.core.runtimes import RUNTIMES, load_detector

    root = tmp_path_factory.mktemp("runtimes")
    (root / "images" / "train").mkdir(parents=True)
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(ASSETS / name, root / "images" / "train" / name)
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/train", "names": coco_model.names})
    )
    weights = root / "yolov8n.pt"
    shutil.copy(coco_model.ckpt_path, weights)
    return {
        runtime: load_detector(weights, runtime=runtime, imgsz=320, calibration_data=root / "data.yaml")[0]
        for runtime in RUNTIMES
    }


def _served_config(coco_model, predict: dict, threshold: float) -> dict:
    """A registered model's configuration: its record (``ModelRecord.to_config``), as register logs it."""
    from acne_detection.core.files import sha256_of
    from acne_detection.core.grading import GradingRule
    from acne_detection.model.record import ModelRecord

    record = ModelRecord.default(
        sha256_of(Path(coco_model.ckpt_path)),
        GradingRule(),
        threshold=threshold,
        threshold_rule="max_f1",
        predict=predict,
    )
    return record.to_config()


def _bus_canvas(offset: int, background=(120, 120, 120)) -> tuple[Image.Image, Image.Image]:
    small = Image.open(ASSETS / "bus.jpg").convert("RGB").resize((270, 360))
    canvas = Image.new("RGB", (1200, 1200), background)
    canvas.paste(small, (offset, offset))
    return small, canvas


@pytest.mark.parametrize("runtime", ["torch", "onnx", "openvino", "openvino-int8"])
@pytest.mark.parametrize("offset", [190, 220])
def test_an_object_cut_by_a_tile_edge_is_counted_once(runtime_models, runtime: str, offset: int) -> None:
    """Ultralytics' bus.jpg shrunk so people are ~170 px tall (lesions too are much smaller than
    a tile), pasted so that a person straddles the edge of the first 320 px tile (x = 320,
    and the next tile's start at x = 256): every person the plain prediction finds is found
    once by the sliced one, not once per tile it touches, on every runtime."""
    from acne_detection.core.metrics import box_iou

    model = runtime_models[runtime]
    small, canvas = _bus_canvas(offset)
    plain = predict_boxes(model, [("s", np.asarray(small))], InferenceSettings(imgsz=320, conf=0.4))
    sliced = predict_boxes(
        model, [("c", np.asarray(canvas))], InferenceSettings(imgsz=320, conf=0.4, slicing="always", overlap=0.2)
    )
    corners = ["x_min", "y_min", "x_max", "y_max"]
    people = plain[plain["class"] == "person"][corners].to_numpy() + offset
    found = sliced[sliced["class"] == "person"][corners].to_numpy()
    assert len(people) == 3
    assert any(x0 < edge < x1 for x0, _, x1, _ in people for edge in (256, 320))  # one is cut by a tile edge
    overlaps = box_iou(people, found) > 0.3
    assert overlaps.sum(axis=1).tolist() == [1, 1, 1]  # each person once


def _sahi_reference(model, pixels: np.ndarray, settings: InferenceSettings) -> list[tuple]:
    """SAHI's own ``get_sliced_prediction`` with its Ultralytics wrapper, as this project called it
    before it sliced with SAHI's pieces: the reference the own path must equal."""
    from sahi.models.ultralytics import UltralyticsDetectionModel
    from sahi.predict import get_sliced_prediction

    wrapper = UltralyticsDetectionModel(
        model=model,
        confidence_threshold=settings.conf,
        device=settings.device,
        image_size=settings.imgsz,
        category_mapping={str(k): v for k, v in model.names.items()},
    )
    result = get_sliced_prediction(
        pixels,
        wrapper,
        slice_height=settings.tile or settings.imgsz,
        slice_width=settings.tile or settings.imgsz,
        overlap_height_ratio=settings.overlap,
        overlap_width_ratio=settings.overlap,
        perform_standard_pred=True,
        postprocess_type="GREEDYNMM",
        postprocess_match_metric=settings.merge_metric,
        postprocess_match_threshold=settings.merge_threshold,
        batch_size=settings.batch,
        verbose=0,
    )
    found = sorted(result.object_prediction_list, key=lambda p: -p.score.value)
    return sorted(
        (int(p.category.id), round(p.score.value, 4), *(round(v, 2) for v in p.bbox.to_xyxy())) for p in found
    )


def _skin_canvas(size: tuple[int, int]) -> np.ndarray:
    from acne_detection.core.synthetic import _skin

    side = max(size)
    skin = cv2.resize(_skin(np.random.default_rng(4), side // 4, tone_index=2), (side, side))
    return (np.clip(skin[: size[1], : size[0]], 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("conf", "background"), [(0.3, "grey"), (0.05, "grey"), (0.3, "skin")])
def test_the_own_sliced_path_equals_sahis_get_sliced_prediction(coco_model, conf: float, background: str) -> None:
    """SAHI's tile grid and merging called directly give what ``get_sliced_prediction`` gives, box
    for box and score for score: with greedy NMM, with the NMS SAHI switches to below
    confidence 0.1, and with background skipping on, on a photo where nothing is skipped
    (skin all over)."""
    small = Image.open(ASSETS / "bus.jpg").convert("RGB").resize((405, 540))
    base = np.asarray(_bus_canvas(0)[1]) if background == "grey" else _skin_canvas((1000, 900))
    pixels = base.copy()
    pixels[200:740, 300:705] = np.asarray(small)
    settings = InferenceSettings(
        imgsz=320, conf=conf, slicing="always", batch=4, skip_background=background == "skin", max_det=10_000
    )
    ours = predict_boxes(coco_model, [("p", pixels)], settings)
    mine = sorted(
        (int(r.class_id), round(r.confidence, 4), *(round(v, 2) for v in (r.x_min, r.y_min, r.x_max, r.y_max)))
        for r in ours.itertuples()
    )
    reference = _sahi_reference(coco_model, pixels, settings)
    assert len(reference) >= 4  # people and the bus, at least
    assert mine == reference


def _count_passes(model, monkeypatch) -> list[int]:
    """Images per forward pass of ``model.predict`` from now on (the real call, counted)."""
    passes: list[int] = []
    real = model.predict

    def counted(source, **kwargs):
        passes.append(len(source) if isinstance(source, list) else 1)
        return real(source, **kwargs)

    monkeypatch.setattr(model, "predict", counted)
    return passes


def test_background_tiles_are_skipped_and_a_lesion_on_the_skin_edge_is_kept(coco_model, monkeypatch) -> None:
    """A photo whose left half is skin and right half a white wall: with skipping, the tiles of
    wall alone are not predicted (fewer forward passes, observed), and the people pasted across
    the skin's edge are found exactly as without skipping."""
    pixels = _skin_canvas((1600, 1200))
    pixels[:, 800:] = (236, 234, 230)  # a white wall
    small = np.asarray(Image.open(ASSETS / "bus.jpg").convert("RGB").resize((270, 360)))
    pixels[400:760, 700:970] = small  # across the skin's edge at x = 800
    passes = _count_passes(coco_model, monkeypatch)
    results = {}
    for skip in (False, True):
        passes.clear()
        settings = InferenceSettings(imgsz=320, conf=0.4, slicing="always", skip_background=skip)
        results[skip] = (predict_boxes(coco_model, [("p", pixels)], settings), sum(passes))
    (everything, n_all), (skipped, n_skipped) = results[False], results[True]
    # 320 px tiles at 20 % overlap: 6 columns x 5 rows, + the whole photo
    assert n_all == 31
    # the wall's tiles beyond the overlap's reach of the skin are not predicted
    assert n_skipped < n_all - 6
    assert (everything["class"] == "person").sum() >= 2
    corners = ["class", "x_min", "y_min", "x_max", "y_max"]
    pd.testing.assert_frame_equal(skipped[corners].round(1), everything[corners].round(1))


def test_a_path_bytes_and_pixels_give_the_same_boxes_in_the_photo_frame(coco_model, tmp_path: Path) -> None:
    photo = ASSETS / "zidane.jpg"
    settings = InferenceSettings(imgsz=320, conf=0.3)
    by_path = predict_boxes(coco_model, [("z", photo)], settings)
    pixels, scale = load_photo(photo)
    by_pixels = predict_boxes(coco_model, [("z", pixels)], settings)
    by_bytes = predict_boxes(coco_model, [("z", photo.read_bytes())], settings)
    assert scale == 1.0 and len(by_path) >= 2
    corners = ["x_min", "y_min", "x_max", "y_max"]
    # decoded by Pillow vs OpenCV: the same people, boxes within a few pixels
    assert len(by_pixels) == len(by_path)
    assert np.abs(by_pixels[corners].to_numpy() - by_path[corners].to_numpy()).max() < 4
    # bytes of a 1280 px JPEG predicted at 320 are decoded at half size (libjpeg's DCT scaling), and
    # the boxes scaled back: the same people, in the full photo's frame, within 2.5 % of its width
    assert len(by_bytes) == len(by_path)
    assert np.abs(by_bytes[corners].to_numpy() - by_path[corners].to_numpy()).max() < 0.025 * 1280


def test_exif_rotated_grayscale_rgba_and_16_bit_photos_are_predicted_as_displayed(coco_model, tmp_path: Path) -> None:
    base = Image.open(ASSETS / "zidane.jpg")  # 1280 x 720, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; displayed by turning 90 degrees clockwise
    base.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif)
    base.convert("L").save(tmp_path / "gray.png")
    base.convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)).save(tmp_path / "deep16.png")
    photos = [(p.name, p.read_bytes()) for p in sorted(tmp_path.iterdir())]
    found = predict_boxes(coco_model, photos, InferenceSettings(imgsz=320, conf=0.3))
    assert set(found.image) == {"rotated.jpg", "gray.png", "rgba.png", "deep16.png"}
    rotated = found[found.image == "rotated.jpg"]
    assert rotated.x_max.max() <= 1280 and rotated.y_max.max() <= 720  # boxes in the displayed 1280 x 720 frame
    assert load_photo(tmp_path / "rotated.jpg")[0].shape == (720, 1280, 3)
    assert load_photo(tmp_path / "deep16.png")[0].dtype == np.uint8


def test_a_huge_jpeg_is_decoded_reduced_unless_sliced(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (12000, 9000), (200, 150, 120)).save(big, quality=70)
    pixels, scale = load_photo(big, max_side=416)
    assert pixels.shape == (1125, 1500, 3) and scale == 8.0  # libjpeg's 1/8 scale: 40 x less memory


@pytest.fixture
def observed_slicing(monkeypatch) -> dict[str, list]:
    """SAHI's real slicing and merging, observed: each call's tile size and tile count, and the
    merge's metric and threshold (greedy NMM, or the NMS SAHI itself switches to when the model's
    confidence floor is under 0.1, as the served model's is: it keeps candidates for the grade
    probabilities)."""
    import sahi.postprocess.combine
    import sahi.slicing

    seen: dict[str, list] = {"tiles": [], "merge": []}
    real_slice = sahi.slicing.get_slice_bboxes

    def get_slice_bboxes(*args, **kwargs):
        result = real_slice(*args, **kwargs)
        seen["tiles"].append((kwargs["slice_height"], kwargs["slice_width"], len(result)))
        return result

    def observed(real):
        def merge(**kwargs):
            seen["merge"].append((kwargs["match_metric"], kwargs["match_threshold"]))
            return real(**kwargs)

        return merge

    monkeypatch.setattr(sahi.slicing, "get_slice_bboxes", get_slice_bboxes)
    for kind in ("GreedyNMMPostprocess", "NMSPostprocess"):
        monkeypatch.setattr(sahi.postprocess.combine, kind, observed(getattr(sahi.postprocess.combine, kind)))
    return seen


SLICING_CONF = "predict:\n  slicing: always\n  tile: 96\n  merge_metric: IOU\n  merge_threshold: 0.3\n"


def test_tile_and_merge_settings_set_only_in_config_reach_the_slicing(
    coco_model, tmp_path: Path, observed_slicing: dict
) -> None:
    """``predict.tile``, ``merge_metric`` and ``merge_threshold`` written only in a conf/local file
    reach SAHI's slicing and merging as predict builds its settings (the real calls, observed)."""
    import shutil

    from kedro.config import OmegaConfigLoader

    from acne_detection.core.params import parse

    shutil.copytree(PROJECT_ROOT / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "local" / "parameters_predict.yml").write_text(SLICING_CONF)
    loader = OmegaConfigLoader(str(tmp_path / "conf"), base_env="base", default_run_env="local")
    settings = InferenceSettings.from_params(
        parse("predict", loader["parameters"]["predict"]), imgsz=128, conf=0.3, nms_iou=0.7
    )
    photo = np.asarray(Image.open(ASSETS / "bus.jpg").convert("RGB").resize((300, 400)))
    predict_boxes(coco_model, [("bus", photo)], settings)
    # 96 px tiles at 20 % overlap: a step of 77 px, 4 columns x 5 rows on a 300 x 400 photo
    assert observed_slicing["tiles"] == [(96, 96, 20)]
    assert observed_slicing["merge"] == [("IOU", 0.3)]


def test_the_served_model_slices_and_merges_by_the_predict_settings_registered_with_it(
    coco_model, tmp_path: Path, observed_slicing: dict
) -> None:
    """The register node writes ``predict``'s slicing settings into the model's configuration and
    the served model builds its settings from them, as predict does; a request may still choose
    the slicing, and a bad choice is a 400 naming it."""
    import base64

    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from acne_detection.core.params import SERVED_PREDICT_SETTINGS, PredictParams
    from acne_detection.model.served import YoloDetector

    predict = PredictParams(**yaml.safe_load(SLICING_CONF)["predict"])
    config = _served_config(coco_model, predict.model_dump(include=SERVED_PREDICT_SETTINGS), 0.3)
    served = YoloDetector()
    served.load_context(mlflow.pyfunc.PythonModelContext({"weights": coco_model.ckpt_path}, config))
    photo = tmp_path / "bus.jpg"
    Image.open(ASSETS / "bus.jpg").convert("RGB").resize((300, 400)).save(photo)
    request = pd.DataFrame({"image_b64": [base64.b64encode(photo.read_bytes()).decode()]})
    served.predict(None, request, {"imgsz": 128})
    assert observed_slicing["tiles"] == [(96, 96, 20)] and observed_slicing["merge"] == [("IOU", 0.3)]
    served.predict(None, request, {"imgsz": 128, "slicing": "never"})  # the request's choice wins
    assert len(observed_slicing["tiles"]) == 1
    with pytest.raises(MlflowException, match="slicing"):
        served.predict(None, request, {"slicing": "sometimes"})


def test_the_served_model_runs_on_the_registered_runtime_and_skips_background_tiles(
    runtime_models, coco_model, tmp_path: Path, monkeypatch
) -> None:
    """A model registered with ``predict.runtime: openvino`` and ``skip_background: true`` serves
    from the OpenVINO export logged beside its weights (``runtime_model``), through the same
    batched, skipping path as predict: the same boxes as ``predict_boxes`` on that export, in
    fewer forward passes than tiles."""
    import base64

    import mlflow.pyfunc

    from acne_detection.core.params import SERVED_PREDICT_SETTINGS, PredictParams
    from acne_detection.core.runtimes import export_runtime
    from acne_detection.model.served import YoloDetector

    predict = PredictParams(runtime="openvino", slicing="always", skip_background=True)
    config = _served_config(coco_model, predict.model_dump(include=SERVED_PREDICT_SETTINGS), 0.4)
    exported = export_runtime(Path(coco_model.ckpt_path), "openvino", 320, cache=tmp_path)  # as register makes it
    served = YoloDetector()
    artifacts = {"weights": coco_model.ckpt_path, "runtime_model": str(exported)}
    served.load_context(mlflow.pyfunc.PythonModelContext(artifacts, config))
    detector = served.predictor.detector
    assert str(detector.ckpt_path or detector.model_name).endswith("_openvino_model")
    pixels = _skin_canvas((1600, 1200))
    pixels[:, 800:] = (236, 234, 230)  # a white wall
    pixels[400:760, 700:970] = np.asarray(Image.open(ASSETS / "bus.jpg").convert("RGB").resize((270, 360)))
    photo = tmp_path / "half.png"
    Image.fromarray(pixels).save(photo)
    passes = _count_passes(detector, monkeypatch)
    request = pd.DataFrame({"image_b64": [base64.b64encode(photo.read_bytes()).decode()]})
    answer = served.predict(None, request, {"imgsz": 320})  # the size it was exported at (the COCO model's is 640)
    from acne_detection.core.calibration import Calibration

    raw = Calibration.from_dict(None)  # none registered: confidences as the detector gives them
    settings = InferenceSettings.from_params(predict, imgsz=320, conf=raw.detector_floor(0.4), nms_iou=0.7)
    expected = raw.split(predict_boxes(runtime_models["openvino"], [("#0", pixels)], settings), 0.4)[0]
    served_boxes = pd.DataFrame(json.loads(answer.boxes[0]))
    assert len(served_boxes) == len(expected) >= 2
    assert np.allclose(
        served_boxes[["x_min", "y_min", "x_max", "y_max"]], expected[["x_min", "y_min", "x_max", "y_max"]], atol=0.01
    )
    assert sum(passes) < 31 - 6  # 30 tiles and the whole photo without skipping
