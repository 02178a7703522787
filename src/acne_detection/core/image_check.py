"""Is this file a usable image? Answered per file, fast enough to run on every photograph.

Runs in worker processes, so it imports nothing heavier than Pillow and NumPy.

Two depths of checking (``check``):

* ``"structure"`` (default): the header is decoded (size, mode, EXIF orientation) and the
  file's structure is walked to its end. For JPEG that is every marker segment and every
  entropy-coded scan up to the end-of-image marker, with the rules libjpeg applies: a missing
  end marker is a truncated file, a marker libjpeg does not know (what random bytes in the
  scan data produce) or a second start-of-image/frame is a broken file. For PNG, Pillow's
  ``verify()`` reads every chunk and checks its CRC. Other formats are decoded fully.
* ``"decode"``: every image is decoded (JPEG at 1/8 scale, which still reads every byte).
  About 4x slower on 640 px photographs (0.85 vs 0.2 ms each); catches corrupt Huffman tables too.

``tests/core/test_image_check.py`` holds the structural walk to Pillow's full decode (the
reference) on randomly truncated and corrupted JPEGs.

Every photo the project decodes is opened through ``open_photo``: it reads phones' HEIC/HEIF
(``pi-heif``, decode only, LGPL; AVIF is Pillow's own), refuses a file that is not an image
in words, and refuses a photo whose header declares more than ``PIXEL_LIMIT`` pixels before
any decoder touches its pixels (a 30,000 x 30,000 PNG is under 1 MB and 2.7 GB decoded).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# The most pixels a photo may declare: 200 MP is above every phone and most cameras (a 12000 x
# 9000 photo is 108 MP) and far below what takes a 24 GB machine down (a 30,000 x 30,000 PNG is
# 900 MP, 2.7 GB as RGB). Checked from the header by ``open_photo`` on every path that decodes
# (ingestion, preview, predict, serving), because SAHI switches Pillow's own guard off on each
# sliced read and OpenCV accepts up to 2^30 pixels.
PIXEL_LIMIT = 200_000_000

CHECKS = ("structure", "decode")
PROBE_COLUMNS = ["bytes", "sha256", "width", "height", "orientation", "mode", "image_problem", "image_detail"]

_EXIF_ORIENTATION = 0x0112
_JPEG_FORMATS = ("JPEG", "MPO")
_SOI, _EOI, _SOS, _TEM = 0xD8, 0xD9, 0xDA, 0x01
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
# Markers with a length field that libjpeg accepts between frames and scans: SOFn, DHT (C4),
# DAC (CC), DQT/DNL/DRI/DHP/EXP (DB-DF), APPn (E0-EF), COM (FE).
_SEGMENTS = _SOF | {0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, *range(0xE0, 0xF0), 0xFE}
_RST = frozenset(range(0xD0, 0xD8))
_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDD})  # DHT, DAC, SOS, DQT, DRI
_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xff])")


class _Broken(Exception):
    """A structural problem: ``reason`` is the quarantine reason, the message its detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def jpeg_structure_problem(data: bytes) -> tuple[str, str]:
    """Walk a JPEG's markers and scans to its end-of-image marker, as libjpeg would.

    Args:
        data: the whole file.

    Returns:
        ``(reason, detail)``: ``("", "")`` for a sound file, else ``"truncated image"`` or
        ``"unreadable image"`` and where the walk failed.
    """
    try:
        _walk_jpeg(data)
    except _Broken as err:
        return err.reason, str(err)
    return "", ""


def _walk_jpeg(data: bytes) -> None:
    if data[:2] != b"\xff\xd8":
        raise _Broken("unreadable image", "no JPEG start-of-image marker")
    pos, frames, scans = 2, 0, 0
    while True:
        found = _NEXT_MARKER.search(data, pos)  # libjpeg skips stray bytes before a marker (a warning)
        if found is None:
            raise _Broken("truncated image", f"file ends at byte {len(data)} without the end-of-image marker")
        marker, pos = found.group(1)[0], found.end()
        if marker == _EOI:
            if not scans:
                raise _Broken("unreadable image", "end-of-image marker before any image data")
            return
        if marker in _RST or marker == _TEM:
            continue
        if marker == _SOI or marker not in _SEGMENTS | {_SOS}:
            raise _Broken("unreadable image", f"invalid JPEG marker 0xFF{marker:02X} at byte {pos - 2}")
        if pos + 2 > len(data):
            raise _Broken("truncated image", f"file ends inside the segment at byte {pos - 2}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            # Past the first scan only tables and scan headers follow (progressive files); any
            # other segment running off the end is damage in the scan data, not a short file.
            short = length >= 2 and (not scans or marker in _BETWEEN_SCANS)
            reason = "truncated image" if short else "unreadable image"
            raise _Broken(
                reason, f"segment 0xFF{marker:02X} at byte {pos - 2} claims {length} bytes, {len(data) - pos} remain"
            )
        pos += length
        if marker in _SOF:
            frames += 1
            if frames > 1:
                raise _Broken("unreadable image", f"a second frame header at byte {pos - length - 2}")
        if marker == _SOS:
            if not frames:
                raise _Broken("unreadable image", "scan data before the frame header")
            scans += 1
            pos = _end_of_scan(data, pos)
            if pos < 0:
                raise _Broken("truncated image", f"file ends inside scan {scans} without the end-of-image marker")


def _end_of_scan(data: bytes, pos: int) -> int:
    """Where the scan data starting at ``pos`` ends: the 0xFF of the next marker, or -1.

    Inside scan data 0xFF is followed by 0x00 (a stuffed byte), 0xD0-0xD7 (a restart) or
    another 0xFF (fill); anything else is a marker. ``bytes.find`` keeps this at memchr speed.
    """
    while True:
        at = data.find(b"\xff", pos)
        if at < 0 or at + 1 >= len(data):
            return -1
        after = data[at + 1]
        if after == 0xFF:
            pos = at + 1
        elif after == 0x00 or 0xD0 <= after <= 0xD7:
            pos = at + 2
        else:
            return at


class PhotoError(ValueError):
    """A file that cannot be used as a photo: ``reason`` is short, the message says why in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def enable_photo_formats() -> None:
    """Let Pillow in this process read HEIC/HEIF, and hold it to the project's pixel limit.

    Called where photos are decoded rather than at import, so every process that decodes
    (ingestion's workers, the model server) gets it whatever it imported first. Pillow warns
    above ``MAX_IMAGE_PIXELS`` and refuses above twice that; ``open_photo`` refuses above it.
    """
    import pi_heif

    if not getattr(enable_photo_formats, "_registered", False):
        pi_heif.register_heif_opener()
        # between the limit and twice it Pillow only warns; open_photo refuses those itself
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        enable_photo_formats._registered = True  # type: ignore[attr-defined]
    Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT


def describe_non_image(head: bytes) -> str:
    """Why bytes that no image decoder recognises are not a photo, in words.

    Args:
        head: the file's first bytes (a few hundred are enough).

    Returns:
        e.g. ``"the file starts with text"`` or ``"unknown format (first bytes 00 01 ...)"``.
    """
    if not head:
        return "the file is empty"
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        if text.lstrip().lower().startswith(("<!doctype html", "<html")):
            return "the file is an HTML page"
        return f"the file starts with text ({text[:24].strip()!r}...)"
    return f"unknown format (first bytes {sample[:8].hex(' ')})"


def open_photo(source: str | Path | bytes) -> Image.Image:
    """Open a photo's header (no pixels decoded yet), refusing what must not be decoded.

    Args:
        source: a path or the file's bytes.

    Returns:
        The opened Pillow image (use it as a context manager).

    Raises:
        PhotoError: ``"not an image"`` (with what the file looks like), ``"too many pixels"``
            (more than ``PIXEL_LIMIT``), or ``"unreadable image"`` when the header is damaged.
    """
    enable_photo_formats()
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(stream)
    except Image.DecompressionBombError as err:  # Pillow's own guard, at twice MAX_IMAGE_PIXELS
        declared = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(declared.group(1)) / 1e6:.0f} MP" if declared else "more pixels than Pillow allows"
        raise PhotoError("too many pixels", _over_limit(size)) from None
    except (UnidentifiedImageError, ImportError):
        # ImportError: Ultralytics' patched Image.open tries optional plugins on an unknown file
        head = source[:512] if isinstance(source, bytes) else _head(source)
        kind = _image_kind(head)
        if kind:
            raise PhotoError("unreadable image", f"the file starts as {kind} but its header cannot be read") from None
        raise PhotoError("not an image", describe_non_image(head)) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise PhotoError("unreadable image", f"the header cannot be read ({err})") from None
    width, height = img.size
    if width * height > PIXEL_LIMIT:
        img.close()
        raise PhotoError("too many pixels", _over_limit(f"{width} x {height} = {width * height / 1e6:.0f} MP"))
    return img


def _over_limit(size: str) -> str:
    return (
        f"the header declares {size}, over the limit of {PIXEL_LIMIT / 1e6:.0f} MP "
        "(acne_detection.core.image_check.PIXEL_LIMIT): a decompression bomb, or a photo to shrink first"
    )


def to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale → 8-bit, scaled by the range its type implies."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    values = np.asarray(img, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if img.mode == "F":
        top = 1.0 if peak <= 1.0 else max(peak, 255.0)
    else:
        top = 255.0 if peak <= 255 and not img.mode.startswith("I;16") else 65535.0 if peak <= 65535 else peak
    return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8), mode="L")


def _image_kind(head: bytes) -> str:
    """The image format a file's first bytes announce ("" when none), for a damaged header."""
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis"):
        return "a HEIC/HEIF or AVIF photo"
    signatures = {b"\xff\xd8\xff": "a JPEG", b"\x89PNG": "a PNG", b"GIF8": "a GIF"}
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP"
    return next((kind for magic, kind in signatures.items() if head.startswith(magic)), "")


def _head(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(512)


def probe_image(file: str, check: str = "structure") -> dict[str, Any]:
    """Describe one image file and say what, if anything, makes it unusable. Never raises.

    Args:
        file: path of the image.
        check: ``"structure"`` or ``"decode"`` (see the module docstring).

    Returns:
        ``bytes``, ``sha256``, ``width``, ``height`` (as displayed, EXIF orientation applied),
        ``orientation`` (EXIF tag, 1 when absent), ``mode`` (PIL mode), ``image_problem`` and
        ``image_detail`` (both empty when the file is a usable image).
    """
    return probe_bytes(Path(file).read_bytes(), check)


def probe_bytes(data: bytes, check: str = "structure") -> dict[str, Any]:
    """``probe_image`` of a photo's bytes (a photo sent to the model server, say). Never raises."""
    info: dict[str, Any] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": 0,
        "height": 0,
        "orientation": 1,
        "mode": "",
        "image_problem": "",
        "image_detail": "",
    }
    if not data:
        return {**info, "image_problem": "zero-byte file", "image_detail": "the file is empty"}
    try:
        with open_photo(data) as img:
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            (width, height), mode, fmt = img.size, img.mode, img.format
            reason, detail = _check_body(img, data, check)
    except PhotoError as err:
        return {**info, "image_problem": err.reason, "image_detail": err.detail}
    except Exception as err:  # noqa: BLE001 - a damaged file may make any decoder raise anything; none may stop ingestion
        reason = "truncated image" if "truncat" in str(err).lower() else "unreadable image"
        return {**info, "image_problem": reason, "image_detail": f"the decoder stopped: {err}"}
    if reason:
        return {**info, "image_problem": reason, "image_detail": f"{fmt}: {detail}"}
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: displayed width is stored height
        width, height = height, width
    return {**info, "width": width, "height": height, "orientation": orientation, "mode": mode}


def _check_body(img: Image.Image, data: bytes, check: str) -> tuple[str, str]:
    """Check the image data behind an opened header; raise or return ``(reason, detail)``."""
    if check == "structure" and img.format in _JPEG_FORMATS:
        return jpeg_structure_problem(data)  # MPO (phones' multi-picture JPEG): the first picture is the photo
    if check == "structure" and img.format == "PNG":
        with Image.open(io.BytesIO(data)) as fresh:  # verify() must come straight after open
            fresh.verify()  # every chunk read and CRC-checked, without decompressing
        return "", ""
    if img.format in _JPEG_FORMATS:  # 1/8 scale: every byte is still entropy-decoded, so damage shows
        img.draft(img.mode, (max(img.width // 8, 1), max(img.height // 8, 1)))
    img.load()
    return "", ""
