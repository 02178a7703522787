"""The label audit: do an export's class names describe lesions, or whole photos?

Real exports can carry image-level labels dressed up as lesion types: in Roboflow's ACNE04
export every box of a photo has one name, and that name is fixed by the photo's severity
grade (the ``levleN`` in its file name). A detector trained on such labels learns to guess
the grade of the whole photo, and its per-class AP says nothing about lesion types. The
audit reads the export's *own* class names (before ``class_map``) and looks for three signs:

* photos with two or more boxes that nevertheless hold a single class, nearly always;
* classes that never share a photo (the co-occurrence table);
* a file-name token or folder that fixes the class of every photo that has it, across
  several source photos (``levle0`` → one name, ``levle1`` → another, ...).
"""

from __future__ import annotations

import logging
import re
from itertools import combinations
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import DatasetError

from acne_detection.core.params import DataParams
from acne_detection.datasets.export import RawExport
from acne_detection.pipelines.data.split import assign_groups

logger = logging.getLogger(__name__)


def _tokens(image_id: str) -> set[str]:
    """File-name tokens (``levle2_49_jpg.rf.ab`` → levle2, 49, jpg, rf, ab) and folders (``folder:train``)."""
    path = PurePosixPath(image_id)
    return {t for t in re.split(r"[^A-Za-z0-9]+", path.stem) if t} | {f"folder:{p}" for p in path.parts[:-1]}


def _determining_tokens(photo_class: pd.Series, groups: pd.Series, min_groups: int) -> dict[str, str]:
    """Tokens whose photos (spanning at least ``min_groups`` source photos) all hold one and
    the same single class. ``photo_class``: the class of each single-class photo, ``None`` for
    a mixed one; index: image id."""
    pairs = pd.DataFrame(
        [(image_id, t) for image_id in photo_class.index for t in _tokens(image_id)], columns=["image_id", "token"]
    )
    pairs["class"] = pairs.image_id.map(photo_class)
    pairs["group"] = pairs.image_id.map(groups)
    pairs["mixed"] = pairs["class"].isna()
    per_token = pairs.groupby("token").agg(
        groups=("group", "nunique"), classes=("class", "nunique"), mixed=("mixed", "any"), first=("class", "first")
    )
    found = per_token[(per_token.groups >= min_groups) & (per_token.classes == 1) & ~per_token.mixed]
    return {str(t): str(c) for t, c in found["first"].items()}


def audit_labels(raw: RawExport, params: DataParams) -> tuple[dict[str, Any], pd.DataFrame, dict[str, str]]:
    """Judge whether the export's class names are lesion types or image-level labels.

    Args:
        raw: the export with each box's ``class_name`` and mapped ``class`` (``map_classes``'s output).
        params: the ``data`` parameters (``label_audit`` thresholds, ``group_pattern``, ``strict``).

    Returns:
        The audit (``status``: ``ok``, ``warning``, ``handled`` when ``class_map`` already
        collapses the names into one class, or ``not applicable`` with fewer than two names;
        ``message``; ``export_format``: the format the export was read in, ``RawExport.format``;
        the figures and evidence), the co-occurrence table (photos holding each pair of names;
        the diagonal: photos holding the name), and MLflow tags.

    Raises:
        DatasetError: on ``warning`` with ``label_audit.strict`` or ``data.strict``.
    """
    a = params.label_audit
    boxes = raw.boxes[raw.boxes.class_name.astype(str).str.strip() != ""]
    names_per_photo = boxes.groupby("image_id")["class_name"].agg(lambda s: frozenset(map(str, s)))
    n_boxes = boxes.groupby("image_id").size()
    holds = pd.crosstab(boxes["image_id"], boxes["class_name"].astype(str)).clip(upper=1)  # photos x names
    names = sorted(holds.columns)
    matrix = holds[names].to_numpy()
    cooccurrence = pd.DataFrame(matrix.T @ matrix, index=pd.Index(names, name="class_name"), columns=names)
    multi = names_per_photo[n_boxes[names_per_photo.index] >= 2]
    single_share = float((multi.map(len) == 1).mean()) if len(multi) else float("nan")
    photo_class = names_per_photo.map(lambda s: next(iter(s)) if len(s) == 1 else None)
    groups = pd.Series(
        assign_groups(pd.Series(photo_class.index), params.group_pattern).to_numpy(), index=photo_class.index
    )
    determining = _determining_tokens(photo_class, groups, a.min_groups) if len(names) >= 2 else {}
    covered = [bool(_tokens(i) & set(determining)) for i in photo_class.index]
    coverage = float(np.mean(covered)) if covered else 0.0
    families = _families(determining)
    pairs = [f"{x} + {y}" for x, y in combinations(names, 2) if cooccurrence.loc[x, y] > 0]

    image_level = len(names) >= 2 and (
        (len(multi) >= a.min_photos and single_share >= a.single_class_share)
        or (coverage >= a.token_coverage and len(set(determining.values())) >= 2)
    )
    evidence = _evidence(single_share, len(multi), pairs, names, families, determining, coverage)
    status, message = _verdict(names, image_level=image_level, collapsed_to=_collapsed_to(boxes), evidence=evidence)
    log = logger.warning if status == "warning" else logger.info
    log("Label audit: %s", message)
    if status == "warning" and (a.strict or params.strict):
        raise DatasetError(f"Label audit (data.label_audit.strict): {message}")
    audit = {
        "status": status,
        "message": message,
        "export_format": raw.format,
        "class_names": names,
        "photos_with_2plus_boxes": int(len(multi)),
        "single_class_share": single_share,
        "cooccurring_pairs": pairs,
        "determining_tokens": determining,
        "token_families": families,
        "token_coverage": coverage,
    }
    tags = {"label_audit": status, "label_audit.evidence": evidence[:500]}
    return audit, cooccurrence.reset_index(), tags


def _collapsed_to(boxes: pd.DataFrame) -> str | None:
    """The one class ``class_map`` maps every source name to, or ``None`` when it keeps two or more
    apart or leaves a name unmapped."""
    mapped = boxes.groupby("class_name")["class"].first()
    return str(mapped.iloc[0]) if len(mapped) and mapped.notna().all() and mapped.nunique() == 1 else None


def _verdict(names: list[str], *, image_level: bool, collapsed_to: str | None, evidence: str) -> tuple[str, str]:
    """The audit's ``status`` and ``message``: ``not applicable`` with fewer than two names, ``ok``
    for lesion types, ``handled`` for image-level names ``class_map`` collapses, else ``warning``."""
    if len(names) < 2:
        return "not applicable", f"one class name only ({names}): nothing to audit"
    if not image_level:
        return "ok", f"class names look like lesion types: {evidence}"
    if collapsed_to is not None:
        return "handled", (
            f"class names are image-level labels, not lesion types ({evidence}); handled: class_map maps "
            f"them all to '{collapsed_to}'"
        )
    return "warning", (
        f"class names look like IMAGE-LEVEL labels, not lesion types: {evidence}. A detector trained on "
        "them learns to guess the whole photo's label, and its per-class AP says nothing about lesion "
        "types. Map them all to one class (conf/acne04 does) and take the grade from the file name."
    )


def _families(determining: dict[str, str]) -> dict[str, dict[str, str]]:
    """Determining tokens that differ only in their digits (``levle0``, ``levle1`` → ``levleN``),
    where the digits select different classes: a naming scheme that encodes the class."""
    families: dict[str, dict[str, str]] = {}
    for token, cls in sorted(determining.items()):
        families.setdefault(re.sub(r"\d+", "N", token), {})[token] = cls
    return {f: m for f, m in families.items() if "N" in f and len(set(m.values())) >= 2}


def _evidence(
    single_share: float,
    n_multi: int,
    pairs: list[str],
    names: list[str],
    families: dict[str, dict[str, str]],
    determining: dict[str, str],
    coverage: float,
) -> str:
    parts = []
    if n_multi:
        parts.append(f"{single_share:.0%} of the {n_multi} photos with 2+ boxes hold a single class")
    parts.append(f"{len(pairs)} of {len(names) * (len(names) - 1) // 2} class pairs ever share a photo")
    for family, members in families.items():
        shown = ", ".join(f"{t} → '{c}'" for t, c in members.items())
        parts.append(f"the file-name token {family} determines the class ({shown})")
    others = {t: c for t, c in determining.items() if not any(t in m for m in families.values())}
    if others and not families:
        shown = ", ".join(f"{t} → '{c}'" for t, c in list(others.items())[:6])
        parts.append(f"file-name tokens or folders determine the class ({shown})")
    if determining:
        parts.append(f"{coverage:.0%} of photos carry such a token")
    return "; ".join(parts)
