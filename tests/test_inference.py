"""The one prediction path: photo decoding, sliced inference's merging across tile edges, and
big or unusual photos, with a real COCO-pretrained YOLOv8n on Ultralytics' own sample photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from acne_detection.inference import InferenceSettings, load_photo, predict_boxes
from tests.conftest import PROJECT_ROOT

ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory: pytest.TempPathFactory):
    from ultralytics import YOLO

    from acne_detection.datasets import PretrainedWeightsSource

    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    cache = tmp_path_factory.mktemp("weights") / "yolov8n.pt"
    source = PretrainedWeightsSource(**{**{k: v for k, v in base.items() if k != "type"}, "cache": str(cache),
                                        "try_download": False})
    return YOLO(str(source.load().resolve()[0]))


def test_an_object_cut_by_tile_edges_is_counted_once(coco_model) -> None:
    """bus.jpg (810 x 1080) in 320 px tiles: every person and the bus cross tile edges; merged,
    each is found once, as the plain whole-photo prediction finds it."""
    photo = ASSETS / "bus.jpg"
    plain = predict_boxes(coco_model, [("bus", photo)], InferenceSettings(imgsz=640, conf=0.5))
    sliced = predict_boxes(coco_model, [("bus", photo)],
                           InferenceSettings(imgsz=320, conf=0.5, slicing="always", overlap=0.2))
    people = plain[plain["class"] == "person"]
    assert len(people) >= 3  # a real scene, so the comparison means something
    assert sliced["class"].value_counts().get("person", 0) == len(people)
    assert sliced["class"].value_counts().get("bus", 0) == 1
    tile_edges = np.arange(256, 810, 256)  # 320 px tiles at 20 % overlap start every 256 px
    assert any(((r.x_min < e) and (r.x_max > e)) for r in people.itertuples() for e in tile_edges)


def test_a_path_bytes_and_pixels_give_the_same_boxes_in_the_photo_frame(coco_model, tmp_path: Path) -> None:
    photo = ASSETS / "zidane.jpg"
    settings = InferenceSettings(imgsz=320, conf=0.3)
    by_path = predict_boxes(coco_model, [("z", photo)], settings)
    pixels, scale = load_photo(photo)
    by_pixels = predict_boxes(coco_model, [("z", pixels)], settings)
    by_bytes = predict_boxes(coco_model, [("z", photo.read_bytes())], settings)
    assert scale == 1.0 and len(by_path) >= 2
    assert by_bytes[["x_min", "y_min", "x_max", "y_max"]].to_numpy() == pytest.approx(
        by_pixels[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), abs=1e-3)
    # decoded by Pillow vs OpenCV: the same people, boxes within a few pixels
    assert len(by_pixels) == len(by_path)
    assert np.abs(by_pixels[["x_min", "y_min"]].to_numpy() - by_path[["x_min", "y_min"]].to_numpy()).max() < 4


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
