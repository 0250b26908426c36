"""Documents <-> stored item rows, and the selectors built from request parameters.

What the indexer executor does with a request, short of talking to Milvus: pure functions, tested
without a Flow (tests/test_mapping.py). The executor only calls these and the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from docarray import Document, DocumentArray

from qbank.domain.filters import build_filter, ids_filter
from qbank.domain.schema import (
    FIGURE_TEXT_TAG,
    IMAGE,
    MAX_TAG_BYTES,
    MODALITIES,
    SCALAR_FIELDS,
    TEXT,
    URI_MAX_LENGTH,
    ItemError,
    check_id,
    content_modality,
    fields_to_tags,
    item_errors_message,
    item_row,
    tags_to_fields,
)
from qbank.service.params import ParameterError

MAX_REPORTED_ERRORS = 20


def raise_all(errors: list[str], total: int) -> None:
    """One ItemError naming every bad item, when there is any."""
    if errors:
        raise ItemError(item_errors_message(errors, total, "rejected, nothing written", MAX_REPORTED_ERRORS))


def check_ids(docs: DocumentArray) -> None:
    """Every doc's id follows the id rule, else one error naming each that does not."""
    errors = []
    for doc in docs:
        try:
            check_id(doc.id, "item id")
        except ItemError as exc:
            errors.append(str(exc))
    raise_all(errors, len(docs))


def chunks_problem(doc: Document) -> str | None:
    """Stored items are the documents sent, one item each: chunks would be dropped without a word,
    so a document that has them is refused (its chunks can be sent as items of their own)."""
    if not len(doc.chunks):
        return None
    return (
        f"item {doc.id!r}: has {len(doc.chunks)} chunks, and /index and /update store the documents sent, "
        "one item each: send each chunk as a document of its own (tags.question_id ties it to its question)"
    )


def doc_to_row(doc: Document, dim: int | None, max_tag_bytes: int = MAX_TAG_BYTES) -> dict[str, Any]:
    """One item row from a Document with an embedding; raises ItemError naming the item and field."""
    check_id(doc.id, "item id")
    if doc.embedding is None:
        raise ItemError(f"item {doc.id!r}: no embedding (send content through the encoder, or a vector)")
    vector = (
        [float(x) for x in doc.embedding.reshape(-1)]
        if hasattr(doc.embedding, "reshape")
        else [float(x) for x in doc.embedding]
    )
    if dim is not None and len(vector) != dim:
        raise ItemError(f"item {doc.id!r}: embedding has {len(vector)} dimensions, the collection has {dim}")
    if not all(math.isfinite(x) for x in vector):
        raise ItemError(f"item {doc.id!r}: embedding holds NaN or infinite values")
    problem = chunks_problem(doc)
    if problem:
        raise ItemError(problem)
    modality = doc.modality if doc.modality in MODALITIES else (content_modality(doc) or TEXT)
    tags = dict(doc.tags)
    figure_text = str(tags.pop(FIGURE_TEXT_TAG, "") or "")  # read by the OCR reader, for an image item
    scalars, metadata = tags_to_fields(doc.id, tags, max_tag_bytes)
    question_limit = SCALAR_FIELDS["question_id"]
    if not scalars.get("question_id") and len(doc.id.encode("utf-8")) > question_limit:
        raise ItemError(
            f"item {doc.id[:60]!r}: has no tags.question_id, and its id ({len(doc.id.encode('utf-8'))} bytes) "
            f"cannot stand for one: question ids are at most {question_limit} bytes. Send tags.question_id"
        )
    uri = doc.uri or ""
    if uri.startswith("data:") or len(uri) > URI_MAX_LENGTH:
        uri = ""  # inline image data is not a reference worth storing
    return item_row(
        doc.id,
        vector,
        question_id=scalars.pop("question_id", ""),
        modality=modality,
        text=doc.text or (figure_text if modality == IMAGE else ""),
        image_uri=uri,
        subject=scalars.get("subject", ""),
        grade=scalars.get("grade", ""),
        qtype=scalars.get("qtype", ""),
        metadata=metadata,
    )


def row_to_item(row: dict[str, Any]) -> Document:
    """A stored row as the Document it was indexed as (no vector): id, text or image uri, tags."""
    return Document(
        id=row["id"],
        text=row.get("text") or None,
        uri=row.get("image_uri") or None,
        modality=row.get("modality") or None,
        tags=fields_to_tags(row),
    )


def question_order(question_ids: list[str]) -> Callable[[dict[str, Any]], tuple]:
    """Sort key for rows: questions in the order asked, then the stem before the figures, figures by index."""
    position = {qid: i for i, qid in enumerate(question_ids)}

    def key(row: dict[str, Any]) -> tuple:
        modality = row.get("modality") or ""
        index = row["id"].rsplit(":", 1)[-1]
        return (position.get(row.get("question_id"), len(position)), modality != TEXT, len(index), index, row["id"])

    return key


def row_to_match(hit: dict[str, Any], score_name: str = "similarity") -> Document:
    """A stored row as a match. ``scores['score']`` always ranks (higher is better); the mode's own
    score sits beside it: dense ``similarity`` (and clip-as-service's ``cosine`` distance), ``bm25``,
    or the hybrid fusion's ``rrf`` / ``weighted``."""
    match = row_to_item({**hit.get("entity", hit), "id": hit["id"]})
    score = float(hit["distance"])
    match.scores["score"].value = score
    match.scores[score_name].value = score
    if score_name == "similarity":
        # docarray v1 / clip-as-service convention: scores['cosine'] is a distance (lower is closer).
        match.scores["cosine"].value = 1.0 - score
        match.scores["cosine"].op_name = "cosine_distance"
    return match


def rows_from_docs(docs: DocumentArray, dim: int | None, max_tag_bytes: int = MAX_TAG_BYTES) -> list[dict[str, Any]]:
    """Every doc as a row, checked whole before anything is written: one error names every bad item."""
    errors, rows, seen = [], [], set()
    for doc in docs:
        if doc.id in seen:
            errors.append(f"item {doc.id!r}: duplicate id in one request")
            continue
        seen.add(doc.id)
        try:
            row = doc_to_row(doc, dim, max_tag_bytes)
        except ItemError as exc:
            errors.append(str(exc))
            continue
        dim = dim or len(row["embedding"])
        rows.append(row)
    raise_all(errors, len(docs))
    return rows


def merged_update(doc: Document, old: dict[str, Any]) -> Document:
    """/update of one stored row: its tags merged under the doc's; new content when the doc brings an
    embedding (the encoder made it), else the stored text, uri and vector."""
    tags = fields_to_tags(old)
    tags.pop("modality", None)  # a column of its own, carried by the Document (it would land in metadata)
    tags["question_id"] = old["question_id"]
    tags.update(doc.tags)
    new = Document(id=doc.id, tags=tags, modality=doc.modality or old["modality"])
    if doc.embedding is not None:
        new.embedding, new.text, new.uri = doc.embedding, doc.text, doc.uri
    else:
        new.embedding, new.text, new.uri = old["embedding"], old["text"], old["image_uri"] or None
    return new


def check_selector_ids(endpoint: str, label: str, values: list[str]) -> None:
    """Each of ``values`` is an id (ParameterError naming the endpoint, the value and the rule)."""
    for value in values:
        try:
            check_id(value, label)
        except ItemError as exc:
            raise ParameterError(f"{endpoint}: {exc}") from None


def delete_expression(ids: list[str], question_ids: list[str], filters: dict[str, Any] | None) -> str:
    """The Milvus expression of a /delete: items by id, by question, or by filter (any of them).
    Refuses an empty selector, so that no delete ever means "everything"."""
    check_selector_ids("/delete", "id", ids)
    check_selector_ids("/delete", "question_id", question_ids)
    clauses = []
    if ids:
        clauses.append(ids_filter(ids))
    if question_ids:
        clauses.append(build_filter({"question_id": question_ids}))
    if filters:
        clauses.append(build_filter(filters))
    if not clauses:
        raise ParameterError(
            "/delete needs docs, 'ids', 'question_ids' or a non-empty 'filter' (refusing to delete everything)"
        )
    return " or ".join(f"({c})" for c in clauses)
