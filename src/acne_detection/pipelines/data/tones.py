"""Skin tone of every source photo (ITA, ``acne_detection.core.skin_tone``), and its distribution
per split for the data report."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from acne_detection.core.inference import load_photo
from acne_detection.core.params import DataParams
from acne_detection.core.skin_tone import BAND_NAMES, ToneEstimate, ita_band, measure_tone
from acne_detection.pipelines.data.split import merge_groups

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _photo_tone(file: str, boxes: np.ndarray, max_side: int) -> ToneEstimate:
    """One photo's tone, or why it cannot be measured (the file that cannot be decoded included)."""
    try:
        pixels, factor = load_photo(file, max_side=2 * max_side)
    except (OSError, ValueError) as err:
        return ToneEstimate(float("nan"), f"the image cannot be decoded ({err})", "")
    return measure_tone(pixels, boxes / factor, max_side=max_side)


def measure_skin_tones(images: pd.DataFrame, boxes: pd.DataFrame, params: DataParams) -> pd.DataFrame:
    """The skin tone of each source photo, measured on its copies' pixels.

    Each image's ITA is estimated with its lesion boxes left out (``skin_tone.measure_tone``).
    Copies of one source photo (Roboflow's augmented copies, byte-identical or renamed copies:
    ``merge_groups``, the split's own grouping) share a tone: the median of their measured
    ITAs. Per copy the ITA is not the photo's tone: brightness augmentation moves it by tens of
    degrees across bands. A source photo none of whose copies can be measured keeps a NaN
    ``ita``, band "" (reported as "(not measured)") and the reason; the run goes on.

    Args:
        images: accepted images (``image_id``, ``file``, ``copies``, ...).
        boxes: accepted boxes in displayed pixels (``image_id``, corners).
        params: the ``data`` parameters (``skin_tone``, ``group_pattern``).

    Returns:
        ``images`` with ``ita_image`` (this copy's estimate), ``ita`` (the source photo's),
        ``tone_band`` ("" where no skin could be measured), ``tone_problem`` (why not, in
        words; "" where measured) and ``tone_method`` (which pixels this copy was measured
        on); unchanged when ``skin_tone.measure`` is false.
    """
    if not params.skin_tone.measure:
        return images
    start = time.perf_counter()
    corners = {k: g[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float) for k, g in boxes.groupby("image_id")}
    none = np.zeros((0, 4))
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:  # decoding and OpenCV release the GIL
        tones = list(
            pool.map(
                lambda row: _photo_tone(row[1], corners.get(row[0], none), params.skin_tone.max_side),
                zip(images["image_id"], images["file"]),
            )
        )
    out = images.copy()
    out["ita_image"] = pd.Series([t.ita for t in tones], index=out.index, dtype="float64").round(2)
    group = merge_groups(out, params.group_pattern)
    out["ita"] = out["ita_image"].groupby(group).transform("median").round(2)  # NaN copies are skipped
    out["tone_band"] = out["ita"].map(ita_band).astype(str)
    own_problem = pd.Series([t.problem for t in tones], index=out.index, dtype=str)
    out["tone_problem"] = own_problem.where(out["ita"].isna(), "")
    out["tone_method"] = pd.Series([t.method for t in tones], index=out.index, dtype=str)
    _log_tones(out.assign(group=group), time.perf_counter() - start)
    return out


def _log_tones(toned: pd.DataFrame, seconds: float) -> None:
    per_photo = toned.drop_duplicates("group")
    logger.info(
        "Skin tone (ITA) of %d source photos in %.1f s: %s",
        len(per_photo),
        seconds,
        per_photo["tone_band"].replace("", "(not measured)").value_counts().to_dict(),
    )
    as_drawn = int((toned["tone_method"] == "outside the boxes as drawn").sum())
    if as_drawn:
        logger.info("%d images measured outside their boxes as drawn (the grown boxes left too little skin)", as_drawn)
    unmeasured = toned[toned["tone_problem"] != ""]
    if len(unmeasured):
        logger.warning(
            "%d images (%d source photos) have no measurable skin tone: %s, e.g. %s: %s "
            "(column tone_problem of data/03_primary/split_manifest.csv)",
            len(unmeasured),
            unmeasured["group"].nunique(),
            unmeasured["tone_problem"].str.split(":").str[0].value_counts().to_dict(),
            unmeasured["image_id"].iloc[0],
            unmeasured["tone_problem"].iloc[0],
        )


def describe_skin_tones(split: pd.DataFrame, ground_truth: pd.DataFrame) -> pd.DataFrame:
    """Photos, source photos and lesions per skin tone band and split.

    Args:
        split: the split images (``measure_skin_tones``'s columns, ``group``, ``split``).
        ground_truth: boxes with ``image_id``.

    Returns:
        One row per band (lightest first, then ``(not measured)``) and split, plus an ``all``
        split: ``photos``, ``source_photos``, ``lesions``, ``share_of_split`` (of the split's
        photos) and ``median_ita``. Empty when no tone was measured.
    """
    if "tone_band" not in split:
        return pd.DataFrame(
            columns=["tone_band", "split", "photos", "source_photos", "lesions", "share_of_split", "median_ita"]
        )
    photos = split.assign(
        tone_band=split["tone_band"].replace("", "(not measured)"),
        lesions=split["image_id"].map(ground_truth.groupby("image_id").size()).fillna(0).astype(int),
    )
    rows = []
    for split_name, s in [*((name, photos[photos.split == name]) for name in SPLITS), ("all", photos)]:
        for band in [*BAND_NAMES, "(not measured)"]:
            b = s[s.tone_band == band]
            if band == "(not measured)" and b.empty:
                continue
            rows.append(
                {
                    "tone_band": band,
                    "split": split_name,
                    "photos": len(b),
                    "source_photos": b["group"].nunique(),
                    "lesions": int(b["lesions"].sum()),
                    "share_of_split": len(b) / max(len(s), 1),
                    "median_ita": float(b["ita"].median()) if len(b) else np.nan,
                }
            )
    return pd.DataFrame(rows)


def plot_skin_tones(report: pd.DataFrame, split: pd.DataFrame) -> Figure:
    """Photos per tone band and split, and the ITA of every source photo against the bands.

    Args:
        report: ``describe_skin_tones``'s table.
        split: the split images (``ita``, ``group``, ``split``).

    Returns:
        A two-panel figure (a note when no tone was measured).
    """
    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, 2)
    if report.empty:
        for ax in axes:
            ax.set_axis_off()
        axes[0].text(0.5, 0.5, "skin tone not measured (data.skin_tone.measure: false)", ha="center", va="center")
        return fig
    table = report[report.split != "all"].pivot(index="tone_band", columns="split", values="photos")
    table = table.reindex(index=[b for b in [*BAND_NAMES, "(not measured)"] if b in table.index], columns=list(SPLITS))
    table.plot.bar(ax=axes[0], rot=20)
    axes[0].set(title="photos per skin tone band (ITA) and split", xlabel="", ylabel="photos")
    source = split.drop_duplicates("group")
    itas = source["ita"].dropna()
    axes[1].hist(itas, bins=np.arange(-60, 91, 5), rwidth=0.9, color="#b07850")
    for edge in (55, 41, 28, 10, -30):
        axes[1].axvline(edge, color="k", lw=0.8, ls="--")
    axes[1].set(
        title=f"ITA of the {len(itas)} source photos (band edges dashed)",
        xlabel="ITA (degrees; lighter →)",
        ylabel="source photos",
    )
    fig.tight_layout()
    return fig
