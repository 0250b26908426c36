"""What the store raises: every pymilvus failure becomes one of these, with a message that says why."""


class StoreError(RuntimeError):
    """Milvus refused or could not do the operation; the message says which and why."""


class ModelMismatchError(StoreError):
    """Vectors of another model or dimension were sent to a collection built for a different one."""


class DiskFullError(StoreError):
    """The disk of a Milvus Lite file cannot take a write and keep its free-space floor; nothing of
    the write was sent to Milvus."""


class MilvusUnavailableError(StoreError):
    """Milvus cannot be reached now; the request failed fast and a later one reconnects."""


class FullTextUnavailableError(StoreError):
    """bm25/hybrid asked of a collection created before full text was part of the schema."""
