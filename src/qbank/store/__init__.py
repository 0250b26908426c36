"""The store layer, the one place that talks to pymilvus: connection (reconnects, Milvus Lite
process, errors mapped to ours), collection (schema, identity, the model guard), and ItemStore
(items.py): access (identity, reads), writes, searches (the three modes)."""

from qbank.store.errors import FullTextUnavailableError, MilvusUnavailableError, ModelMismatchError, StoreError
from qbank.store.items import ItemStore

__all__ = ["FullTextUnavailableError", "ItemStore", "MilvusUnavailableError", "ModelMismatchError", "StoreError"]
