"""Device detection and typed parameters."""

from __future__ import annotations

import pytest
import torch

from acne_detection.core.accelerator import detect_device
from acne_detection.core.params import parse


def test_auto_picks_cuda_then_mps_then_cpu() -> None:
    device, name = detect_device("auto")
    if torch.cuda.is_available():
        assert device == "0" and name.startswith("cuda:0")
    elif torch.backends.mps.is_available():
        assert device == "mps"
    else:
        assert device == "cpu" and name.startswith("cpu")


def test_a_device_parameter_overrides_detection() -> None:
    """What is asked for is used, not what detection would pick: on this CPU machine detection
    would say cpu; asked for mps it answers mps (Ultralytics then reports it if unusable)."""
    detected = detect_device("auto")[0]
    asked = "mps" if detected != "mps" else "cpu"
    assert detect_device(asked)[0] == asked != detected
    assert detect_device("mps") == ("mps", "mps: Apple GPU")


def test_defaults_are_the_guides_transfer_learning_and_augmentation() -> None:
    p = parse("train", {})
    assert (p.freeze, p.lr0, p.warmup_epochs, p.optimizer) == (10, 0.01, 3.0, "SGD")
    a = p.augment
    assert (a.hsv_h, a.hsv_s, a.hsv_v, a.degrees, a.translate, a.scale) == (0.015, 0.7, 0.4, 10.0, 0.1, 0.5)
    assert (a.shear, a.perspective, a.flipud, a.fliplr, a.mosaic, a.mixup) == (0.0, 0.0, 0.0, 0.5, 1.0, 0.1)


@pytest.mark.parametrize(
    ("group", "raw", "key"),
    [
        ("train", {"epoch": 3}, "epoch"),
        ("train", {"augment": {"hsv_x": 1}}, "hsv_x"),
        ("data", {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}, "sum to 1"),
        ("data", {"class_map": {"x": "scar"}}, "scar"),
        ("eval", {"conf_threshold": 2}, "conf_threshold"),
    ],
)
def test_a_bad_parameter_names_its_key(group: str, raw: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        parse(group, raw)


def test_device_settings_follow_the_device_unless_fixed() -> None:
    from acne_detection.core.accelerator import device_settings

    assert device_settings("0", batch="auto", workers="auto")["batch"] == -1  # Ultralytics' autobatch
    assert device_settings("0", batch="auto", workers="auto")["amp"] is True
    assert device_settings("cpu", batch="auto", workers="auto") == {
        "amp": False,
        "batch": 16,
        "workers": min(2, __import__("os").cpu_count()),
    }
    assert device_settings("mps", batch=8, workers=0) == {"amp": False, "batch": 8, "workers": 0}


def test_a_misspelt_parameter_group_is_refused_naming_it(tmp_path) -> None:
    from acne_detection.framework.checks import check_parameter_groups

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "catalog.yml").write_text("raw_export:\n  path: ${runtime_params:export_dir, data/x}\n")
    good = {"data": {}, "train": {}, "preview": {}, "eval": {}, "grading": {}, "predict": {}}
    check_parameter_groups({**good, "export_dir": "y"}, tmp_path)  # a runtime parameter the conf reads
    with pytest.raises(
        ValueError,
        match=r"Unknown parameter group\(s\) \['dta'\].*"
        r"\['data', 'distributed', 'eval', 'grade_classifier', 'grading', 'predict', 'preview', 'review', 'sweep', "
        r"'tracking', 'train'\].*"
        r"\['export_dir'\]",
    ):
        check_parameter_groups({**good, "dta": {"strict": True}}, tmp_path)


def test_one_class_list() -> None:
    """conf/base/globals.yml (the configuration), the parameters' default and the synthetic
    generator name the same classes, in the same order (ids are positions)."""
    import yaml

    from acne_detection.core.params import SYNTHETIC_CLASSES, DataParams
    from acne_detection.core.synthetic import CLASSES
    from tests.conftest import PROJECT_ROOT

    configured = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "globals.yml").read_text())["classes"]
    assert tuple(configured) == SYNTHETIC_CLASSES == DataParams().classes == CLASSES


@pytest.mark.parametrize("env", ["local", "acne04", "team"])
def test_params_on_the_command_line_change_one_key_in_every_environment(env: str) -> None:
    """``--params train.epochs=2`` in an environment with parameter files of its own (acne04,
    team) used to replace the whole ``train`` group; now only that key changes, and the
    environment's own groups still replace base's (acne04's ``data``)."""
    from acne_detection.framework.config import ProjectConfigLoader
    from acne_detection.settings import CONFIG_LOADER_ARGS
    from tests.conftest import PROJECT_ROOT

    def load(runtime: dict) -> dict:
        return ProjectConfigLoader(
            conf_source=str(PROJECT_ROOT / "conf"), env=env, runtime_params=runtime, **CONFIG_LOADER_ARGS
        )["parameters"]

    plain, changed = load({}), load({"train": {"epochs": 2}, "data": {"split": {"seed": 7}}})
    assert changed["train"] == {**plain["train"], "epochs": 2}
    assert changed["data"]["split"] == {**plain["data"]["split"], "seed": 7}
    assert changed["data"]["class_map"] == plain["data"]["class_map"]
    if env == "acne04":
        assert set(plain["data"]["class_map"].values()) == {"lesion"}  # the environment's group, whole
