"""A run stopped by a full disk, explained: which file was being written, how much it needed, how
much of it fit, and how much the filesystem has left.

Python's ``OSError`` for a failed ``write()`` says only "[Errno 28] No space left on device": it
names no file (only ``open()`` sets ``filename``). The file is found instead in the frames the
error passed through, as the writable file object the failing frame held (``pathlib``'s
``write_bytes``, ``shutil.copyfile``, a dataset's ``fs.open``), and the size it wanted from the
bytes it was handed or the file it copied. ``hooks.RunFailure`` uses this when a run fails.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FRAMES_SEARCHED = 4  # the write fails in the innermost frames; further out, file objects are someone else's


@dataclass(frozen=True)
class FullDisk:
    """A write that found its filesystem full.

    Attributes:
        path: the file being written (the SQLite store when the store could not grow).
        wanted: bytes that write needed in all, when known.
        written: bytes of it on disk when it failed (a half-written file).
        free: bytes free on that filesystem when the error was explained.
        total: that filesystem's size in bytes.
        mount: where that filesystem is mounted.
        quota: the user's disk quota ran out (``EDQUOT``), not the disk.
    """

    path: Path
    wanted: int | None
    written: int
    free: int
    total: int
    mount: Path
    quota: bool = False

    @property
    def shortfall(self) -> int | None:
        """Bytes this one write lacked (``None`` when its size is unknown)."""
        return None if self.wanted is None else max(self.wanted - self.written - self.free, 0)

    @property
    def headline(self) -> str:
        """What ran out, in the words of the operating system's own message."""
        return "Disk quota exceeded" if self.quota else "No space left on device"

    @property
    def message(self) -> str:
        """The file, the space it needed, the space left, and what to do: it reads on from
        ``headline`` (or from the error's own message)."""
        needed = "" if self.wanted is None else f"{_size(self.wanted)} needed, "
        more = "" if self.shortfall is None else f"{_size(self.shortfall)} more for this file, "
        return (
            f"writing {self.path} ({needed}{_size(self.written)} written); {_size(self.free)} free of "
            f"{_size(self.total)} on {self.mount}. Free space there ({more}more for the rest of the run: "
            "a previous run's data/ folder shows its size), then run the same `kedro run` again."
        )


def find_full_disk(error: BaseException, *, store: Path | None = None) -> FullDisk | None:
    """The full disk behind ``error``, if a full disk is what stopped the run.

    Args:
        error: what the run raised (its ``__cause__`` / ``__context__`` chain is searched:
            Kedro wraps a dataset's own error).
        store: the SQLite file of the tracking store, named when SQLite reports it full.

    Returns:
        The write that failed, with its figures; ``None`` when no ``ENOSPC`` / ``EDQUOT`` (or
        SQLite's "database or disk is full") is in the chain.
    """
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            found = _written_file(cause.__traceback__) or _named_file(cause)
            if found is not None:
                return _measure(*found, quota=cause.errno == errno.EDQUOT)
        if store is not None and _sqlite_full(cause):
            return _measure(store, None, quota=False)
    return None


def remove_half_written(full: FullDisk, *, inside: Path) -> int:
    """Delete the half-written file the failed write left: it is unreadable, and the space it
    holds is what the run needs to record how it ended (the tracking store is often on the same
    disk). Only a file known to be short of its whole size (so never the tracking store, whose
    growth has none), and only inside ``inside``.

    Args:
        full: the failed write.
        inside: the folder whose files the run owns (the project).

    Returns:
        The bytes freed (0 when nothing was deleted).
    """
    path = full.path.resolve()
    if full.wanted is None or not path.is_file() or not path.is_relative_to(inside.resolve()):
        return 0
    size = path.stat().st_size
    path.unlink()
    return size


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _sqlite_full(error: BaseException) -> bool:
    original = getattr(error, "orig", error)  # SQLAlchemy wraps sqlite3's error
    return isinstance(original, sqlite3.OperationalError) and "database or disk is full" in str(original)


def _written_file(tb: TracebackType | None) -> tuple[Path, int | None] | None:
    """The file a failed write held open, from the innermost frames, and the bytes it wanted."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    innermost = frames[::-1][:_FRAMES_SEARCHED]
    for depth, frame in enumerate(innermost):
        for value in frame.f_locals.values():
            path = _open_for_writing(value)
            if path is not None:
                return path, _wanted(innermost[depth:])
    return None


def _named_file(error: OSError) -> tuple[Path, int | None] | None:
    """The file an ``OSError`` names: the destination of a copy (``filename2``; ``shutil`` puts the
    source in ``filename``), else ``filename`` (``open()`` failing to create it)."""
    name = error.filename2 or error.filename
    return (Path(os.fsdecode(name)), None) if isinstance(name, str | bytes) else None


def _open_for_writing(value: object) -> Path | None:
    """The path of a file object opened for writing (Python's, or fsspec's local file)."""
    if not isinstance(value, io.IOBase):
        return None
    mode = str(getattr(value, "mode", ""))
    name = getattr(value, "name", None) or getattr(value, "path", None)
    if not isinstance(name, str) or name.startswith("<") or not set(mode) & set("wax+"):
        return None  # not a named file (``<stdout>``), or only read
    return Path(name)


def _wanted(frames: list[FrameType]) -> int | None:
    """What the write was handed, from the failing frame or its caller: the bytes it was given
    (the largest), else the size of the file it was copying from."""
    for frame in frames[:2]:
        values = list(frame.f_locals.values())
        sizes = [len(v) for v in values if isinstance(v, bytes | bytearray)]
        sizes += [v.nbytes for v in values if isinstance(v, memoryview)]
        if sizes:
            return max(sizes)
        sources = [getattr(v, "name", None) for v in values if isinstance(v, io.IOBase) and _readable(v)]
        sources = [s for s in sources if isinstance(s, str) and os.path.isfile(s)]
        if sources:
            return os.path.getsize(sources[0])
    return None


def _readable(value: io.IOBase) -> bool:
    return "r" in str(getattr(value, "mode", "")) and "+" not in str(getattr(value, "mode", ""))


def _measure(path: Path, wanted: int | None, *, quota: bool) -> FullDisk:
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    mount = folder.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    written = path.stat().st_size if path.is_file() else 0
    if wanted is not None and wanted <= written:  # one chunk of a longer write: the whole is unknown
        wanted = None
    return FullDisk(path.resolve(), wanted, written, usage.free, usage.total, mount, quota)


def _size(n: int | None) -> str:
    if n is None:
        return "an unknown size"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
