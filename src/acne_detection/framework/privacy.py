"""Nothing medical leaves the machine: every library's telemetry stays off unless the user
turns it back on by setting these variables themselves."""

from __future__ import annotations

import os
import sys

PRIVACY_DEFAULTS = {
    "DO_NOT_TRACK": "1",  # kedro-telemetry and others honouring the convention
    "KEDRO_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "YOLO_OFFLINE": "1",  # Ultralytics: no online checks, no usage events
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray: no usage statistics from a local instance or a node started here
}


def apply_privacy_defaults() -> None:
    """Set the privacy defaults (a user's own values win), and switch off Ultralytics' usage
    events if Ultralytics was imported before this package and the user did not opt in.

    It runs when ``acne_detection`` is imported: the one import-time side effect the package
    has, because Ultralytics decides whether it is online once, at its own import, and
    ``kedro viz``, notebooks and ``mlflow models serve`` import the package without any Kedro hook.
    """
    for name, value in PRIVACY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    events = sys.modules.get("ultralytics.utils.events")
    if events is not None and os.environ["YOLO_OFFLINE"].lower() in ("1", "true", "yes"):
        events.events.enabled = False
