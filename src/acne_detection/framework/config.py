"""The project's configuration loader: Kedro's, with ``--params`` merged key by key.

Kedro 1.7 merges the runtime parameters into each environment's parameters before it merges
the environment over ``base``, and that merge replaces whole top-level groups. So in an
environment with parameter files of its own (``conf/acne04``, ``conf/team``),
``--params "train.epochs=2"`` turned ``train`` into ``{epochs: 2}``: every other training
setting of ``conf/base`` silently fell back to the code's defaults, and a node reading
``params:train.imgsz`` failed. Here the environments are merged first, as Kedro does (an
environment still replaces a whole group: ``conf/acne04`` replaces ``data``), and the runtime
parameters are merged over the result key by key.
"""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf


class ProjectConfigLoader(OmegaConfigLoader):
    def __getitem__(self, key: str) -> Any:
        if key != "parameters" or not self.runtime_params:
            return super().__getitem__(key)
        runtime, self.runtime_params = self.runtime_params, {}
        try:
            merged = super().__getitem__(key)
        finally:
            self.runtime_params = runtime
        return OmegaConf.to_container(OmegaConf.merge(merged, runtime), resolve=True)
