"""Milvus executor: maps Documents to item rows and back; the store layer does the Milvus work.

Endpoints: /index (upsert by id), /search (dense, bm25 or hybrid; matches with scores and fields,
filterable), /update, /delete, /exists, /questions (a question's items), /count, /stats, /near_duplicates; /encode, /rank and / pass
through; any other endpoint is refused. Each request is all-or-nothing: it is checked whole
(qbank.service.params, qbank.service.mapping) before anything is written.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from docarray import DocumentArray
from jina import requests

from qbank.config import IndexerSettings
from qbank.domain.filters import build_filter
from qbank.domain.schema import (
    IMAGE,
    STEM,
    ItemError,
    figure_chunks,
    id_problem,
    query_text,
    segment_chunks,
)
from qbank.domain.search_plan import SearchPlan
from qbank.model.clip import model_identity
from qbank.service.checked import CheckedExecutor
from qbank.service.mapping import (
    MAX_REPORTED_ERRORS,
    check_ids,
    check_selector_ids,
    delete_expression,
    merged_update,
    question_order,
    row_to_item,
    row_to_match,
    rows_from_docs,
)
from qbank.service.metrics import IndexerSeries, registry_of
from qbank.service.params import (
    UNKNOWN_ENDPOINT,
    ParameterError,
    RequestTooLargeError,
    UnknownEndpointError,
    search_plan,
)
from qbank.service.ranking import ranked
from qbank.store import ItemStore, StoreError
from qbank.store.duplicates import find_near_duplicates


class QbankMilvusIndexer(CheckedExecutor):
    """Question items in one Milvus collection (Milvus Lite file by default, any Milvus by URI)."""

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.IndexerSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = IndexerSettings.take_from(kwargs)
        super().__init__(**kwargs)
        self.model_name = model_identity(self.settings.model)
        self.request_limits = self.settings.limits()
        self.default_weights = self.settings.weights()
        self.store = ItemStore(self.settings)
        self.series = IndexerSeries(registry_of(self), self._stored, lambda: self.store.connection.connects)
        try:
            self.logger.info(f"indexer ready: {self.store.describe()}")
        except StoreError as exc:  # Milvus down: serve anyway; requests fail fast until it is back
            self.logger.warning(f"indexer ready, Milvus is not: {exc}")

    __init__.__signature__ = IndexerSettings.executor_signature()

    def _stored(self) -> float:
        """The items stored, for qbank_items_stored at each scrape (NaN while Milvus is away)."""
        try:
            return float(self.store.count())
        except StoreError:
            return float("nan")

    async def readiness_problem(self) -> str | None:
        """Milvus must answer: the indexer serves without it (requests fail fast), but is not ready."""

        return await asyncio.to_thread(self.store.unanswered)

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
        rows = rows_from_docs(docs, self.store.dim, self.settings.max_tag_bytes)
        written = self.store.upsert(rows)
        self.series.written.labels("upsert").inc(written)
        self.logger.debug(f"upserted {written} items")
        return docs

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Nearest items for each query doc, as ``.matches`` (best first), with optional filters."""
        started = time.perf_counter()
        plan = self._search_request(docs, parameters)
        self.series.search_seconds.labels(plan.mode).observe(time.perf_counter() - started)
        return docs

    def _search_request(self, docs: DocumentArray, parameters: dict) -> SearchPlan:
        """Set each query doc's ``.matches`` as the request's plan says; returns the plan."""
        limit = parameters.get("limit", self.settings.default_limit)
        filters = dict(parameters.get("filter", {}))
        if "modality" in parameters:
            filters["modality"] = parameters["modality"]
        expr = build_filter(filters)
        rrf_k = parameters.get("rrf_k", self.settings.rrf_k)
        weights = parameters.get("weights") or self.default_weights
        group_by = parameters.get("group_by")  # "question_id": limit counts questions
        plan = search_plan(parameters, self.settings.search_mode)
        if not docs:
            return plan
        count = self.series.searches
        if not plan.photo:
            for doc in docs:
                count.labels(plan.mode, "text" if doc.text else "image").inc()
            self._planned(plan, docs, [d.text for d in docs], limit, expr, rrf_k, weights, group_by)
            return plan
        # Photo search: queries with text (read by the OCR executor, or their own) search the stems
        # with it; photos with none fall back to their CLIP vector (and say so in tags.ocr_note).
        words = [query_text(d) for d in docs]
        read = DocumentArray(d for d, w in zip(docs, words, strict=True) if w)
        unread = DocumentArray(d for d, w in zip(docs, words, strict=True) if not w)
        texts = [w for w in words if w]
        count.labels(plan.mode, "photo").inc(len(read))
        count.labels("dense", "photo").inc(len(unread))  # no text read: the photo's CLIP vector
        self._planned(plan, read, texts, limit, expr, rrf_k, weights, group_by)
        self._search(unread, [""] * len(unread), "dense", limit, expr, rrf_k, weights, group_by)
        # A page photo (page: true): each question found on it, by its own words.
        segments = DocumentArray(c for d in docs for c in segment_chunks(d) if c.text)
        segment_texts = [c.text for c in segments]
        question = SearchPlan.page_question()
        count.labels(question.mode, "page_question").inc(len(segments))
        self._planned(question, segments, segment_texts, limit, expr, rrf_k, weights, group_by)
        # The figure found in a photo, by its CLIP vector, against the bank's figures.
        figures = DocumentArray(c for d in docs for c in figure_chunks(d))
        count.labels("dense", "figure").inc(len(figures))
        figure_expr = build_filter({**filters, "modality": IMAGE})
        self._search(figures, [""] * len(figures), "dense", limit, figure_expr, rrf_k, weights, group_by)
        return plan

    def _planned(
        self,
        plan: SearchPlan,
        docs: DocumentArray,
        texts: list[str],
        limit: int,
        expr: str,
        rrf_k: int,
        weights: tuple[float, float] | None,
        group_by: str | None,
    ) -> None:
        """Set each doc's ``.matches`` as ``plan`` says: the store's candidate pool for its words
        (``texts``), ordered by the plan's ranking and cut to ``limit``."""
        pool = plan.candidates(limit)
        forms = self._search(docs, texts, plan.mode, pool, expr, rrf_k, weights, group_by, plan.part)
        if plan.ranking:
            for doc, text in zip(docs, texts, strict=True):
                doc.matches = ranked(plan, doc.matches, text, forms, limit)

    def _search(
        self,
        docs: DocumentArray,
        texts: list[str],
        mode: str,
        limit: int,
        expr: str,
        rrf_k: int,
        weights: tuple[float, float] | None,
        group_by: str | None = None,
        part: str = STEM,
    ) -> dict[str, str]:
        """Set each doc's ``.matches``: ``texts`` are the queries' words for bm25 and hybrid; with
        ``group_by``, ``limit`` groups (questions), each its best item. Returns the bm25 matches'
        match forms by id where the store keeps them, for ranking them by the text compared."""
        forms: dict[str, str] = {}
        if not docs:
            return forms
        most = self.settings.max_text_chars
        too_long = [f"{d.id!r} ({len(t)})" for d, t in zip(docs, texts, strict=True) if t and len(t) > most]
        if too_long:
            raise ItemError(
                f"query text over the limit of {most} characters (QBANK_MAX_TEXT_CHARS): "
                f"{', '.join(too_long[:MAX_REPORTED_ERRORS])}"
            )
        if mode != "dense":  # full text reads the query's words
            no_text = [d.id for d, t in zip(docs, texts, strict=True) if not (t or "").strip()][:MAX_REPORTED_ERRORS]
            if no_text:
                raise ItemError(f"search mode {mode!r} needs text queries; these have no text: {no_text}")
        if mode != "bm25":
            missing = [d.id for d in docs if d.embedding is None][:MAX_REPORTED_ERRORS]
            if missing:
                raise ItemError(f"query items without an embedding: {missing}")
            dim = int(np.size(docs[0].embedding))
            if not self.store.check_vectors(self.model_name, dim, create=False):
                return forms  # nothing indexed yet: no matches
        vectors = [d.embedding for d in docs]
        if mode == "dense":
            results, score_name = self.store.search(vectors, limit, expr, group_by), "similarity"
        elif mode == "bm25":
            results = self.store.search_text(texts, limit, expr, group_by, part, match_forms=True)
            forms = {hit["id"]: hit["match_form"] for hits in results for hit in hits if "match_form" in hit}
            score_name = "bm25"
        else:
            results = self.store.search_hybrid(
                vectors, texts, limit, expr, rrf_k=rrf_k, weights=weights, group_by=group_by
            )
            score_name = "weighted" if weights else "rrf"
        for doc, hits in zip(docs, results, strict=True):
            doc.matches = DocumentArray([row_to_match(hit, score_name) for hit in hits])
        return forms

    @requests(on="/update")
    def update(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        """Change stored items: new content (re-encoded) and/or tags merged over the stored ones.

        Every id must exist; otherwise nothing is written.
        """
        if not docs:
            return docs
        check_ids(docs)
        stored = {row["id"]: row for row in self.store.get(docs[:, "id"], with_vectors=True)}
        missing = [d.id for d in docs if d.id not in stored]
        if missing:
            raise ItemError(
                f"/update: {len(missing)} items do not exist, nothing written: {missing[:MAX_REPORTED_ERRORS]}"
            )
        merged = DocumentArray(merged_update(doc, stored[doc.id]) for doc in docs)
        rows = rows_from_docs(merged, self.store.dim, self.settings.max_tag_bytes)
        self.store.check_vectors(self.model_name, len(rows[0]["embedding"]), create=False)
        self.series.written.labels("upsert").inc(self.store.upsert(rows))
        return docs

    @requests(on="/delete")
    def delete(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> dict[str, int]:
        """Delete by item ids (docs or ``ids``), ``question_ids`` or ``filter``; refuses an empty selector,
        and a delete of more than QBANK_MAX_DELETE items unless ``allow_many`` is true."""
        ids = (list(docs[:, "id"]) if docs else []) + parameters.get("ids", [])
        expr = delete_expression(ids, parameters.get("question_ids", []), parameters.get("filter"))
        matched = self.store.count(expr)
        if matched > self.settings.max_delete and not parameters.get("allow_many", False):
            raise ParameterError(
                f"/delete would remove {matched} items, more than QBANK_MAX_DELETE={self.settings.max_delete}: "
                "nothing deleted. Send allow_many: true to delete them"
            )
        deleted = self.store.delete(expr)
        self.series.written.labels("delete").inc(deleted)
        self.logger.info(f"deleted {deleted} items")
        return {"deleted": deleted}

    @requests(on="/exists")
    def exists(self, parameters: dict, **kwargs: Any) -> dict[str, list[str]]:
        """Which of ``ids`` are stored: lets an import resume without re-encoding what is there.
        An id that could never be stored is simply not there."""
        ids = [i for i in parameters.get("ids", []) if id_problem(i) is None]
        return {"existing": [row["id"] for row in self.store.get(ids)]}

    @requests(on="/questions")
    def questions(self, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Every stored item of ``question_ids``: a question whole (its stem and all its figures), as
        the search page shows it. More than QBANK_MAX_RESULTS_PER_REQUEST items is refused, not cut."""
        question_ids = parameters.get("question_ids", [])
        check_selector_ids("/questions", "question_id", question_ids)
        if not question_ids:
            return DocumentArray()
        most = self.request_limits.max_results
        rows = self.store.query(build_filter({"question_id": question_ids}), most + 1)
        if len(rows) > most:
            raise RequestTooLargeError(
                f"/questions: {len(question_ids)} questions hold more than {most} items, over the limit per request "
                "(QBANK_MAX_RESULTS_PER_REQUEST): ask for fewer questions"
            )
        return DocumentArray(row_to_item(row) for row in sorted(rows, key=question_order(question_ids)))

    @requests(on="/count")
    def count(self, parameters: dict, **kwargs: Any) -> dict[str, int]:
        """Number of stored items, optionally under a filter."""
        return {"count": self.store.count(build_filter(parameters.get("filter")))}

    @requests(on="/near_duplicates")
    def near_duplicates(self, parameters: dict, **kwargs: Any) -> dict[str, Any]:
        """Groups of near-duplicate stems (``by`` text or dense, ``threshold``, ``filter``); see qbank.domain.duplicates."""
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
