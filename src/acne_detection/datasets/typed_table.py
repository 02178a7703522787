"""``TypedTable``: a CSV or Parquet table checked against its declared schema on save and load."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from acne_detection.core.tables import TableError, check_table, csv_read_options, schema_of


class TypedTable(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A table whose columns, types and allowed values are declared once (``acne_detection.core.tables``).

    Saving checks the table before it is written; loading reads CSV with the schema's types
    and missing-value rules (text keeps ``""``, numbers read ``""`` as NaN) and checks it
    again, so a round trip never changes a type. Parquet keeps types exactly. A violation
    stops the run with the dataset's file, the column, the failed check and the first rows.

    Example catalog entry::

        split_images:
          type: acne_detection.datasets.TypedTable
          filepath: data/03_primary/split_manifest.csv
          schema: split_manifest

    Args:
        filepath: the file; its suffix (``.csv`` or ``.parquet``) picks the format.
        schema: the name of the table's schema in ``acne_detection.core.tables.SCHEMAS``.
        load_args: further ``pandas.read_csv``/``read_parquet`` keywords.
        save_args: further ``DataFrame.to_csv``/``to_parquet`` keywords.
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {}
    # Text quoted: a file name holding a carriage return or a comma still reads back as one
    # cell (found by the round-trip property test: a bare "\r" split a row in two).
    DEFAULT_SAVE_ARGS: dict[str, Any] = {"index": False, "quoting": csv.QUOTE_NONNUMERIC}

    def __init__(
        self,
        *,
        filepath: str,
        schema: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = Path(filepath)
        self._format = self._filepath.suffix.lower().lstrip(".")
        if self._format not in ("csv", "parquet"):
            raise DatasetError(f"{filepath}: a TypedTable is a .csv or .parquet file")
        self._schema_name = schema
        try:
            self._schema = schema_of(schema)
        except TableError as err:
            raise DatasetError(f"{filepath}: {err}") from None
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        defaults = self.DEFAULT_SAVE_ARGS if self._format == "csv" else {"index": False}
        self._save_args = {**defaults, **(save_args or {})}
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        try:
            if self._format == "csv":
                data = pd.read_csv(self._filepath, **{**csv_read_options(self._schema), **self._load_args})
            else:
                data = pd.read_parquet(self._filepath, **self._load_args)
        except (ValueError, TypeError) as err:  # e.g. text in a column declared numeric
            raise DatasetError(f"{self._filepath} (table {self._schema_name}): cannot be read as declared: {err}")
        return self._checked(data, "loaded")

    def save(self, data: pd.DataFrame) -> None:
        checked = self._checked(data, "to save")
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        if self._format == "csv":
            checked.to_csv(self._filepath, **self._save_args)
        else:
            checked.to_parquet(self._filepath, **self._save_args)

    def _checked(self, data: pd.DataFrame, when: str) -> pd.DataFrame:
        try:
            return check_table(data, self._schema, table=f"{self._filepath} (table {self._schema_name}, {when})")
        except TableError as err:
            raise DatasetError(str(err)) from None

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "schema": self._schema_name}
