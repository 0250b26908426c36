"""Store layer: one Milvus collection of question items through pymilvus' ``MilvusClient``.

The same code runs on a Milvus Lite file (the default) and on a Milvus server or cluster by URI.
The collection records which model and dimension its vectors come from, and refuses vectors of
another model, so one store never mixes two embedding spaces.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qbank.config import IndexerSettings
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


class ItemStore:
    """The item collection: created on first write, checked against the model on every write/search."""

    def __init__(self, settings: IndexerSettings):
        from pymilvus import MilvusClient

        self.settings = settings
        self.collection = settings.collection
        uri = settings.uri
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MilvusClient(uri=uri, token=settings.milvus_token or "", timeout=settings.timeout)
        except Exception as exc:  # pymilvus raises its own exception types and plain ones
            raise StoreError(f"cannot connect to Milvus at {uri}: {exc}") from None
        self._lock = threading.Lock()
        self.model: str | None = None
        self.dim: int | None = None
        if self.client.has_collection(self.collection, timeout=settings.timeout):
            self._read_identity()
        logger.info("Milvus at %s, collection %s (model=%s, dim=%s)", uri, self.collection, self.model, self.dim)

    # -- collection and the model guard ---------------------------------------------------------
    def _read_identity(self) -> None:
        info = self.client.describe_collection(self.collection, timeout=self.settings.timeout)
        try:
            identity = json.loads(info.get("description") or "{}")
        except json.JSONDecodeError:
            identity = {}
        vector = next(f for f in info["fields"] if f["name"] == "embedding")
        self.dim = int(vector["params"]["dim"])
        self.model = identity.get("model")

    def _create(self, model: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(
            auto_id=False,
            enable_dynamic_field=False,
            description=json.dumps({"model": model, "dim": dim, "schema": 1}),
        )
        schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH, is_primary=True)
        for name, length in SCALAR_FIELDS.items():
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
        schema.add_field("image_uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type=self.settings.index_type, metric_type=self.settings.metric_type)
        if "://" in self.settings.uri:  # scalar indexes speed filters on a server; Milvus Lite scans
            for name in SCALAR_FIELDS:
                index.add_index(name, index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index, timeout=self.settings.timeout)
        self.model, self.dim = model, dim
        logger.info(
            "created collection %s for model %s (dim %d, %s)", self.collection, model, dim, self.settings.index_type
        )

    def check_vectors(self, model: str, dim: int, create: bool) -> bool:
        """True when the collection exists and holds this model's vectors; creates it if asked."""
        with self._lock:
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

    # -- reads and writes ----------------------------------------------------------------------
    def upsert(self, rows: list[dict[str, Any]]) -> int:
        done = 0
        size = self.settings.insert_batch_size
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            try:
                result = self.client.upsert(self.collection, batch, timeout=self.settings.timeout)
            except Exception as exc:
                raise StoreError(f"upsert of {len(batch)} items failed after {done} were written: {exc}") from None
            done += int(result.get("upsert_count", len(batch)))
        return done

    def search(self, vectors: Sequence[Sequence[float]], limit: int, expr: str = "") -> list[list[dict[str, Any]]]:
        if self.dim is None:
            return [[] for _ in vectors]
        try:
            return self.client.search(
                self.collection,
                data=[list(map(float, v)) for v in vectors],
                anns_field="embedding",
                limit=limit,
                filter=expr,
                output_fields=OUTPUT_FIELDS,
                search_params={"metric_type": self.settings.metric_type},
                timeout=self.settings.timeout,
            )
        except Exception as exc:
            raise StoreError(f"search failed: {exc}") from None

    def get(self, ids: Sequence[str], with_vectors: bool = False) -> list[dict[str, Any]]:
        if self.dim is None or not ids:
            return []
        fields = OUTPUT_FIELDS + (["embedding"] if with_vectors else [])
        try:
            return list(
                self.client.get(self.collection, ids=list(ids), output_fields=fields, timeout=self.settings.timeout)
            )
        except Exception as exc:
            raise StoreError(f"get failed: {exc}") from None

    def delete(self, expr: str) -> int:
        if self.dim is None:
            return 0
        before = self.count()
        try:
            self.client.delete(self.collection, filter=expr, timeout=self.settings.timeout)
        except Exception as exc:
            raise StoreError(f"delete failed: {exc}") from None
        return before - self.count()

    def count(self, expr: str = "") -> int:
        if self.dim is None:
            return 0
        try:
            rows = self.client.query(
                self.collection, filter=expr, output_fields=["count(*)"], timeout=self.settings.timeout
            )
        except Exception as exc:
            raise StoreError(f"count failed: {exc}") from None
        return int(rows[0]["count(*)"])

    def describe(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "model": self.model,
            "dim": self.dim,
            "index_type": self.settings.index_type,
            "metric_type": self.settings.metric_type,
            "count": self.count(),
            "uri": self.settings.milvus_uri or "milvus-lite:" + self.settings.uri,
        }

    def close(self) -> None:
        self.client.close()
