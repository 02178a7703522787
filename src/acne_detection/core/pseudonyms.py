"""Pseudonyms for the photo names that leave the checkout.

File names of clinical photos often carry a patient's name or record number
(``smith_j_2026-03-01.jpg``). With ``tracking.pseudonymize: true`` (the team environment's
default), every table and text the pipelines log to the tracking store names photos by a
keyed hash instead: HMAC-SHA-256 of the name under a per-checkout secret key, so the same
photo gets the same pseudonym in every table and every run of this checkout (joins and
comparisons still work), and nobody without the key can test a guessed name against it.
Outputs under ``data/`` keep the real names; ``data/08_reporting/pseudonyms.csv`` joins the two.

The key lives where Kedro keeps secrets, ``conf/local/credentials.yml`` (git-ignored, mode
600, out of reach of ``make clean-outputs``), and is generated there on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

# Columns of the project's tables (acne_detection.core.tables) whose values are photo or annotation
# file names, paths, or names derived from them (a source photo's group, its listed copies).
NAME_COLUMNS = ("image_id", "file", "annotation_file", "image", "photo", "group", "copies")
KEY_ENTRY = "pseudonym_key"
CREDENTIALS = Path("conf") / "local" / "credentials.yml"
PREFIX = "p-"
_TEXT_SUFFIXES = {".csv", ".json", ".md", ".html", ".txt", ".yaml", ".yml", ".log"}


def load_key(project_path: Path) -> bytes:
    """This checkout's pseudonym key, generated into ``conf/local/credentials.yml`` on first use.

    Args:
        project_path: the project root.

    Returns:
        The key's bytes (32 random bytes, stored as hex).
    """
    import yaml

    path = project_path / CREDENTIALS
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    stored = (yaml.safe_load(text) or {}).get(KEY_ENTRY) if text.strip() else None
    if stored:
        return bytes.fromhex(str(stored))
    key = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        if text and not text.endswith("\n"):
            out.write("\n")
        out.write("# photo-name pseudonyms for what is logged to a tracking server (tracking.pseudonymize)\n")
        out.write(f"{KEY_ENTRY}: {key}\n")
    path.chmod(0o600)
    return bytes.fromhex(key)


class Pseudonyms:
    """Replaces photo names by ``p-<16 hex>`` (the name's extension kept, so a reader still
    sees a ``.jpg``), and remembers each replacement.

    Tables are rewritten column by column (``NAME_COLUMNS``, whole values); free text (JSON,
    Markdown, other columns) has every name it has learnt replaced where it stands between
    non-alphanumeric characters: full names and paths, and the names without their extension
    (a source photo's group is often just that).

    Args:
        key: the secret key (``load_key``).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._names: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    def of(self, name: str) -> str:
        """The pseudonym of one name (the empty string stays empty)."""
        if not name:
            return name
        digest = hmac.new(self._key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
        return PREFIX + digest + (suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else "")

    def learn(self, names: Iterable[str]) -> None:
        """Remember names (and their file names and stems) for free-text replacement."""
        before = len(self._names)
        for name in names:
            if not isinstance(name, str) or not name:
                continue
            posix = PurePosixPath(name.replace("\\", "/"))
            for token in {name, posix.name, posix.stem}:
                # digits alone would also match numbers in the text (counts, sizes): such a name is
                # replaced in the tables' name columns, and in text only with its extension
                if len(token) >= 3 and not token.isdigit() and token not in self._names:
                    self._names[token] = self.of(token)
        if len(self._names) != before:
            self._pattern = None

    def learn_folder(self, folder: Path) -> None:
        """Remember the name of every file under a folder (an export, a photo folder)."""
        if folder.is_dir():
            self.learn(str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file())

    def text(self, text: str) -> str:
        """Free text with every learnt name replaced."""
        if not self._names or not text:
            return text
        if self._pattern is None:
            alternatives = "|".join(re.escape(t) for t in sorted(self._names, key=len, reverse=True))
            self._pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        return self._pattern.sub(lambda m: self._names[m.group(0)], text)

    def table(self, data: pd.DataFrame) -> pd.DataFrame:
        """A copy of a table with photo names replaced (see the class)."""
        out = data.copy()
        named = [c for c in out.columns if c in NAME_COLUMNS]
        for column in named:
            values = out[column].fillna("").astype(str)
            if column == "copies":  # "; "-separated image ids
                self.learn(v for row in values for v in row.split("; "))
                out[column] = ["; ".join(self.of(v) for v in row.split("; ") if v) for row in values]
            else:
                self.learn(values)
                out[column] = [self.of(v) for v in values]
        for column in out.columns:
            if column not in named and not (
                pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])
            ):
                out[column] = [self.text(v) if isinstance(v, str) else v for v in out[column]]
        return out

    def file(self, path: Path, folder: Path) -> Path | None:
        """A pseudonymised copy of a logged file, written into ``folder`` under the same name.

        Returns:
            The copy; ``None`` for a file that is not text (a plot: it carries no photo name).
        """
        suffix = path.suffix.lower()
        if suffix not in _TEXT_SUFFIXES:
            return None
        target = folder / path.name
        if suffix == ".csv":
            table = pd.read_csv(path, keep_default_na=False)  # numbers stay numbers: no name is replaced in them
            self.table(table).to_csv(target, index=False)
        else:
            target.write_text(self.text(path.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
        return target

    def mapping(self) -> pd.DataFrame:
        """Every name replaced so far, with its pseudonym (kept on this machine only)."""
        return pd.DataFrame(sorted(self._names.items()), columns=["name", "pseudonym"])
