"""The item: one text or one figure of one question, as stored in Milvus and carried in Documents.

A question with a stem and two figures becomes three items that share ``question_id``. Documents
carry the item fields in ``tags`` (the shape clip_client users already send), and the stored
fields come back in the same ``tags`` on search matches.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

TEXT = "text"
IMAGE = "image"
MODALITIES = (TEXT, IMAGE)
# What a bm25 search reads (/search parameter search_in): the stems (with their options), or the
# questions' analyses, which are searched only when a request asks.
STEM = "stem"
ANALYSIS = "analysis"
SEARCH_PARTS = (STEM, ANALYSIS)

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

# Ids are opaque strings with two exceptions, refused up front so every accepted id round-trips
# through index, search, exists, update and delete: control characters (a newline cannot stand in
# a Milvus expression literal: "token recognition error", measured) and the single quote (Milvus
# Lite 2.5.1 puts an upserted id into SQL between single quotes, unescaped: an id with ' fails with
# "internal error" and could rewrite that statement).
ID_MAX_LENGTH = 256

# The service's size limits, defined once: the executors' settings default to these (qbank.config),
# and the importer checks each row against them before sending (qbank_client.bank), so a bad row is
# named by its file and line and the good rows of its batch are stored.
MAX_TAG_BYTES = 65_536  # default of QBANK_MAX_TAG_BYTES: tags of one item as JSON
# Nesting of one item's tags (objects and lists inside each other). Tags travel as a protobuf Struct,
# which refuses a message nested past 100; a question's metadata is a few levels deep.
MAX_TAG_DEPTH = 32
MAX_TEXT_CHARS = 20_000  # default of QBANK_MAX_TEXT_CHARS: one text item (a stem with its options)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # default of QBANK_MAX_IMAGE_BYTES: one image as sent
MAX_IMAGE_PIXELS = 40_000_000  # default of QBANK_MAX_IMAGE_PIXELS: pixels an image declares
MAX_DOCS_PER_REQUEST = 1000  # default of QBANK_MAX_DOCS_PER_REQUEST
# Options of one question: A-Z. (An object of 3,000 "options" once failed a whole batch.)
MAX_OPTIONS = 26


def default_request_bytes(max_image_bytes: int = MAX_IMAGE_BYTES) -> int:
    """The gateway's request limit when QBANK_MAX_REQUEST_BYTES is not set: two of the largest images,
    base64 included, and room for the rest."""
    return 3 * max_image_bytes


def nesting_depth(value: Any, stop_at: int | None = None) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion: a JSON value
    nested 100,000 deep must not overflow the stack. Counting stops past ``stop_at``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            deepest = max(deepest, depth)
            if stop_at is not None and deepest > stop_at:
                return deepest
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# How near-duplicate stems are measured (qbank.domain.duplicates): bigram Jaccard of the text, or CLIP cosine.
DUPLICATE_MEASURES = ("text", "dense")
TEXT_MAX_BYTES = 65_535  # Milvus VARCHAR limit; longer stems are stored truncated (display copy)
URI_MAX_LENGTH = 2048


class ItemError(ValueError):
    """An item cannot be stored as given; the message names the item and the field."""


def id_problem(value: object, max_bytes: int = ID_MAX_LENGTH) -> str | None:
    """Why ``value`` cannot be an item or question id, or None when it can."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    size = len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= max_bytes:
        return f"is {size} bytes; ids are 1..{max_bytes} bytes"
    for ch in value:
        if ch == "'":
            return "contains a single quote ('), which ids may not (Milvus Lite writes ids into SQL)"
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"contains the control character {ch!r}, which ids may not"
    return None


def check_id(value: object, label: str = "id", max_bytes: int = ID_MAX_LENGTH) -> str:
    """``value`` as an id, or ItemError naming it and the rule."""
    problem = id_problem(value, max_bytes)
    if problem:
        shown = value[:60] if isinstance(value, str) else value
        raise ItemError(f"{label} {shown!r} {problem}")
    return value  # type: ignore[return-value]


# Tags the OCR executor puts on an image query: the text it read, and a note when it read none.
OCR_TEXT_TAG = "ocr_text"
OCR_NOTE_TAG = "ocr_note"
# When a photo holds more than one question (a hurried shot with half of its neighbour), the words of
# the one it is of (qbank.domain.segments.focus_segment), which the search uses instead of all it read;
# with its box [left, top, right, bottom] in the photo's pixels.
OCR_FOCUS_TAG = "ocr_focus"
OCR_FOCUS_BOX_TAG = "ocr_focus_box"
# What a photo's text is searched with unless the request names a mode: BM25 over the stems. (Hybrid
# adds the photo's CLIP vector; with no pretrained CLIP weights here its gain cannot be measured.)
OCR_SEARCH_MODE = "bm25"
# The text the OCR reader finds inside a figure at /index: stored as the image item's text, so BM25
# finds a figure by its labels, values and axis titles (its CLIP vector stays the image's).
FIGURE_TEXT_TAG = "figure_text"
# The figure found in a photo (qbank.media.regions): [left, top, right, bottom] in the photo's
# pixels, on the query, and on the chunk that holds its crop when it is matched (SearchPlan.
# searches_figure), whose CLIP vector searches the figures.
FIGURE_REGION_TAG = "figure_region"


# A page photo searched question by question (/search with ocr and page): each question the reader
# found is a chunk of the photo's query with its text, its box [left, top, right, bottom] in the
# photo's pixels and its number as printed; the indexer gives each chunk its own matches.
SEGMENT_BOX_TAG = "segment_box"
SEGMENT_NUMBER_TAG = "segment_number"


def segment_chunks(doc: Any) -> list[Any]:
    """The questions the OCR reader found on a page photo (chunks it tagged with their box)."""
    return [chunk for chunk in doc.chunks if SEGMENT_BOX_TAG in chunk.tags]


def figure_chunks(doc: Any) -> list[Any]:
    """The crops of the figure the OCR reader found in a photo query (chunks it tagged)."""
    return [chunk for chunk in doc.chunks if FIGURE_REGION_TAG in chunk.tags]


def query_text(doc: Any) -> str:
    """The words a query searches with: of the question a photo is of, else all the OCR reader read
    from the photo, else the query's own text."""
    return doc.tags.get(OCR_FOCUS_TAG) or doc.tags.get(OCR_TEXT_TAG) or doc.text or ""


def content_modality(doc: Any) -> str | None:
    """What a Document is, by clip-server's rule (``split_img_txt_da``): a doc with text is a text
    item, whatever else it carries (a uri beside a text is not fetched); one without text is an image
    when it has a blob, a tensor or a uri; None when it has no content. Encoder, indexer and client
    all classify with this."""
    if doc.text:
        return TEXT
    if doc.blob or doc.tensor is not None or doc.uri:
        return IMAGE
    return None


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


def tags_to_fields(
    doc_id: str, tags: dict[str, Any], max_tag_bytes: int = MAX_TAG_BYTES
) -> tuple[dict[str, str], dict[str, Any]]:
    """Split Document tags into the scalar columns and the free ``metadata`` JSON (at most
    ``max_tag_bytes`` as JSON: 10 MB of tags per item once took 3.6 GB in the indexer)."""
    scalars: dict[str, str] = {}
    metadata: dict[str, Any] = {}
    for key, value in (tags or {}).items():
        column = TAG_ALIASES.get(key, key)
        if column in SCALAR_FIELDS and column != "modality":
            scalars[column] = check_scalar(doc_id, column, value)
        else:
            metadata[key] = value
    if nesting_depth(metadata, MAX_TAG_DEPTH) > MAX_TAG_DEPTH:
        raise ItemError(f"item {doc_id!r}: tags nest deeper than {MAX_TAG_DEPTH} levels (lists and objects)")
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ItemError(f"item {doc_id!r}: tags are not JSON-serialisable: {exc}") from None
    if size > max_tag_bytes:
        raise ItemError(
            f"item {doc_id!r}: tags are {size} bytes as JSON, over the limit of {max_tag_bytes} (QBANK_MAX_TAG_BYTES)"
        )
    if "question_id" in scalars:
        check_id(scalars["question_id"], f"item {doc_id!r}: question_id", SCALAR_FIELDS["question_id"])
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
