"""train.architecture yolov8n-p2: the extra stride-4 head for lesions of a few pixels, with the
COCO checkpoint's weights transferred where names and shapes match."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from acne_detection.datasets import PretrainedWeightsSource
from acne_detection.training.detector import _build_model
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(**{k: v for k, v in base.items() if k != "type"}).load()
    cached, _ = replace(source, cache=tmp_path_factory.mktemp("weights") / "yolov8n.pt").resolve()
    return cached


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
