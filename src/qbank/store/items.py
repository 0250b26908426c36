"""Question items in one Milvus collection: write (all-or-nothing), read, search (dense, BM25,
hybrid), delete, count.

The same code runs on a Milvus Lite file (the default) and on a Milvus server or cluster by URI.
One class a concern: the connection, identity and reads (:mod:`qbank.store.access`), writes with the
Lite restore (:mod:`qbank.store.writes`), searches (:mod:`qbank.store.searches`); the connection
itself (:mod:`qbank.store.connection`) and the collection's shape (:mod:`qbank.store.collection`)
beside them. Filters come in built and escaped (:mod:`qbank.domain.filters`).
"""

from __future__ import annotations

from qbank.store.searches import ItemSearches
from qbank.store.writes import ItemWrites


class ItemStore(ItemWrites, ItemSearches):
    """The item collection: writes, reads and searches (every call typed, on pymilvus' MilvusClient)."""
