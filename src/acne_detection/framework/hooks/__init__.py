"""The project's Kedro hooks, one concern per module; ``settings.HOOKS`` registers them in this order.

- ``checkout_lock``: one ``kedro run`` at a time writes a checkout's ``data/`` (``CheckoutLock``).
- ``artifacts``: no photographs, and photo names only as pseudonyms, in the tracking store
  (``PhotoArtifacts``, ``PseudonymisedArtifacts``).
- ``mlflow_tracking``: kedro-mlflow's hook, typed parameters logged field by field (``MlflowTracking``).
- ``run_checks``: parameters, tracking server and experiment checked before any node runs (``RunChecks``;
  the checks themselves are ``acne_detection.framework.checks``).
- ``run_report``: the MLflow run's name, and the closing message of a run (``RunReport``).
- ``run_failure``: why a failed run stopped, on the run before it is marked FAILED; a full disk
  explained, with the file and the space it needed (``RunFailure``; ``acne_detection.framework.full_disk``).
"""

from acne_detection.framework.hooks.artifacts import PhotoArtifacts, PseudonymisedArtifacts
from acne_detection.framework.hooks.checkout_lock import CheckoutLock
from acne_detection.framework.hooks.mlflow_tracking import MlflowTracking
from acne_detection.framework.hooks.run_checks import RunChecks
from acne_detection.framework.hooks.run_failure import RunFailure
from acne_detection.framework.hooks.run_report import RunReport

__all__ = [
    "CheckoutLock",
    "MlflowTracking",
    "PhotoArtifacts",
    "PseudonymisedArtifacts",
    "RunChecks",
    "RunFailure",
    "RunReport",
]
