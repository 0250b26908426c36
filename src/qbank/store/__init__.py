"""The store layer, the one place that talks to pymilvus: connection (reconnects, Milvus Lite
process, errors mapped to ours), collection (schema, identity, the model guard), items (writes,
reads, the three search modes)."""

from qbank.store.errors import FullTextUnavailableError, MilvusUnavailableError, ModelMismatchError, StoreError
from qbank.store.items import ItemStore

__all__ = ["FullTextUnavailableError", "ItemStore", "MilvusUnavailableError", "ModelMismatchError", "StoreError"]
