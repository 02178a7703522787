"""One declared schema per table the pipelines save and load again (pandera).

A table written to CSV and read back must come back with the types it left with: a column of
skin tone angles in which one photo could not be measured is still a float column (NaN where
unmeasured), not text. ``datasets.TypedTable`` checks every table against its schema here on
save and on load, and reads CSV with the dtypes and missing-value rules the schema declares:
text columns keep ``""`` as an empty string, numeric columns read ``""`` as missing.

A schema names every column a table carries (``strict``), its type (nullable floats and
integers where a value may be missing), the values it allows (splits, bands, grades) and its
unique key. A violation raises ``TableError`` naming the table, the column, the check and the
first offending rows.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from acne_detection.core.skin_tone import BAND_NAMES

SPLITS = ("train", "val", "test")
_SOURCE_SPLITS = ("", *SPLITS)


class TableError(ValueError):
    """A table that does not match its declared schema."""


def _text(*checks: pa.Check, unique: bool = False, required: bool = True) -> pa.Column:
    return pa.Column(str, checks=list(checks), unique=unique, required=required)


def _number(*checks: pa.Check, nullable: bool = False, required: bool = True) -> pa.Column:
    return pa.Column("float64", checks=list(checks), nullable=nullable, required=required)


def _count(*checks: pa.Check, nullable: bool = False) -> pa.Column:
    """A whole number; ``Int64`` (pandas' nullable integer) where a value may be missing."""
    return pa.Column("Int64" if nullable else "int64", checks=[pa.Check.ge(0), *checks], nullable=nullable)


def _flag() -> pa.Column:
    return pa.Column(bool)


_CORNERS = {c: _number() for c in ("x_min", "y_min", "x_max", "y_max")}
_IMAGE = {
    "image_id": _text(unique=True),
    "file": _text(),
    "annotation_file": _text(),
    "source_split": _text(pa.Check.isin(_SOURCE_SPLITS)),
    "background": _flag(),
    "bytes": _count(),
    "sha256": _text(pa.Check.str_matches(r"^[0-9a-f]{64}$")),
    "width": _count(pa.Check.gt(0)),
    "height": _count(pa.Check.gt(0)),
    "orientation": _count(pa.Check.isin(range(1, 9))),
    "mode": _text(),
    "copies": _text(),
}
# Written only when the skin tone is measured (data.skin_tone.measure)
_TONE = {
    "ita_image": _number(nullable=True, required=False),
    "ita": _number(nullable=True, required=False),
    "tone_band": _text(pa.Check.isin(("", *BAND_NAMES)), required=False),
    "tone_problem": _text(required=False),
    "tone_method": _text(required=False),
}
_SHARE = pa.Check.in_range(0.0, 1.0)
_COUNT = pa.Check.ge(0)
_INTERVAL = ("", "_low", "_high")  # a value and its 95 % interval
_PREDICTION = {
    "image": _text(),
    "class_id": _count(),
    "class": _text(),
    "confidence": _number(_SHARE),
    **_CORNERS,
}

_COLUMNS: dict[str, dict[str, pa.Column]] = {
    "images": _IMAGE,
    "boxes": {"image_id": _text(), "class": _text(), "class_name": _text(), **_CORNERS, "annotation_file": _text()},
    "quarantine": {
        "kind": _text(pa.Check.isin(("file", "image", "box"))),
        "file": _text(),
        "image_id": _text(),
        "reason": _text(pa.Check.str_length(min_value=1)),
        "detail": _text(),
    },
    "split_manifest": {
        **_IMAGE,
        "grade": _count(nullable=True),
        **_TONE,
        "group": _text(),
        "split": _text(pa.Check.isin(SPLITS)),
    },
    "ground_truth": {
        "split": _text(pa.Check.isin(SPLITS)),
        "image": _text(),
        "image_id": _text(),
        "class": _text(),
        "class_id": _count(),
        **_CORNERS,
        "width": _count(pa.Check.gt(0)),
        "height": _count(pa.Check.gt(0)),
    },
    "predictions": _PREDICTION,
    "test_grades": {
        "image": _text(unique=True),
        "image_id": _text(),
        "true_count": _count(),
        "pred_count": _count(),
        "true_grade": _count(nullable=True),
        "count_grade": _count(),
        "pred_grade": _count(),
        "rule_grade": _count(),
        # the source photo each is a copy of (the accuracy's interval resamples sources); absent in older tables
        "source": pa.Column(str, nullable=False, required=False),
        # the grade model's own estimate of the count, where it grades one (``expected``): absent otherwise
        "estimated_count": pa.Column("Int64", checks=[pa.Check.ge(0)], nullable=True, required=False),
    },
    "skin_tone_report": {
        "tone_band": _text(pa.Check.isin((*BAND_NAMES, "(not measured)"))),
        "split": _text(pa.Check.isin((*SPLITS, "all"))),
        "photos": _count(),
        "source_photos": _count(),
        "lesions": _count(),
        "share_of_split": _number(_SHARE),
        "median_ita": _number(nullable=True),
    },
    "photo_files": {"photo": _text(unique=True), "reason": _text(pa.Check.str_length(min_value=1)), "detail": _text()},
    "threshold_sweep": {
        "threshold": _number(_SHARE),
        "class_id": pa.Column("int64", pa.Check.ge(-1)),  # -1: all classes
        "class": _text(),
        "tp": _count(),
        "fp": _count(),
        "fn": _count(),
        **{m: _number(_SHARE, nullable=True) for m in ("precision", "recall", "f1")},  # NaN: nothing found
    },
    "metrics_per_class": {
        "class_id": pa.Column("int64", pa.Check.ge(-1)),
        "class": _text(),
        "instances": _count(),
        **{
            m: _number(_SHARE, nullable=True)  # NaN: no box of that size, or nothing predicted
            for m in ("ap50", "ap75", "ap50_95", "ap_small", "ap_medium", "ap_large")
        },
        "tp": _count(),
        "fp": _count(),
        "fn": _count(),
        **{m: _number(_SHARE, nullable=True) for m in ("precision", "recall", "f1", "mean_iou")},
    },
    "skin_tone_metrics": {
        "tone_band": _text(pa.Check.isin((*BAND_NAMES, "(not measured)", "all")), unique=True),
        "photos": _count(),
        "lesions": _count(),
        **{f"{m}{end}": _number(_SHARE, nullable=True) for m in ("ap50", "recall", "precision") for end in _INTERVAL},
        "photos_graded": _count(),
        **{f"grade_accuracy{end}": _number(_SHARE, nullable=True) for end in _INTERVAL},
        "recall_gap": _number(nullable=True),
        "judged": _flag(),
        "flagged": _flag(),
    },
    # one count column per class the model found, named by the class: not declared one by one
    "photo_summary": {
        "photo": _text(unique=True),
        "lesions": _count(),
        "grade": _count(),
        "grade_name": _text(),
        "width": _count(pa.Check.gt(0)),
        "height": _count(pa.Check.gt(0)),
        "sliced": _flag(),
        "model": _text(),
        "threshold": _number(_SHARE),
    },
}


# Tables whose other columns are named by the data (classes, grades, Ultralytics' metrics):
# declared by a pattern, every one of them of one type.
def _others(key: str) -> str:
    return rf"^(?!{re.escape(key)}$).+$"  # every column but the key


_COLUMNS.update(
    {
        "confusion_matrix": {
            "true": _text(unique=True),
            _others("true"): pa.Column("int64", _COUNT, regex=True, required=False),
        },
        "cooccurrence": {
            "class_name": _text(unique=True),
            _others("class_name"): pa.Column("int64", _COUNT, regex=True, required=False),
        },
        "training_history": {
            "epoch": pa.Column("int64", pa.Check.ge(1), unique=True),
            _others("epoch"): pa.Column("float64", nullable=True, regex=True, required=False),
        },
    }
)
_OPEN = frozenset({"photo_summary"})  # tables that may carry columns beyond those declared
SCHEMAS: dict[str, pa.DataFrameSchema] = {
    name: pa.DataFrameSchema(columns, strict=name not in _OPEN, name=name) for name, columns in _COLUMNS.items()
}


def schema_of(name: str) -> pa.DataFrameSchema:
    """The declared schema ``name`` (a key of ``SCHEMAS``)."""
    if name not in SCHEMAS:
        raise TableError(f"no table schema named {name!r}; declared: {', '.join(sorted(SCHEMAS))}")
    return SCHEMAS[name]


def csv_read_options(schema: pa.DataFrameSchema) -> dict[str, Any]:
    """``pandas.read_csv`` keywords that read a CSV back with the schema's types.

    Text columns keep ``""`` (no "NA", "null" or "" turned into NaN: a class named "None" or an
    empty detail stays text); numeric columns read ``""`` as missing; nullable integers as
    ``Int64``; flags from ``True``/``False``.
    """
    dtypes, missing = {}, {}
    for name, column in schema.columns.items():
        if column.regex:  # a pattern, not a name: pandas infers those columns, the check follows
            continue
        dtype = str(column.dtype)
        dtypes[name] = "str" if _is_text(dtype) else dtype
        if dtypes[name] != "str" and dtype != "bool":
            missing[name] = [""]
    return {"dtype": dtypes, "keep_default_na": False, "na_values": missing}


def check_table(data: pd.DataFrame, schema: pa.DataFrameSchema, *, table: str) -> pd.DataFrame:
    """``data`` checked against ``schema``, its declared columns in the declared types.

    Args:
        data: the table.
        schema: its schema (``schema_of``).
        table: what to call the table in an error (the dataset and its file).

    Returns:
        The table, columns cast to their declared types where the cast loses nothing.

    Raises:
        TableError: naming ``table``, the column, the failed check and the first offending rows.
    """
    typed = data.copy()
    for name, column in schema.columns.items():
        for match in [c for c in typed.columns if re.fullmatch(name, str(c))] if column.regex else [name]:
            if match in typed:
                typed[match] = _lossless_cast(typed[match], str(column.dtype))
    try:
        return schema.validate(typed, lazy=True)
    except (SchemaErrors, SchemaError) as err:
        raise TableError(f"{table}: {_describe_failures(err)}") from None


def _is_text(dtype: str) -> bool:
    return dtype.startswith(("str", "string"))  # pandera names pandas' text dtype string[pyarrow]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lossless_cast(values: pd.Series, dtype: str) -> pd.Series:
    """``values`` in ``dtype`` where nothing is lost (ints as floats, whole floats as ints, an
    all-empty column as text); otherwise unchanged, for the schema to report."""
    try:
        if _is_text(dtype):
            if pd.api.types.is_string_dtype(values) and values.dtype != object and not values.isna().any():
                return values
            # object columns (an empty table), all-NaN ones (an all-empty column read back by
            # pandas) and missing values: text, with "" as its empty value
            return values.astype(object).where(values.notna(), "").astype(str)
        if values.empty:  # an empty table's column: nothing to lose, whatever its declared type
            return values.astype(dtype)
        if values.dtype == object and all(_is_number(v) for v in values.dropna()):
            values = values.astype("float64")  # an empty table's columns, or numbers held as objects
        if dtype == "float64" and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return values.astype("float64")
        if dtype in ("int64", "Int64") and pd.api.types.is_numeric_dtype(values):
            whole = values.astype("Int64")  # raises on 1.5: never truncated
            return whole if dtype == "Int64" or whole.isna().any() else whole.astype("int64")
    except (TypeError, ValueError):
        pass
    return values


def _describe_failures(err: SchemaErrors | SchemaError) -> str:
    cases = getattr(err, "failure_cases", None)
    if not isinstance(cases, pd.DataFrame) or cases.empty:
        return str(err).splitlines()[0]
    parts = []
    for (column, check), rows in cases.groupby(["column", "check"], dropna=False, sort=False):
        shown = ", ".join(
            f"row {i}: {v!r}" if pd.notna(i) else repr(v)
            for i, v in zip(rows["index"].head(3), rows["failure_case"].head(3))
        )
        parts.append(f"column {column!r} fails {check} ({len(rows)} rows; first: {shown})")
    return "; ".join(parts)
