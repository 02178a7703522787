"""What ingestion reports: the columns of a reader's problem rows, and the reconciliation of what
was read with what was accepted and quarantined, in words."""

from __future__ import annotations

# One row per problem a reader found in an export (a file it could not use, with the reason).
PROBLEM_COLUMNS = ["file", "image_id", "reason", "detail"]


def describe_counts(counts: dict[str, int]) -> str:
    """The reconciliation in words, as the run prints it after validation and again at its end.

    Args:
        counts: ``validate_export``'s counts.

    Returns:
        One line: images and boxes read = accepted + quarantined, and other files quarantined.
    """
    return (
        "Ingestion: {images_read} images read = {images_accepted} accepted + {images_quarantined} quarantined; "
        "{boxes_read} boxes read = {boxes_accepted} accepted + {boxes_quarantined} quarantined; "
        "{files_quarantined} other files quarantined"
    ).format(**counts)
