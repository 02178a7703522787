"""The structural image check, held to Pillow's full decode (the reference) on damaged files."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acne_detection.core.image_check import jpeg_structure_problem, probe_image


def _photo(seed: int = 0, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth, photo-like RGB image (noise alone compresses unlike any photograph)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([128 + 60 * np.sin(x / (7 + c) + y / 11 + seed) for c in range(3)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, **save_args) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", **save_args)
    return out.getvalue()


def _sound_jpegs() -> dict[str, bytes]:
    photo = _photo()
    exif = Image.Exif()
    exif[0x0112] = 6
    plain = _jpeg(photo, quality=90)
    return {
        "baseline": plain,
        "progressive": _jpeg(photo, progressive=True),
        "grayscale": _jpeg(photo.convert("L")),
        "cmyk": _jpeg(photo.convert("CMYK")),
        "exif rotated": _jpeg(photo, exif=exif),
        "restart markers": _jpeg(photo, restart_marker_blocks=2),
        "4:4:4, quality 50": _jpeg(photo, quality=50, subsampling=0),
        "bytes after the end marker": plain + b"camera trailer",
        "fill bytes before a marker": plain[:2] + b"\xff\xff" + plain[2:],
    }


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception:  # noqa: BLE001 - the reference's verdict, whatever it raises
        return False
    return True


def _opens(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).close()
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.parametrize("name", list(_sound_jpegs()))
def test_sound_jpegs_pass_like_the_reference(name: str) -> None:
    data = _sound_jpegs()[name]
    assert _decodes(data)
    assert jpeg_structure_problem(data) == ("", "")


def test_every_truncation_is_caught_as_the_reference_catches_it() -> None:
    rng = random.Random(0)
    for name, data in _sound_jpegs().items():
        if "after the end" in name:  # cutting the trailer leaves a whole image
            continue
        for cut in sorted(rng.sample(range(200, len(data)), 25)):
            short = data[:cut]
            assert not _decodes(short), (name, cut)
            assert jpeg_structure_problem(short)[0] == "truncated image", (name, cut)


def test_damaged_scan_data_the_reference_refuses_is_caught() -> None:
    """Random bytes written over part of a file: what Pillow cannot decode, the walk flags.

    The walk is stricter than Pillow in one way, on purpose: damage that libjpeg only warns
    about ("Corrupt JPEG data") and decodes into grey blocks is flagged too.
    """
    rng = random.Random(1)
    sources = list(_sound_jpegs().values())
    refused = caught = 0
    for _ in range(400):
        data = bytearray(rng.choice(sources))
        start = rng.randrange(len(data) // 4, len(data))  # past the headers: the scan data
        length = rng.randrange(16, 512)
        data[start : start + length] = rng.randbytes(min(length, len(data) - start))
        if not _opens(bytes(data)) or _decodes(bytes(data)):
            continue
        refused += 1
        caught += jpeg_structure_problem(bytes(data))[0] != ""
    assert refused > 100
    assert caught / refused >= 0.98, f"caught {caught} of {refused}"


def test_probe_gives_the_same_verdicts_as_a_full_decode(tmp_path: Path) -> None:
    photo = _photo(3)
    good = _jpeg(photo)
    png = io.BytesIO()
    photo.save(png, "PNG")
    files = {
        "good.jpg": good,
        "cut.jpg": good[: len(good) // 2],
        "zero.jpg": b"",
        "text.jpg": b"not an image",
        "good.png": png.getvalue(),
        "cut.png": png.getvalue()[:-200],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    structure = {n: probe_image(str(tmp_path / n))["image_problem"] for n in files}
    decode = {n: probe_image(str(tmp_path / n), "decode")["image_problem"] for n in files}
    assert (
        structure
        == decode
        == {
            "good.jpg": "",
            "cut.jpg": "truncated image",
            "zero.jpg": "zero-byte file",
            "text.jpg": "not an image",
            "good.png": "",
            "cut.png": "truncated image",
        }
    )
    sha = probe_image(str(tmp_path / "good.jpg"))
    assert (sha["width"], sha["height"], sha["bytes"]) == (96, 72, len(good))


@pytest.mark.parametrize("side", [15_000, 30_000])  # over our limit only; over Pillow's own guard too
def test_a_decompression_bomb_is_refused_from_its_header_on_every_path(tmp_path: Path, side: int) -> None:
    from acne_detection.core.image_check import PhotoError
    from acne_detection.core.inference import InferenceSettings, _prepare, load_photo
    from tests.conftest import write_png_bomb

    bomb = write_png_bomb(tmp_path / "bomb.png", side)
    assert bomb.stat().st_size < 1_000_000
    probe = probe_image(str(bomb))
    assert probe["image_problem"] == "too many pixels"
    assert f"{side * side / 1e6:.0f} MP, over the limit of 200 MP" in probe["image_detail"]
    with pytest.raises(PhotoError, match="too many pixels"):
        load_photo(bomb)
    with pytest.raises(PhotoError, match="too many pixels"):
        load_photo(bomb.read_bytes())
    for slicing in ("never", "auto"):  # a path handed on to Ultralytics unread was a way round the check
        with pytest.raises(PhotoError, match="too many pixels"):
            _prepare(str(bomb), InferenceSettings(imgsz=64, conf=0.25, slicing=slicing))


def test_what_is_not_an_image_is_said_in_words(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("visit 3\n")
    html = tmp_path / "page.png"
    html.write_text("<!DOCTYPE html><html><body>login</body></html>")
    binary = tmp_path / "blob.jpg"
    binary.write_bytes(bytes(range(7, 71)))
    assert probe_image(str(text))["image_detail"] == "the file starts with text ('visit 3'...)"
    assert probe_image(str(html))["image_detail"] == "the file is an HTML page"
    assert probe_image(str(binary))["image_detail"] == "unknown format (first bytes 07 08 09 0a 0b 0c 0d 0e)"
    assert {probe_image(str(f))["image_problem"] for f in (text, html, binary)} == {"not an image"}


def test_phone_formats_are_read_as_displayed(tmp_path: Path) -> None:
    import numpy as np

    from acne_detection.core.inference import load_photo
    from tests.conftest import PHONE_HEIC, write_image

    heic, _ = load_photo(PHONE_HEIC)
    assert heic.shape == (320, 320, 3) and 60 < heic.mean() < 250  # decoded skin, not a blank
    avif = write_image(tmp_path / "photo.avif", (80, 60), seed=3, format="AVIF")
    assert load_photo(avif)[0].shape == (60, 80, 3)
    assert probe_image(str(PHONE_HEIC))["image_problem"] == ""
    assert np.array_equal(load_photo(PHONE_HEIC.read_bytes())[0], heic)
