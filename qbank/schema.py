"""The item: one text or one figure of one question, as stored in Milvus and carried in Documents.

A question with a stem and two figures becomes three items that share ``question_id``. Documents
carry the item fields in ``tags`` (the shape clip_client users already send), and the stored
fields come back in the same ``tags`` on search matches.
"""

from __future__ import annotations

import json
from typing import Any

TEXT = "text"
IMAGE = "image"
MODALITIES = (TEXT, IMAGE)

# Scalar fields stored as their own Milvus columns; filters may use exactly these.
SCALAR_FIELDS: dict[str, int] = {
    "question_id": 128,
    "modality": 8,
    "subject": 64,
    "grade": 64,
    "qtype": 64,
}
# Names accepted in Document tags for each scalar column ("type" is what people write).
TAG_ALIASES = {"type": "qtype", "question_type": "qtype"}
FILTER_FIELDS = tuple(SCALAR_FIELDS)

ID_MAX_LENGTH = 256
TEXT_MAX_BYTES = 65_535  # Milvus VARCHAR limit; longer stems are stored truncated (display copy)
URI_MAX_LENGTH = 2048


class ItemError(ValueError):
    """An item cannot be stored as given; the message names the item and the field."""


def item_id(question_id: str, modality: str, index: int = 0) -> str:
    """Stable item id, so re-importing a question upserts instead of duplicating."""
    if modality not in MODALITIES:
        raise ItemError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return f"{question_id}:{modality}:{index}"


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` of UTF-8 without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def check_scalar(doc_id: str, name: str, value: Any, label: str | None = None) -> str:
    """A scalar column value as stored: a string within the column's byte limit."""
    label = label or name
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ItemError(f"item {doc_id!r}: field {label!r} must be a string, got {type(value).__name__}")
    text = str(value)
    limit = SCALAR_FIELDS[name]
    if len(text.encode("utf-8")) > limit:
        raise ItemError(f"item {doc_id!r}: field {label!r} is longer than {limit} bytes")
    return text


def tags_to_fields(doc_id: str, tags: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Split Document tags into the scalar columns and the free ``metadata`` JSON."""
    scalars: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    for key, value in (tags or {}).items():
        column = TAG_ALIASES.get(key, key)
        if column in SCALAR_FIELDS and column != "modality":
            scalars[column] = check_scalar(doc_id, column, value)
        else:
            metadata[key] = value
    try:
        json.dumps(metadata, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ItemError(f"item {doc_id!r}: tags are not JSON-serialisable: {exc}") from None
    return scalars, metadata


def item_row(
    id: str,
    embedding: list[float],
    *,
    question_id: str = "",
    modality: str = TEXT,
    text: str = "",
    image_uri: str = "",
    subject: str = "",
    grade: str = "",
    qtype: str = "",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One stored row, every column present: what the indexer, qbank-eval and the benches write.
    A lone item is its own question; a stem is kept within Milvus' VARCHAR limit."""
    return {
        "id": id,
        "question_id": question_id or id,
        "modality": modality,
        "text": truncate_utf8(text, TEXT_MAX_BYTES),
        "image_uri": image_uri,
        "subject": subject,
        "grade": grade,
        "qtype": qtype,
        "metadata": metadata or {},
        "embedding": embedding,
    }


def item_errors_message(errors: list[str], total: int, outcome: str, shown: int = 20) -> str:
    """One message for a rejected request: how many items, and each bad item with its problem."""
    more = f" (and {len(errors) - shown} more)" if len(errors) > shown else ""
    return f"{len(errors)} of {total} items {outcome}: " + "; ".join(errors[:shown]) + more


def fields_to_tags(row: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`tags_to_fields` for a stored row: what a search match carries in tags."""
    tags: dict[str, Any] = dict(row.get("metadata") or {})
    for column in SCALAR_FIELDS:
        value = row.get(column)
        if value:
            tags["type" if column == "qtype" else column] = value
    return tags
