"""Question items in one Milvus collection: write (all-or-nothing), read, search (dense, BM25,
hybrid), delete, count.

The same code runs on a Milvus Lite file (the default) and on a Milvus server or cluster by URI;
the connection (:mod:`qbank.store.connection`) and the collection's shape and identity
(:mod:`qbank.store.collection`) live beside it. Filters come in built and escaped
(:mod:`qbank.domain.filters`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from qbank.config import IndexerSettings
from qbank.domain.filters import ids_filter
from qbank.domain.fusion import weighted_fusion
from qbank.domain.schema import ANALYSIS, STEM, TEXT, TEXT_MAX_BYTES
from qbank.domain.text import MATCH_FORM_SINCE, normalise, search_form
from qbank.store.capabilities import FULL_TEXT_SINCE, Capabilities
from qbank.store.collection import (
    ANALYSIS_SPARSE_FIELD,
    ANALYSIS_TEXT_FIELD,
    OUTPUT_FIELDS,
    SCHEMA_VERSION,
    SEARCH_TEXT_FIELD,
    SPARSE_FIELD,
    VECTOR_FIELD,
    Identity,
    check_model,
    collection_schema,
    read_identity,
    vector_index_type,
    vector_search_params,
)
from qbank.store.connection import MilvusConnection
from qbank.store.errors import DiskFullError, FullTextUnavailableError, MilvusUnavailableError, StoreError
from qbank.store.lite import disk_needed

logger = logging.getLogger("qbank.store")

GET_CHUNK = 1000  # ids per query expression
# Grouped searches where Milvus cannot group (hybrid; servers before 2.4) fetch this many items per
# wanted group and keep each group's best: "10 questions" is then 10 unless one question holds most
# of the nearest items. Where Milvus groups (group_by_field), it is exact.
GROUP_OVERFETCH = 4


def first_per_group(hits: list[dict[str, Any]], field: str, limit: int) -> list[dict[str, Any]]:
    """The best hit of each ``field`` value, best first, at most ``limit``: hits arrive best first.
    Applied to Milvus' own grouped results too (the 2.3.5 server accepted group_by_field and
    returned the same question twice)."""
    seen: set[Any] = set()
    kept = []
    for hit in hits:
        key = hit.get("entity", {}).get(field, hit.get("id"))
        if key not in seen:
            seen.add(key)
            kept.append(hit)
            if len(kept) == limit:
                break
    return kept


class ItemStore:
    """The item collection: created on first write, checked against the model on every write/search.

    Until the collection exists, reads answer empty (:meth:`_ready`); every call connects first, so
    after an outage a fresh identity is read before anything else.
    """

    def __init__(self, settings: IndexerSettings):
        self.settings = settings
        self.collection = settings.collection
        self.identity: Identity | None = None
        self.capabilities: Capabilities | None = None
        # Every read asks for the configured consistency, whatever the collection was created with
        # (a collection made elsewhere, or before this setting, defaults to Bounded on a server):
        # counts and gets, and searches (QBANK_SEARCH_CONSISTENCY_LEVEL: see IndexerSettings).
        self._consistency = {"consistency_level": settings.consistency_level}
        self._search_consistency = {"consistency_level": settings.search_consistency_level}
        self._create_lock = threading.Lock()
        self.connection = MilvusConnection(settings, on_connect=self._read_identity)
        self.lite = self.connection.lite
        self.where = self.connection.where
        if self.lite is not None:  # the embedded default must work at start: its failure is a fault
            self.connection.client()
            return
        try:
            self.connection.client()
        except MilvusUnavailableError as exc:
            logger.warning("%s; the indexer starts anyway and connects on the next request", exc)

    @property
    def model(self) -> str | None:
        return self.identity.model if self.identity else None

    @property
    def dim(self) -> int | None:
        return self.identity.dim if self.identity else None

    @property
    def full_text(self) -> bool:
        return bool(self.identity and self.identity.full_text)

    @property
    def reads_search_form(self) -> bool:
        """BM25 reads the matching form of the text (schema 3), not the raw text (schema 2)."""
        return bool(self.identity and self.identity.search_form)

    @property
    def reads_reading_form(self) -> bool:
        """The matching form is built on the reading form (schema 4: LaTeX and HTML read as text)."""
        return bool(self.identity and self.identity.schema >= 4)

    @property
    def search_schema(self) -> int:
        """The schema whose matching form this collection's BM25 field holds (qbank.domain.text.search_form)."""
        return self.identity.schema if self.identity else SCHEMA_VERSION

    @property
    def analyzer(self) -> str | None:
        return self.identity.analyzer if self.identity else None

    def _read_identity(self, client: Any) -> None:
        self.capabilities = self._read_capabilities(client)
        self.identity = read_identity(lambda *a, **k: self.connection.invoke(client, *a, **k), self.collection)
        logger.info(
            "connected to Milvus %s at %s, collection %s (model=%s, dim=%s)",
            self.capabilities.version,
            self.where,
            self.collection,
            self.model,
            self.dim,
        )
        if self.full_text and self.reads_search_form and self.search_schema < SCHEMA_VERSION:
            logger.warning(
                "collection %s is schema %s: its BM25 reads %s, not the reading form of schema %s (LaTeX and "
                "HTML read as text, powers and subscripts as a page reads them). To search that way, import the "
                "bank into a new collection (QBANK_COLLECTION=<new name>, then qbank import) and switch to it",
                self.collection,
                self.identity.schema,
                "the stems' raw text (LaTeX and HTML as written)"
                if not self.reads_reading_form
                else "their reading form with ^ and _ kept",
                SCHEMA_VERSION,
            )

    @property
    def known_capabilities(self) -> Capabilities:
        """What this Milvus can do as read at connect; before any connect, taken as current."""
        return self.capabilities or Capabilities.of("unknown")

    def _read_capabilities(self, client: Any) -> Capabilities:
        """The features of the Milvus behind ``client``, by its version (qbank.store.capabilities)."""
        if self.lite is not None:
            return Capabilities.of_lite()
        try:
            version = self.connection.invoke(client, "get_server_version")
        except MilvusUnavailableError:
            raise
        except StoreError as exc:
            if "UNIMPLEMENTED" in str(exc):  # Milvus Lite's own server binary, reached by URI
                return Capabilities.of_lite()
            logger.warning("Milvus at %s did not say its version (%s): taken as current", self.where, exc)
            version = "unknown"
        return Capabilities.of(str(version))

    def connect(self) -> None:
        """Connect now if not connected (reads the collection's model and dimension)."""
        self.connection.client()

    def _ready(self) -> bool:
        """Connected, and the collection exists (until the first write there is nothing to read)."""
        self.connection.client()
        return self.identity is not None

    def check_vectors(self, model: str, dim: int, create: bool) -> bool:
        """True when the collection exists and holds this model's vectors; creates it if asked."""
        self.connection.client()
        with self._create_lock:
            if self.identity is None:
                if not create:
                    return False
                capabilities = self.known_capabilities
                if not capabilities.full_text:
                    logger.warning(
                        "Milvus %s at %s has no full-text search (it needs Milvus >= 2.5): collection %s "
                        "is created for dense search only; bm25 and hybrid requests will be refused",
                        capabilities.version,
                        self.where,
                        self.collection,
                    )
                schema, index, identity = collection_schema(self.settings, model, dim, capabilities)
                self.connection.call(
                    "create_collection",
                    self.collection,
                    schema=schema,
                    index_params=index,
                    consistency_level=self.settings.consistency_level,
                )
                self.identity = identity
                logger.info(
                    "created collection %s for model %s (dim %d, %s)", self.collection, model, dim, identity.index_type
                )
        check_model(self.identity, self.collection, model, dim)
        return True

    def upsert(self, rows: list[dict[str, Any]]) -> int:
        """Write ``rows`` in one Milvus call, so a request is stored whole or not at all.

        One upsert call is one write on Milvus Lite (what failed is not in the file after a
        restart) and one insert message on a server; the executors cap a request's items
        (QBANK_MAX_DOCS_PER_REQUEST), so no request needs more than one call. A failed write is
        never visible (see :meth:`_write`).
        """
        if not rows:
            return 0
        # Milvus Lite 2.5.1 upserts by deleting the stored rows, then inserting: when the insert
        # fails, the delete stays, on disk too (measured: a refused upsert of an existing id lost
        # that item). So on Lite the stored versions are read first and put back after a failure.
        previous = self._stored_versions([row["id"] for row in rows]) if self.lite is not None else []
        stored_rows = self._with_search_form(rows)
        try:
            result = self.connection.write(
                "upsert",
                "nothing of this request was stored",
                self.collection,
                stored_rows,
                disk_bytes=disk_needed(stored_rows) if self.lite is not None else 0,
            )
        except (MilvusUnavailableError, DiskFullError):
            raise
        except StoreError as exc:
            if previous:
                raise StoreError(f"{exc}{self._restore(previous)}") from None
            raise
        return int(result.get("upsert_count", len(rows)))

    def _with_search_form(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with the matching form of their text, which BM25 reads (schema 3)."""
        if not self.reads_search_form:
            return rows
        schema = self.search_schema
        formed = [
            {**row, SEARCH_TEXT_FIELD: search_form(row.get("text") or "", TEXT_MAX_BYTES, schema)} for row in rows
        ]
        if self.identity and self.identity.analysis:  # a question's analysis, on its stem's row only
            for row in formed:
                analysis = (row.get("metadata") or {}).get("analysis") if row.get("modality") == TEXT else None
                row[ANALYSIS_TEXT_FIELD] = search_form(str(analysis or ""), TEXT_MAX_BYTES, schema)
        return formed

    def _bm25_queries(self, texts: Sequence[str]) -> list[str]:
        """The queries' words in the form the collection's BM25 reads: the matching form on schema 3,
        as given on a schema 2 collection (whose stored tokens are the raw text's)."""
        if self.reads_search_form:
            return [search_form(text, TEXT_MAX_BYTES, self.search_schema) for text in texts]
        return list(texts)

    def _stored_versions(self, ids: list[str]) -> list[dict[str, Any]]:
        """The stored rows (vectors included) of those ``ids`` that exist. Milvus Lite cannot return
        the vectors of unflushed rows under a non-FLAT index ("Growing segment loss raw data"): then
        the upsert goes ahead without a way back, and the log says so."""
        existing = [row["id"] for row in self.get(ids)]
        if not existing:
            return []
        try:
            return self.get(existing, with_vectors=True)
        except MilvusUnavailableError:
            raise
        except StoreError as exc:
            logger.warning(
                "cannot read the stored vectors of %d items before upserting them (%s): if the upsert fails, "
                "Milvus Lite may lose their stored versions",
                len(existing),
                exc,
            )
            return []

    def _restore(self, previous: list[dict[str, Any]]) -> str:
        """Write back the stored versions a failed Lite upsert deleted; says so when it cannot."""
        try:
            self.connection.call("upsert", self.collection, self._with_search_form(previous))
        except StoreError as exc:
            logger.error("could not restore %d items after a failed upsert: %s", len(previous), exc)
            return f" (and the stored versions of {len(previous)} items could not be put back: {exc})"
        return ""

    def groups_in_milvus(self) -> bool:
        """Whether Milvus itself groups a dense or BM25 search (group_by_field, Milvus >= 2.4; measured:
        Lite 2.5.1 groups both, the 2.3.5 server ignored it). Hybrid search is always grouped here:
        Lite 2.5.1 returned a question twice from a grouped hybrid search."""
        return bool(self.capabilities and self.capabilities.group_by)

    def _group_plan(self, limit: int, group_by: str | None, native: bool) -> tuple[int, dict[str, Any]]:
        """(items to fetch, extra search arguments) for a search of ``limit`` groups."""
        if not group_by:
            return limit, {}
        if native:
            return limit, {"group_by_field": group_by}
        return min(limit * GROUP_OVERFETCH, self.settings.max_limit), {}

    @staticmethod
    def _grouped(results: list[list[dict[str, Any]]], group_by: str | None, limit: int) -> list[list[dict[str, Any]]]:
        return [first_per_group(hits, group_by, limit) for hits in results] if group_by else results

    def search(
        self, vectors: Sequence[Sequence[float]], limit: int, expr: str = "", group_by: str | None = None
    ) -> list[list[dict[str, Any]]]:
        """Nearest items by vector; with ``group_by`` (a scalar field), ``limit`` groups, each its best item."""
        if not self._ready():
            return [[] for _ in vectors]
        fetch, grouping = self._group_plan(limit, group_by, self.groups_in_milvus())
        results = self.connection.call(
            "search",
            self.collection,
            data=[list(map(float, v)) for v in vectors],
            anns_field=VECTOR_FIELD,
            limit=fetch,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params=self._dense_params(fetch),
            **grouping,
            **self._search_consistency,
        )
        return self._grouped(results, group_by, limit)

    def _dense_params(self, limit: int) -> dict[str, Any]:
        return vector_search_params(self.settings, self.identity.index_type if self.identity else None, limit)

    def _require_full_text(self, mode: str) -> None:
        if not self.full_text and self.capabilities and not self.capabilities.full_text:
            raise FullTextUnavailableError(
                f"search mode {mode!r}: {self.capabilities.missing('full-text search', FULL_TEXT_SINCE)} "
                f"(at {self.where}); search with mode 'dense', or use a Milvus >= 2.5 (QBANK_MILVUS_URI)"
            )
        if not self.full_text:
            raise FullTextUnavailableError(
                f"search mode {mode!r} needs full text, and collection {self.collection!r} was created before it "
                "was part of the schema: import the bank into a new collection (QBANK_COLLECTION) to use it"
            )

    def search_text(
        self,
        texts: Sequence[str],
        limit: int,
        expr: str = "",
        group_by: str | None = None,
        part: str = STEM,
        match_forms: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """BM25 over the analysed stems (``part`` "analysis": over the questions' analyses instead);
        ``distance`` is the BM25 score (higher is better, unbounded). ``group_by`` as in :meth:`search`.
        ``match_forms``: each hit also carries ``match_form``, the matching form of what it matched
        (qbank.domain.text.match_form of its stem or analysis), read from the form BM25 reads, which
        a schema 5 collection stores: ranking 30 candidates by in-order comparison then parses no
        LaTeX (1-2 ms a LaTeX stem). Older schemas store another form, so their hits carry none."""
        if not self._ready():
            return [[] for _ in texts]
        self._require_full_text("bm25")
        if part == ANALYSIS and not (self.identity and self.identity.analysis):
            raise FullTextUnavailableError(
                f"search_in 'analysis': collection {self.collection!r} is schema {self.search_schema}, whose "
                f"analyses are not searchable (schema {SCHEMA_VERSION} searches them): import the bank into a "
                "new collection (QBANK_COLLECTION=<new name>, then qbank import) to search its analyses"
            )
        fetch, grouping = self._group_plan(limit, group_by, self.groups_in_milvus())
        form_field = ANALYSIS_TEXT_FIELD if part == ANALYSIS else SEARCH_TEXT_FIELD
        stored_forms = match_forms and self.search_schema >= MATCH_FORM_SINCE
        results = self.connection.call(
            "search",
            self.collection,
            data=self._bm25_queries(texts),
            anns_field=ANALYSIS_SPARSE_FIELD if part == ANALYSIS else SPARSE_FIELD,
            limit=fetch,
            filter=expr,
            output_fields=[*OUTPUT_FIELDS, form_field] if stored_forms else OUTPUT_FIELDS,
            search_params={"metric_type": "BM25"},
            **grouping,
            **self._search_consistency,
        )
        grouped = self._grouped(results, group_by, limit)
        return (
            [[self._with_match_form(hit, form_field) for hit in hits] for hits in grouped] if stored_forms else grouped
        )

    @staticmethod
    def _with_match_form(hit: dict[str, Any], form_field: str) -> dict[str, Any]:
        entity = dict(hit.get("entity", hit))
        stored = entity.pop(form_field, None)
        if stored is None:
            return hit
        return {**hit, "entity": entity, "match_form": normalise(stored)}

    def search_hybrid(
        self,
        vectors: Sequence[Sequence[float]],
        texts: Sequence[str],
        limit: int,
        expr: str = "",
        rrf_k: int = 60,
        weights: tuple[float, float] | None = None,
        group_by: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Dense and BM25 lists (each ``limit`` long, both filtered by ``expr``) fused into one;
        ``group_by`` as in :meth:`search`, always grouped here (see :meth:`groups_in_milvus`).

        RRF: Milvus' hybrid search (all queries in one call), score = sum over the lists of
        1 / (rrf_k + rank). Weighted:
        fused here, score = w_dense * norm(similarity) + w_bm25 * norm(bm25), with Milvus' own
        normalisations (cosine -> (1 + s) / 2, IP -> 0.5 + atan(s) / pi, BM25 -> 2 * atan(s) / pi).
        Milvus Lite 2.5.1's WeightedRanker normalises BM25 as a distance (a higher BM25 score came
        out lower: measured, tests/test_fulltext.py), so that fusion is not left to it.
        """
        from pymilvus import AnnSearchRequest, RRFRanker

        if not self._ready():
            return [[] for _ in texts]
        self._require_full_text("hybrid")
        wanted = limit
        limit, _ = self._group_plan(limit, group_by, native=False)
        if weights:
            dense = self.search(vectors, limit, expr)
            sparse = self.search_text(texts, limit, expr)
            metric = self.settings.metric_type
            fused = [weighted_fusion(d, s, weights, limit, metric) for d, s in zip(dense, sparse, strict=True)]
            return self._grouped(fused, group_by, wanted)
        requests = [
            AnnSearchRequest(
                [list(map(float, v)) for v in vectors],
                VECTOR_FIELD,
                self._dense_params(limit),
                limit,
                expr=expr or None,
            ),
            AnnSearchRequest(
                self._bm25_queries(texts), SPARSE_FIELD, {"metric_type": "BM25"}, limit, expr=expr or None
            ),
        ]
        results = self.connection.call(
            "hybrid_search",
            self.collection,
            requests,
            RRFRanker(rrf_k),
            limit=limit,
            output_fields=OUTPUT_FIELDS,
            **self._search_consistency,
        )
        return self._grouped(results, group_by, wanted)

    def iterate(self, expr: str, fields: list[str], batch_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expr``, in batches (pymilvus' query iterator: no offset limit)."""
        if not self._ready():
            return
        iterator = self.connection.call(
            "query_iterator",
            self.collection,
            batch_size=batch_size,
            filter=expr,
            output_fields=fields,
            **self._consistency,
        )
        try:
            while True:
                try:
                    batch = iterator.next()
                except Exception as exc:
                    raise StoreError(f"Milvus query iterator failed: {str(exc)[:300]}") from None
                if not batch:
                    return
                yield batch
        finally:
            iterator.close()

    def get(self, ids: Sequence[str], with_vectors: bool = False) -> list[dict[str, Any]]:
        """The stored rows of ``ids`` (those that exist), through our escaped id filter: pymilvus'
        own ``get`` puts ids between single quotes unescaped, so an id could rewrite its query."""
        if not ids or not self._ready():
            return []
        fields = OUTPUT_FIELDS + (["embedding"] if with_vectors else [])
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), GET_CHUNK):
            chunk = list(ids[start : start + GET_CHUNK])
            rows += self.connection.call(
                "query", self.collection, filter=ids_filter(chunk), output_fields=fields, **self._consistency
            )
        return rows

    def query(self, expr: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` stored rows matching ``expr`` (no vectors), read at the reads' consistency."""
        if not self._ready():
            return []
        return self.connection.call(
            "query", self.collection, filter=expr, output_fields=OUTPUT_FIELDS, limit=limit, **self._consistency
        )

    def delete(self, expr: str) -> int:
        if not self._ready():
            return 0
        before = self.count()
        self.connection.write("delete", "nothing was deleted", self.collection, filter=expr)
        return before - self.count()

    def count(self, expr: str = "") -> int:
        if not self._ready():
            return 0
        rows = self.connection.call(
            "query", self.collection, filter=expr, output_fields=["count(*)"], **self._consistency
        )
        return int(rows[0]["count(*)"])

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model": self.model,
            "dim": self.dim,
            "index_type": (self.identity and self.identity.index_type)
            or vector_index_type(self.settings, self.known_capabilities),
            "metric_type": self.settings.metric_type,
            "full_text": self.full_text,
            "text_analyzer": self.analyzer,
            "text_search_form": self.reads_search_form,
            "text_reading_form": self.reads_reading_form,
            "schema": self.identity.schema if self.identity else None,
            "count": self.count(),
            "uri": self.where,
            "milvus_version": self.capabilities.version if self.capabilities else None,
        }

    def close(self) -> None:
        self.connection.close()
