"""The item collection as the store sees it: the connection, the collection's identity (model,
dimension, schema) and what the Milvus behind it can do, read at every connect; reads and counts.
Writes (:mod:`qbank.store.writes`) and searches (:mod:`qbank.store.searches`) build on it, and
:class:`qbank.store.items.ItemStore` is all three."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pymilvus import MilvusClient

from qbank.config import IndexerSettings
from qbank.domain.filters import ids_filter
from qbank.store.capabilities import Capabilities
from qbank.store.collection import (
    OUTPUT_FIELDS,
    SCHEMA_VERSION,
    Identity,
    check_model,
    collection_schema,
    read_identity,
    vector_index_type,
)
from qbank.store.connection import MilvusConnection
from qbank.store.errors import MilvusUnavailableError, StoreError

logger = logging.getLogger("qbank.store")

GET_CHUNK = 1000  # ids per query expression


class CollectionAccess:
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
            version = self.connection.invoke(client, MilvusClient.get_server_version)
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

    def unanswered(self) -> str | None:
        """Why Milvus does not answer now (one cheap call), None when it does: readiness asks this."""
        try:
            self.connection.call(MilvusClient.has_collection, self.collection)
        except StoreError as exc:
            return str(exc)
        return None

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
                    MilvusClient.create_collection,
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

    def iterate(self, expr: str, fields: list[str], batch_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expr``, in batches (pymilvus' query iterator: no offset limit)."""
        if not self._ready():
            return
        iterator = self.connection.call(
            MilvusClient.query_iterator,
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
                MilvusClient.query, self.collection, filter=ids_filter(chunk), output_fields=fields, **self._consistency
            )
        return rows

    def query(self, expr: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` stored rows matching ``expr`` (no vectors), read at the reads' consistency."""
        if not self._ready():
            return []
        return self.connection.call(
            MilvusClient.query,
            self.collection,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            limit=limit,
            **self._consistency,
        )

    def count(self, expr: str = "") -> int:
        if not self._ready():
            return 0
        rows = self.connection.call(
            MilvusClient.query, self.collection, filter=expr, output_fields=["count(*)"], **self._consistency
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
