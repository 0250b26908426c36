"""Writes to the item collection: all-or-nothing upserts (with the Milvus Lite restore of what a
failed upsert deleted) and deletes."""

from __future__ import annotations

import logging
from typing import Any

from pymilvus import MilvusClient

from qbank.domain.schema import TEXT, TEXT_MAX_BYTES
from qbank.domain.text import search_form
from qbank.store.access import CollectionAccess
from qbank.store.collection import ANALYSIS_TEXT_FIELD, SEARCH_TEXT_FIELD
from qbank.store.errors import DiskFullError, MilvusUnavailableError, StoreError
from qbank.store.lite import disk_needed

logger = logging.getLogger("qbank.store")


class ItemWrites(CollectionAccess):
    """Upserts stored whole or not at all, and deletes."""

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
                MilvusClient.upsert,
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
            self.connection.call(MilvusClient.upsert, self.collection, self._with_search_form(previous))
        except StoreError as exc:
            logger.error("could not restore %d items after a failed upsert: %s", len(previous), exc)
            return f" (and the stored versions of {len(previous)} items could not be put back: {exc})"
        return ""

    def delete(self, expr: str) -> int:
        if not self._ready():
            return 0
        before = self.count()
        self.connection.write(MilvusClient.delete, "nothing was deleted", self.collection, filter=expr)
        return before - self.count()
