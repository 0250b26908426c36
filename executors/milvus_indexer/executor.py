"""Milvus executor: maps Documents to item rows and back; the store layer does the Milvus work.

Endpoints: /index (upsert by id), /search (dense, bm25 or hybrid; matches with scores and fields,
filterable), /update,
/delete, /exists, /count, /stats. Any other endpoint (/encode, /rank) passes through unchanged. Each request
is all-or-nothing: it is validated whole before anything is written.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from docarray import Document, DocumentArray
from jina import Executor, requests
from jina.constants import __default_endpoint__

from qbank.clip_model import model_identity
from qbank.config import IndexerSettings
from qbank.duplicates import find_near_duplicates
from qbank.params import UNKNOWN_ENDPOINT, ParameterError, UnknownEndpointError, check_request
from qbank.schema import (
    IMAGE,
    MAX_TAG_BYTES,
    MODALITIES,
    SCALAR_FIELDS,
    TEXT,
    URI_MAX_LENGTH,
    ItemError,
    check_id,
    fields_to_tags,
    item_errors_message,
    item_row,
    tags_to_fields,
)
from qbank.store import ItemStore, StoreError, build_filter, ids_filter

MAX_REPORTED_ERRORS = 20


def check_id_quietly(value: str) -> bool:
    try:
        check_id(value)
    except ItemError:
        return False
    return True


def _raise_all(errors: list[str], total: int) -> None:
    if errors:
        raise ItemError(item_errors_message(errors, total, "rejected, nothing written", MAX_REPORTED_ERRORS))


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
    modality = (
        doc.modality
        if doc.modality in MODALITIES
        else (IMAGE if (doc.uri or doc.blob or doc.tensor is not None) else TEXT)
    )
    scalars, metadata = tags_to_fields(doc.id, dict(doc.tags), max_tag_bytes)
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
        text=doc.text or "",
        image_uri=uri,
        subject=scalars.get("subject", ""),
        grade=scalars.get("grade", ""),
        qtype=scalars.get("qtype", ""),
        metadata=metadata,
    )


def row_to_match(hit: dict[str, Any], score_name: str = "similarity") -> Document:
    """A stored row as a match. ``scores['score']`` always ranks (higher is better); the mode's own
    score sits beside it: dense ``similarity`` (and clip-as-service's ``cosine`` distance), ``bm25``,
    or the hybrid fusion's ``rrf`` / ``weighted``."""
    entity = hit.get("entity", hit)
    match = Document(
        id=hit["id"],
        text=entity.get("text") or None,
        uri=entity.get("image_uri") or None,
        modality=entity.get("modality") or None,
        tags=fields_to_tags(entity),
    )
    score = float(hit["distance"])
    match.scores["score"].value = score
    match.scores[score_name].value = score
    if score_name == "similarity":
        # docarray v1 / clip-as-service convention: scores['cosine'] is a distance (lower is closer).
        match.scores["cosine"].value = 1.0 - score
        match.scores["cosine"].op_name = "cosine_distance"
    return match


class QbankMilvusIndexer(Executor):
    """Question items in one Milvus collection (Milvus Lite file by default, any Milvus by URI)."""

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.IndexerSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = IndexerSettings.take_from(kwargs)
        super().__init__(**kwargs)
        self.model_name = model_identity(self.settings.model)
        self.store = ItemStore(self.settings)
        try:
            self.logger.info(f"indexer ready: {self.store.describe()}")
        except StoreError as exc:  # Milvus down: serve anyway; requests fail fast until it is back
            self.logger.warning(f"indexer ready, Milvus is not: {exc}")

    __init__.__signature__ = IndexerSettings.executor_signature()

    async def __acall__(self, req_endpoint: str, **kwargs: Any) -> Any:
        """Every request is checked before any work: a known endpoint, its size, and each parameter
        for its exact type (qbank.params); handlers get the checked parameters."""
        if req_endpoint == __default_endpoint__:  # where jina sends an endpoint no handler declares
            raise UnknownEndpointError(UNKNOWN_ENDPOINT)
        docs = kwargs.get("docs")
        kwargs["parameters"] = check_request(
            req_endpoint, kwargs.get("parameters"), len(docs) if docs is not None else 0, self.settings.limits()
        )
        return await super().__acall__(req_endpoint, **kwargs)

    def _rows(self, docs: DocumentArray) -> list[dict[str, Any]]:
        errors, rows, seen = [], [], set()
        dim = self.store.dim
        for doc in docs:
            if doc.id in seen:
                errors.append(f"item {doc.id!r}: duplicate id in one request")
                continue
            seen.add(doc.id)
            try:
                row = doc_to_row(doc, dim, self.settings.max_tag_bytes)
            except ItemError as exc:
                errors.append(str(exc))
                continue
            dim = dim or len(row["embedding"])
            rows.append(row)
        _raise_all(errors, len(docs))
        return rows

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        """Upsert by item id: indexing the same items twice never duplicates them."""
        if not docs:
            return docs
        dims = {int(np.size(d.embedding)) for d in docs if d.embedding is not None}
        if len(dims) == 1:  # one shape: whether it is this collection's model is the question, and
            self.store.check_vectors(self.model_name, dims.pop(), create=True)  # the guard names both
        else:  # mixed shapes: the per-item check below names the odd items
            self.store.connect()
        rows = self._rows(docs)
        written = self.store.upsert(rows)
        self.logger.debug(f"upserted {written} items")
        return docs

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Nearest items for each query doc, as ``.matches`` (best first), with optional filters."""
        limit = parameters.get("limit", self.settings.default_limit)
        filters = dict(parameters.get("filter", {}))
        if "modality" in parameters:
            filters["modality"] = parameters["modality"]
        expr = build_filter(filters)
        mode = parameters.get("mode", self.settings.search_mode)
        rrf_k = parameters.get("rrf_k", self.settings.rrf_k)
        weights = parameters.get("weights") or self.settings.weights()
        if not docs:
            return docs
        if mode != "dense":  # full text reads the query's words
            no_text = [d.id for d in docs if not (d.text or "").strip()][:MAX_REPORTED_ERRORS]
            if no_text:
                raise ItemError(f"search mode {mode!r} needs text queries; these have no text: {no_text}")
        if mode != "bm25":
            missing = [d.id for d in docs if d.embedding is None][:MAX_REPORTED_ERRORS]
            if missing:
                raise ItemError(f"query items without an embedding: {missing}")
            dim = int(np.size(docs[0].embedding))
            if not self.store.check_vectors(self.model_name, dim, create=False):
                return docs  # nothing indexed yet: no matches
        vectors = [d.embedding for d in docs]
        texts = [d.text for d in docs]
        if mode == "dense":
            results, score_name = self.store.search(vectors, limit, expr), "similarity"
        elif mode == "bm25":
            results, score_name = self.store.search_text(texts, limit, expr), "bm25"
        else:
            results = self.store.search_hybrid(vectors, texts, limit, expr, rrf_k=rrf_k, weights=weights)
            score_name = "weighted" if weights else "rrf"
        for doc, hits in zip(docs, results, strict=True):
            doc.matches = DocumentArray([row_to_match(hit, score_name) for hit in hits])
        return docs

    @requests(on="/update")
    def update(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        """Change stored items: new content (re-encoded) and/or tags merged over the stored ones.

        Every id must exist; otherwise nothing is written.
        """
        if not docs:
            return docs
        errors = []
        for doc in docs:
            try:
                check_id(doc.id, "item id")
            except ItemError as exc:
                errors.append(str(exc))
        _raise_all(errors, len(docs))
        stored = {row["id"]: row for row in self.store.get(docs[:, "id"], with_vectors=True)}
        missing = [d.id for d in docs if d.id not in stored]
        if missing:
            raise ItemError(
                f"/update: {len(missing)} items do not exist, nothing written: {missing[:MAX_REPORTED_ERRORS]}"
            )
        merged = DocumentArray()
        for doc in docs:
            old = stored[doc.id]
            tags = fields_to_tags(old)
            tags["question_id"] = old["question_id"]
            tags.update(doc.tags)
            new = Document(id=doc.id, tags=tags, modality=doc.modality or old["modality"])
            if doc.embedding is not None:
                new.embedding, new.text, new.uri = doc.embedding, doc.text, doc.uri
            else:
                new.embedding, new.text, new.uri = old["embedding"], old["text"], old["image_uri"] or None
            merged.append(new)
        rows = self._rows(merged)
        self.store.check_vectors(self.model_name, len(rows[0]["embedding"]), create=False)
        self.store.upsert(rows)
        return docs

    @requests(on="/delete")
    def delete(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> dict[str, int]:
        """Delete by item ids (docs or ``ids``), ``question_ids`` or ``filter``; refuses an empty selector,
        and a delete of more than QBANK_MAX_DELETE items unless ``allow_many`` is true."""
        ids = (list(docs[:, "id"]) if docs else []) + parameters.get("ids", [])
        question_ids = parameters.get("question_ids", [])
        for label, values in (("id", ids), ("question_id", question_ids)):
            for value in values:
                try:
                    check_id(value, label)
                except ItemError as exc:
                    raise ParameterError(f"/delete: {exc}") from None
        clauses = []
        if ids:
            clauses.append(ids_filter(ids))
        if question_ids:
            clauses.append(build_filter({"question_id": question_ids}))
        if parameters.get("filter"):
            clauses.append(build_filter(parameters["filter"]))
        if not clauses:
            raise ParameterError(
                "/delete needs docs, 'ids', 'question_ids' or a non-empty 'filter' (refusing to delete everything)"
            )
        expr = " or ".join(f"({c})" for c in clauses)
        matched = self.store.count(expr)
        if matched > self.settings.max_delete and not parameters.get("allow_many", False):
            raise ParameterError(
                f"/delete would remove {matched} items, more than QBANK_MAX_DELETE={self.settings.max_delete}: "
                "nothing deleted. Send allow_many: true to delete them"
            )
        deleted = self.store.delete(expr)
        self.logger.info(f"deleted {deleted} items")
        return {"deleted": deleted}

    @requests(on="/exists")
    def exists(self, parameters: dict, **kwargs: Any) -> dict[str, list[str]]:
        """Which of ``ids`` are stored: lets an import resume without re-encoding what is there.
        An id that could never be stored is simply not there."""
        ids = [i for i in parameters.get("ids", []) if check_id_quietly(i)]
        return {"existing": [row["id"] for row in self.store.get(ids)]}

    @requests(on="/count")
    def count(self, parameters: dict, **kwargs: Any) -> dict[str, int]:
        """Number of stored items, optionally under a filter."""
        return {"count": self.store.count(build_filter(parameters.get("filter")))}

    @requests(on="/near_duplicates")
    def near_duplicates(self, parameters: dict, **kwargs: Any) -> dict[str, Any]:
        """Groups of near-duplicate stems (``by`` text or dense, ``threshold``, ``filter``); see qbank.duplicates."""
        by = parameters.get("by", "text")
        threshold = parameters.get("threshold", 0.8)
        neighbours = parameters.get("neighbours", 10)
        max_items = parameters.get("max_items", 100_000)
        expr = build_filter(parameters.get("filter"))
        found = find_near_duplicates(self.store, expr, by, float(threshold), neighbours, max_items)
        self.logger.info(
            f"near duplicates by {by} >= {threshold}: {len(found['groups'])} groups in {found['scanned']} stems"
        )
        return found

    @requests(on="/stats")
    def stats(self, **kwargs: Any) -> dict[str, Any]:
        """Collection, model, dimension, index type, count and where Milvus is."""
        return self.store.describe()

    @requests(on=["/encode", "/rank", "/"])
    def passthrough(self, **kwargs: Any) -> None:
        """The encoder's endpoints travel through unchanged.

        Handling them here rather than letting the gateway skip this executor is what makes
        clip_client work over HTTP: jina 3.34's gateway stamps a skipped executor's route with a
        naive ``endTime``, which jina's HTTP client then fails to parse (the
        "'functools.partial' object has no attribute '__name__'" error hides that ParseError).
        """
        return None

    @requests
    def unknown(self, **kwargs: Any) -> None:
        """Takes every undeclared endpoint so none is skipped silently; refused (see ``__acall__``)."""
        raise UnknownEndpointError(UNKNOWN_ENDPOINT)

    def close(self) -> None:
        self.store.close()
        super().close()
