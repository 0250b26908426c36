"""Store layer: one Milvus collection of question items through pymilvus' ``MilvusClient``.

The same code runs on a Milvus Lite file (the default) and on a Milvus server or cluster by URI.
The collection records which model and dimension its vectors come from, and refuses vectors of
another model, so one store never mixes two embedding spaces.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from qbank.config import IndexerSettings, is_milvus_server_uri
from qbank.lite import LiteProcess, check_writable, free_bytes
from qbank.schema import (
    FILTER_FIELDS,
    ID_MAX_LENGTH,
    MODALITIES,
    SCALAR_FIELDS,
    TAG_ALIASES,
    TEXT_MAX_BYTES,
    URI_MAX_LENGTH,
)

logger = logging.getLogger("qbank.store")

# Schema 2 adds full text: a BM25 function turns `text` (analysed by settings.text_analyzer) into
# the sparse vector field below, so one collection answers dense, bm25 and hybrid searches.
SCHEMA_VERSION = 2
SPARSE_FIELD = "text_sparse"
GET_CHUNK = 1000  # ids per query expression
LOW_DISK_BYTES = 64 * 1024 * 1024  # below this, a failed write on Lite is reported as a full disk

OUTPUT_FIELDS = [
    "question_id",
    "modality",
    "text",
    "image_uri",
    *[f for f in SCALAR_FIELDS if f not in ("question_id", "modality")],
    "metadata",
]


class StoreError(RuntimeError):
    """Milvus refused or could not do the operation; the message says which and why."""


class ModelMismatchError(StoreError):
    """Vectors of another model or dimension were sent to a collection built for a different one."""


class MilvusUnavailableError(StoreError):
    """Milvus cannot be reached now; the request failed fast and a later one reconnects."""


class FullTextUnavailableError(StoreError):
    """bm25/hybrid asked of a collection created before full text was part of the schema."""


class FilterError(ValueError):
    """A search/delete filter names an unknown field or holds a value of the wrong kind."""


def _literal(field: str, value: Any) -> str:
    """A Milvus expression literal; strings are escaped so a value can never end the literal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FilterError(f"filter {field!r}: values must be strings or numbers, got {type(value).__name__}")
    text = str(value)
    if any(ord(ch) < 32 for ch in text):
        raise FilterError(f"filter {field!r}: control characters are not allowed in values")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_filter(filters: dict[str, Any] | None) -> str:
    """``{"subject": "数学", "grade": ["初二", "初三"]}`` -> ``subject == "数学" and grade in ["初二", "初三"]``.

    Only the item's scalar fields may be filtered on; values are escaped literals, never raw
    expression text, so user input cannot change the expression's structure.
    """
    if not filters:
        return ""
    if not isinstance(filters, dict):
        raise FilterError(f"filter must be an object of field -> value(s), got {type(filters).__name__}")
    clauses = []
    for key, value in filters.items():
        field = TAG_ALIASES.get(key, key)
        if field not in SCALAR_FIELDS:
            raise FilterError(f"unknown filter field {key!r}; allowed: {sorted(set(FILTER_FIELDS) | {'type'})}")
        if field == "modality":
            for v in value if isinstance(value, list) else [value]:
                if v not in MODALITIES:
                    raise FilterError(f"filter 'modality' must be one of {MODALITIES}, got {v!r}")
        if isinstance(value, (list, tuple)):
            if not value:
                raise FilterError(f"filter {key!r}: the list of values is empty")
            clauses.append(f"{field} in [{', '.join(_literal(key, v) for v in value)}]")
        else:
            clauses.append(f"{field} == {_literal(key, value)}")
    return " and ".join(clauses)


def ids_filter(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(_literal('id', i) for i in ids)}]"


def _unavailable_reason(exc: BaseException) -> str | None:
    """The gRPC detail when ``exc`` (or what caused it) says the server cannot be reached, else None."""
    import grpc

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # pymilvus raises ``e from e``: chains can loop
        visited.add(id(seen))
        if isinstance(seen, grpc.RpcError) and callable(getattr(seen, "code", None)):
            if seen.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return f"{seen.code().name}: {seen.details()}"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    for marker in ("UNAVAILABLE", "Fail connecting", "failed to connect", "Connection refused", "Socket closed"):
        if marker in text:
            return text[:300]
    return None


def _weighted_fusion(
    dense: list[dict[str, Any]], sparse: list[dict[str, Any]], weights: tuple[float, float], limit: int, metric: str
) -> list[dict[str, Any]]:
    """One list from a dense and a BM25 list by weighted normalised scores (best first)."""
    norm_dense = (lambda s: (1.0 + s) / 2.0) if metric == "COSINE" else (lambda s: 0.5 + math.atan(s) / math.pi)
    fused: dict[str, dict[str, Any]] = {}
    for hits, weight, norm in ((dense, weights[0], norm_dense), (sparse, weights[1], _norm_bm25)):
        for hit in hits:
            entry = fused.setdefault(hit["id"], {**hit, "distance": 0.0})
            entry["distance"] += weight * norm(float(hit["distance"]))
    return sorted(fused.values(), key=lambda h: h["distance"], reverse=True)[:limit]


def _norm_bm25(score: float) -> float:
    return 2.0 * math.atan(score) / math.pi


class ItemStore:
    """The item collection: created on first write, checked against the model on every write/search.

    The connection is lazy and self-healing: if Milvus is down at start or goes away later, each
    request fails fast with :class:`MilvusUnavailableError` and the next one connects again, so the
    Flow stays up and recovers without a restart.
    """

    def __init__(self, settings: IndexerSettings):
        self.settings = settings
        self.collection = settings.collection
        self.where = settings.milvus_uri or "milvus-lite:" + settings.uri
        self.lite: LiteProcess | None = None
        if not is_milvus_server_uri(settings.uri):
            self.lite = LiteProcess(settings.uri)
        self._client: Any = None
        self._connect_lock = threading.RLock()  # _invoke may forget a client while _connected holds it
        self._create_lock = threading.Lock()
        self.model: str | None = None
        self.dim: int | None = None
        self.full_text = False  # the collection has the BM25 field
        self.index_type: str | None = None  # of the vector field, as Milvus reports it
        self.analyzer: str | None = None
        if self.lite is not None:  # a local file that cannot be written is a fault to report at start
            check_writable(self.lite.db_file.parent)
            self._connected()
            return
        try:
            self._connected()
        except MilvusUnavailableError as exc:
            logger.warning("%s; the indexer starts anyway and connects on the next request", exc)

    # -- connection -----------------------------------------------------------------------------
    def _connected(self) -> Any:
        """The client; when there is none, connect and read the collection's identity first.

        The client is published only after the identity is read, so no request ever sees a
        connected store that does not yet know its model and dimension.
        """
        client = self._client
        if client is not None and self.lite is not None and not self.lite.alive():
            self._forget(client)  # Milvus Lite died under us: restart it below instead of failing
            client = None
        if client is not None:
            return client
        with self._connect_lock:
            if self._client is not None:
                return self._client
            from pymilvus import MilvusClient

            try:
                uri = self.lite.uri() if self.lite else self.settings.uri
                client = MilvusClient(
                    uri=uri, token=self.settings.milvus_token or "", timeout=self.settings.connect_timeout
                )
            except Exception as exc:  # pymilvus raises its own exception types and plain ones
                raise MilvusUnavailableError(f"cannot connect to Milvus at {self.where}: {str(exc)[:300]}") from None
            try:
                if self._invoke(client, "has_collection", self.collection):
                    self._read_identity(client)
            except StoreError:
                self._close_quietly(client)
                raise
            self._client = client
        logger.info(
            "connected to Milvus at %s, collection %s (model=%s, dim=%s)",
            self.where,
            self.collection,
            self.model,
            self.dim,
        )
        return client

    def connect(self) -> None:
        """Connect now if not connected (reads the collection's model and dimension)."""
        self._connected()

    @staticmethod
    def _close_quietly(client: Any) -> None:
        try:
            client.close()
        except Exception:  # closing a broken connection may fail too; nothing more to do
            pass

    def _invoke(self, client: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """One MilvusClient call with the configured timeout; errors become StoreError subclasses.

        The timeout is passed as a float on purpose: pymilvus then bounds retries by
        ``retry_times`` instead of retrying until the timeout, so an unreachable Milvus fails in
        milliseconds while a slow but healthy call still gets the whole timeout.
        """
        try:
            return getattr(client, method)(
                *args, timeout=float(self.settings.timeout), retry_times=self.settings.retry_times, **kwargs
            )
        except Exception as exc:
            reason = _unavailable_reason(exc)
            if reason is None:
                detail = getattr(exc, "message", None) or str(exc)
                raise StoreError(f"Milvus {method} failed: {str(detail)[:500]}") from None
            self._forget(client)
            raise MilvusUnavailableError(
                f"Milvus at {self.where} is unreachable ({method}: {reason}); retry when it is back"
            ) from None

    def _forget(self, client: Any) -> None:
        """Drop ``client``: the next request connects again (and restarts Milvus Lite if it died)."""
        with self._connect_lock:
            if self._client is client:
                self._client = None
        self._close_quietly(client)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._invoke(self._connected(), method, *args, **kwargs)

    # -- collection and the model guard ---------------------------------------------------------
    def _read_identity(self, client: Any) -> None:
        info = self._invoke(client, "describe_collection", self.collection)
        try:
            identity = json.loads(info.get("description") or "{}")
        except json.JSONDecodeError:
            identity = {}
        vector = next(f for f in info["fields"] if f["name"] == "embedding")
        self.dim = int(vector["params"]["dim"])
        self.model = identity.get("model")
        self.full_text = any(f["name"] == SPARSE_FIELD for f in info["fields"])
        self.analyzer = identity.get("text_analyzer")
        try:
            self.index_type = self._invoke(client, "describe_index", self.collection, "embedding").get("index_type")
        except StoreError:  # an index named otherwise (made outside qbank): reported as unknown
            self.index_type = None

    def _create(self, model: str, dim: int) -> None:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        analyzer = self.settings.text_analyzer
        identity = {"model": model, "dim": dim, "schema": SCHEMA_VERSION, "text_analyzer": analyzer}
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(identity))
        schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH, is_primary=True)
        for name, length in SCALAR_FIELDS.items():
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=TEXT_MAX_BYTES,
            enable_analyzer=True,
            analyzer_params={"type": analyzer},
        )
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("image_uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=[SPARSE_FIELD],
            )
        )
        index = MilvusClient.prepare_index_params()
        index.add_index("embedding", index_type=self.settings.vector_index, metric_type=self.settings.metric_type)
        index.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        if is_milvus_server_uri(self.settings.uri):  # scalar indexes speed filters on a server; Lite scans
            for name in SCALAR_FIELDS:
                index.add_index(name, index_type="INVERTED")
        self._call("create_collection", self.collection, schema=schema, index_params=index)
        self.model, self.dim, self.full_text, self.analyzer = model, dim, True, analyzer
        self.index_type = self.settings.vector_index
        logger.info(
            "created collection %s for model %s (dim %d, %s)", self.collection, model, dim, self.settings.vector_index
        )

    def check_vectors(self, model: str, dim: int, create: bool) -> bool:
        """True when the collection exists and holds this model's vectors; creates it if asked."""
        self._connected()
        with self._create_lock:
            if self.dim is None:
                if not create:
                    return False
                self._create(model, dim)
        if dim != self.dim or (self.model and model != self.model):
            raise ModelMismatchError(
                f"collection {self.collection!r} holds {self.dim}-d vectors of model {self.model!r}, "
                f"but got {dim}-d vectors of model {model!r}. Use the same model, or another collection "
                "(QBANK_COLLECTION) for this one."
            )
        return True

    # -- reads and writes (each connects first, so a fresh identity is read after an outage) -----
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
        try:
            result = self._write("upsert", "nothing of this request was stored", self.collection, rows)
        except MilvusUnavailableError:
            raise
        except StoreError as exc:
            if previous:
                raise StoreError(f"{exc}{self._restore(previous)}") from None
            raise
        return int(result.get("upsert_count", len(rows)))

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
            self._call("upsert", self.collection, previous)
        except StoreError as exc:
            logger.error("could not restore %d items after a failed upsert: %s", len(previous), exc)
            return f" (and the stored versions of {len(previous)} items could not be put back: {exc})"
        return ""

    def _write(self, method: str, outcome: str, *args: Any, **kwargs: Any) -> Any:
        """A writing Milvus call. When it fails on Milvus Lite, Lite is restarted before the error is
        returned: Lite applies a write in memory before the file, so only a reload makes what
        requests see match what is on disk again (``outcome`` says so in the error)."""
        client = self._connected()
        try:
            return self._invoke(client, method, *args, **kwargs)
        except MilvusUnavailableError:
            raise
        except StoreError as exc:
            message = f"{self._disk_note()}{exc}"
            if self.lite is not None:
                self._forget(client)
                self.lite.restart(f"a {method} failed, reloading what is on disk")
                message = f"{outcome}: {message}"
            raise StoreError(message) from None

    def _disk_note(self) -> str:
        """What the disk says, when it is the likely cause of a failed write."""
        if self.lite is None:
            return ""
        free = free_bytes(self.lite.db_file)
        if free is not None and free < LOW_DISK_BYTES:
            return (
                f"the disk holding {self.lite.db_file.parent} is full ({free} bytes free): free space "
                "(or move QBANK_DATA_DIR) and send the request again. "
            )
        return ""

    def search(self, vectors: Sequence[Sequence[float]], limit: int, expr: str = "") -> list[list[dict[str, Any]]]:
        self._connected()
        if self.dim is None:
            return [[] for _ in vectors]
        return self._call(
            "search",
            self.collection,
            data=[list(map(float, v)) for v in vectors],
            anns_field="embedding",
            limit=limit,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": self.settings.metric_type},
        )

    def _require_full_text(self, mode: str) -> None:
        if not self.full_text:
            raise FullTextUnavailableError(
                f"search mode {mode!r} needs full text, and collection {self.collection!r} was created before it "
                "was part of the schema: import the bank into a new collection (QBANK_COLLECTION) to use it"
            )

    def search_text(self, texts: Sequence[str], limit: int, expr: str = "") -> list[list[dict[str, Any]]]:
        """BM25 over the analysed stems; ``distance`` is the BM25 score (higher is better, unbounded)."""
        self._connected()
        if self.dim is None:
            return [[] for _ in texts]
        self._require_full_text("bm25")
        return self._call(
            "search",
            self.collection,
            data=list(texts),
            anns_field=SPARSE_FIELD,
            limit=limit,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params={"metric_type": "BM25"},
        )

    def search_hybrid(
        self,
        vectors: Sequence[Sequence[float]],
        texts: Sequence[str],
        limit: int,
        expr: str = "",
        rrf_k: int = 60,
        weights: tuple[float, float] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Dense and BM25 lists (each ``limit`` long, both filtered by ``expr``) fused into one.

        RRF: Milvus' hybrid search (all queries in one call), score = sum over the lists of
        1 / (rrf_k + rank). Weighted:
        fused here, score = w_dense * norm(similarity) + w_bm25 * norm(bm25), with Milvus' own
        normalisations (cosine -> (1 + s) / 2, IP -> 0.5 + atan(s) / pi, BM25 -> 2 * atan(s) / pi).
        Milvus Lite 2.5.1's WeightedRanker normalises BM25 as a distance (a higher BM25 score came
        out lower: measured, tests/test_fulltext.py), so that fusion is not left to it.
        """
        from pymilvus import AnnSearchRequest, RRFRanker

        self._connected()
        if self.dim is None:
            return [[] for _ in texts]
        self._require_full_text("hybrid")
        if weights:
            dense = self.search(vectors, limit, expr)
            sparse = self.search_text(texts, limit, expr)
            metric = self.settings.metric_type
            return [_weighted_fusion(d, s, weights, limit, metric) for d, s in zip(dense, sparse, strict=True)]
        requests = [
            AnnSearchRequest(
                [list(map(float, v)) for v in vectors],
                "embedding",
                {"metric_type": self.settings.metric_type},
                limit,
                expr=expr or None,
            ),
            AnnSearchRequest(list(texts), SPARSE_FIELD, {"metric_type": "BM25"}, limit, expr=expr or None),
        ]
        return self._call(
            "hybrid_search", self.collection, requests, RRFRanker(rrf_k), limit=limit, output_fields=OUTPUT_FIELDS
        )

    def iterate(self, expr: str, fields: list[str], batch_size: int = 500) -> Iterator[list[dict[str, Any]]]:
        """Every row matching ``expr``, in batches (pymilvus' query iterator: no offset limit)."""
        self._connected()
        if self.dim is None:
            return
        iterator = self._call(
            "query_iterator", self.collection, batch_size=batch_size, filter=expr, output_fields=fields
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
        self._connected()
        if self.dim is None or not ids:
            return []
        fields = OUTPUT_FIELDS + (["embedding"] if with_vectors else [])
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), GET_CHUNK):
            chunk = list(ids[start : start + GET_CHUNK])
            rows += self._call("query", self.collection, filter=ids_filter(chunk), output_fields=fields)
        return rows

    def delete(self, expr: str) -> int:
        self._connected()
        if self.dim is None:
            return 0
        before = self.count()
        self._write("delete", "nothing was deleted", self.collection, filter=expr)
        return before - self.count()

    def count(self, expr: str = "") -> int:
        self._connected()
        if self.dim is None:
            return 0
        rows = self._call("query", self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model": self.model,
            "dim": self.dim,
            "index_type": self.index_type or self.settings.vector_index,
            "metric_type": self.settings.metric_type,
            "full_text": self.full_text,
            "text_analyzer": self.analyzer,
            "count": self.count(),
            "uri": self.where,
        }

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._close_quietly(client)
        if self.lite is not None:
            self.lite.stop()
