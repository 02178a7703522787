"""``python -m acne_detection.ops.fetch_model MODEL FOLDER``: the model ``MODEL`` names
(``models:/acne-detector/<version or alias>``) fetched once into a folder of its own under
``FOLDER``, and that folder printed: what ``make serve`` serves. ``mlflow models serve -m
models:/...`` would download the version into a new temporary folder at every start and never
remove it (``framework.tracking.fetch_artifacts``)."""

from __future__ import annotations

import sys
from pathlib import Path

from acne_detection.framework.tracking import fetch_artifacts


def main(argv: list[str]) -> int:
    """Fetch ``argv[0]`` into ``argv[1]`` and print the copy's folder; a model that cannot be
    fetched is one line on stderr, naming it, and exit status 2."""
    if len(argv) != 2:
        print("usage: python -m acne_detection.ops.fetch_model MODEL FOLDER", file=sys.stderr)
        return 2
    try:
        print(fetch_artifacts(argv[0], Path(argv[1])))
    except Exception as err:  # noqa: BLE001 - the user reads one line, not a traceback
        print(f"Cannot fetch {argv[0]}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
