"""acne-detection: a Kedro pipeline that fine-tunes YOLOv8 to find acne lesions."""

import os

# This project handles medical photographs, so no library may phone home unless the user
# explicitly opts back in by setting these variables themselves. Set at import time because
# Ultralytics reads YOLO_OFFLINE once, when it is first imported.
_PRIVACY_DEFAULTS = {
    "DO_NOT_TRACK": "1",  # kedro-telemetry and others honouring the convention
    "KEDRO_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "YOLO_OFFLINE": "1",  # Ultralytics: no online checks, no usage events
}
for _name, _value in _PRIVACY_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
