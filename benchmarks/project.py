"""A runnable copy of the project, as a colleague's checkout: for the benchmarks and the tests."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def copy_project(root: Path, *, n_images: int, size: int, catalog: dict | None = None) -> Path:
    """A runnable copy of the project in ``root`` whose ``raw_export`` is a small synthetic set.

    Args:
        root: where the copy goes (created).
        n_images: synthetic photographs to generate on first use.
        size: their side in pixels.
        catalog: further ``conf/local/catalog.yml`` entries (merged over base entries).

    Returns:
        ``root``.
    """
    import shutil

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copytree(PROJECT_ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    base = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())
    local = {"raw_export": {**base["raw_export"], "synthetic": {"n_images": n_images, "size": size, "seed": 0}}}
    for name, entry in (catalog or {}).items():
        local[name] = {**base.get(name, {}), **entry}
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(local))
    return root


def write_png_bomb(path: Path, side: int) -> Path:
    """A valid grayscale PNG of ``side`` x ``side`` black pixels, streamed so that neither this
    function nor the file (under 1 MB at 30,000 px) ever holds them: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path
