"""Pseudonyms for photo names (``acne_detection.core.pseudonyms``): keyed, stable, and applied to
tables by column and to free text wherever a learnt name stands."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd

from acne_detection.core.pseudonyms import Pseudonyms, load_key


def test_a_pseudonym_is_the_names_hmac_sha256_under_the_checkout_key(tmp_path: Path) -> None:
    key = load_key(tmp_path)
    credentials = tmp_path / "conf" / "local" / "credentials.yml"
    assert credentials.stat().st_mode & 0o777 == 0o600 and len(key) == 32
    assert load_key(tmp_path) == key  # generated once, then read back
    expected = hmac.new(key, b"smith_j_2026-03-01.jpg", hashlib.sha256).hexdigest()[:16]
    assert Pseudonyms(key).of("smith_j_2026-03-01.jpg") == f"p-{expected}.jpg"
    assert Pseudonyms(b"another checkout").of("smith_j_2026-03-01.jpg") != f"p-{expected}.jpg"


def test_an_existing_credentials_file_keeps_its_entries(tmp_path: Path) -> None:
    credentials = tmp_path / "conf" / "local" / "credentials.yml"
    credentials.parent.mkdir(parents=True)
    credentials.write_text("team_db:\n  password: s3cret")
    load_key(tmp_path)
    import yaml

    loaded = yaml.safe_load(credentials.read_text())
    assert loaded["team_db"] == {"password": "s3cret"} and len(loaded["pseudonym_key"]) == 64


def test_tables_lose_every_name_and_keep_their_numbers_and_joins() -> None:
    names = Pseudonyms(b"k")
    manifest = pd.DataFrame(
        {
            "image_id": ["smith_j_01.jpg", "smith_j_02.jpg", "1234.jpg"],
            "file": ["/clinic/smith_j/smith_j_01.jpg", "/clinic/smith_j/smith_j_02.jpg", "/clinic/1234.jpg"],
            "copies": ["smith_j_02.jpg", "smith_j_01.jpg", ""],
            "group": ["smith_j_01", "smith_j_01", "1234"],
            "bytes": [1234, 5678, 42],
            "detail": ["copy of smith_j_01.jpg", "", "1234 lesions"],
        }
    )
    out = names.table(manifest)
    assert not out.astype(str).apply(lambda c: c.str.contains("smith")).any().any()
    assert out.image_id[0] == names.of("smith_j_01.jpg") and out.copies[1] == out.image_id[0]  # joins hold
    assert out.group[0] == out.group[1] == names.of("smith_j_01")
    assert list(out.bytes) == [1234, 5678, 42]  # a number equal to a photo's stem is not a name
    assert out.detail[0] == f"copy of {names.of('smith_j_01.jpg')}"
    assert out.detail[2] == "1234 lesions"


def test_free_text_and_files_are_rewritten_whole_words_only(tmp_path: Path) -> None:
    names = Pseudonyms(b"k")
    names.learn(["images/doe.jpg", "janedoe_7.png"])
    text = 'worst photos: "images/doe.jpg", doe, janedoe_7 and doer; yolo copy doe_2c30ab.jpg'
    assert names.text(text) == (
        f'worst photos: "{names.of("images/doe.jpg")}", {names.of("doe")}, {names.of("janedoe_7")} and doer; '
        f"yolo copy {names.of('doe')}_2c30ab.jpg"
    )
    (tmp_path / "a.json").write_text('{"photo": "janedoe_7.png"}')
    copy = names.file(tmp_path / "a.json", tmp_path / "out" if (tmp_path / "out").mkdir() is None else tmp_path)
    assert copy is not None and "janedoe" not in copy.read_text()
    assert (tmp_path / "a.json").read_text() == '{"photo": "janedoe_7.png"}'  # the local file keeps its names
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    assert names.file(tmp_path / "plot.png", tmp_path / "out") is None
    assert set(names.mapping().columns) == {"name", "pseudonym"} and "janedoe_7.png" in set(names.mapping().name)
