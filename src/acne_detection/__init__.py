"""acne-detection: a Kedro pipeline that fine-tunes YOLOv8 to find acne lesions."""

from acne_detection.framework.privacy import apply_privacy_defaults

apply_privacy_defaults()

__version__ = "0.1.0"
