"""``python -m acne_detection.ops.tracking_ui STORE UI``: the address ``make ui`` prints, the
``acne_detection`` experiment's runs in MLflow's model-training view."""

from __future__ import annotations

import sys

from acne_detection.framework.tracking import ui_address


def experiment_address(tracking_uri: str, ui: str, experiment: str = "acne_detection") -> str:
    """The experiment's page in ``ui``, or the UI's front page before any run has created it."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    return ui_address(ui, found.experiment_id) if found else f"{ui}/#/experiments?workflowType=machine_learning"


if __name__ == "__main__":
    print(experiment_address(sys.argv[1], sys.argv[2]))
