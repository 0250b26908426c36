"""The connection to Milvus: one ``MilvusClient``, lazy and self-healing, and the only place that
turns pymilvus' exceptions into ours.

If Milvus is down at start or goes away later, each call fails fast with
:class:`MilvusUnavailableError` and the next one connects again, so the Flow stays up and recovers
without a restart. On the embedded default the connection owns the Milvus Lite process
(:mod:`qbank.store.lite`): restarted when it died, and after any failed write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from qbank.config import IndexerSettings, is_milvus_server_uri
from qbank.store.errors import MilvusUnavailableError, StoreError
from qbank.store.lite import LiteProcess, check_disk_room, check_writable, free_bytes

logger = logging.getLogger("qbank.store")

LOW_DISK_BYTES = 64 * 1024 * 1024  # below this, a failed write on Lite is reported as a full disk
NOT_LOADED_MARKER = "collection not loaded"
UNAVAILABLE_MARKERS = ("UNAVAILABLE", "Fail connecting", "failed to connect", "Connection refused", "Socket closed")


def unavailable_reason(exc: BaseException) -> str | None:
    """The gRPC detail when ``exc`` (or what caused it) says the server cannot be reached, else None.

    pymilvus wraps gRPC errors in its own types and plain ones, so the cause chain is walked for a
    gRPC status first; its message text is the fallback."""
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
    if any(marker in text for marker in UNAVAILABLE_MARKERS):
        return text[:300]
    return None


class MilvusConnection:
    """A ``MilvusClient`` for ``settings.uri`` (or the owned Milvus Lite process).

    ``on_connect(client)`` runs on every new client before it is published (the store reads the
    collection's identity there), so no caller ever sees a connection whose collection is unknown.
    """

    def __init__(self, settings: IndexerSettings, on_connect: Callable[[Any], None]):
        self.settings = settings
        self.where = settings.milvus_uri or "milvus-lite:" + settings.uri
        self.lite: LiteProcess | None = None if is_milvus_server_uri(settings.uri) else LiteProcess(settings.uri)
        if self.lite is not None:  # a local file that cannot be written is a fault to report at start
            check_writable(self.lite.db_file.parent)
        self._on_connect = on_connect
        self._client: Any = None
        self._lock = threading.RLock()  # invoke may forget a client while client() holds the lock
        self._write_lock = threading.Lock()  # Lite: a disk check and its write, one write at a time
        self.connects = 0  # clients made: 1 at start, then one per reconnect (qbank_milvus_connects)

    def client(self) -> Any:
        """The client; when there is none, connect (restarting Milvus Lite if it died) first."""
        client = self._client
        if client is not None and self.lite is not None and not self.lite.alive():
            self.forget(client)  # Milvus Lite died under us: restart it below instead of failing
            client = None
        if client is not None:
            return client
        with self._lock:
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
                self._on_connect(client)
            except StoreError:
                self._close_quietly(client)
                raise
            self._client = client
            self.connects += 1
        return client

    def invoke(self, client: Any, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One MilvusClient call (``operation``: the method itself, ``MilvusClient.search``, so an
        editor follows it) with the configured timeout; errors become StoreError subclasses.

        The timeout is passed as a float on purpose: pymilvus then bounds retries by
        ``retry_times`` instead of retrying until the timeout, so an unreachable Milvus fails in
        milliseconds while a slow but healthy call still gets the whole timeout.
        """
        method = operation.__name__
        try:
            return operation(
                client, *args, timeout=float(self.settings.timeout), retry_times=self.settings.retry_times, **kwargs
            )
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                detail = str(getattr(exc, "message", None) or exc)
                if NOT_LOADED_MARKER in detail:  # transient: a restarted server reloads its collections
                    raise MilvusUnavailableError(
                        f"Milvus at {self.where} has not loaded the collection yet ({method}): a restarted "
                        "Milvus loads its collections again (about 25 s measured on the 2.3.5 standalone); "
                        "retry shortly"
                    ) from None
                raise StoreError(f"Milvus {method} failed: {detail[:500]}") from None
            self.forget(client)
            raise MilvusUnavailableError(
                f"Milvus at {self.where} is unreachable ({method}: {reason}); retry when it is back"
            ) from None

    def call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``operation`` (a MilvusClient method) on the current client, connecting first if needed."""
        return self.invoke(self.client(), operation, *args, **kwargs)

    def write(self, operation: Callable[..., Any], outcome: str, *args: Any, disk_bytes: int = 0, **kwargs: Any) -> Any:
        """A writing Milvus call, of about ``disk_bytes`` on disk (qbank.store.lite.disk_needed).

        On Milvus Lite the write is first checked against the free space and the floor
        (QBANK_MIN_FREE_DISK_BYTES), under one lock so two writes cannot both take the last room:
        Lite acknowledges a write it cannot store. When a write fails there, Lite is restarted before
        the error is returned: Lite applies a write in memory before the file (measured on a full
        3 MB tmpfs: the failed batch was counted until a reload), so only a reload makes what
        requests see match what is on disk again (``outcome`` says so in the error)."""
        if self.lite is None:
            return self._write(operation, outcome, args, kwargs)
        with self._write_lock:
            check_disk_room(self.lite.db_file, disk_bytes, self.settings.min_free_disk_bytes, outcome)
            return self._write(operation, outcome, args, kwargs)

    def _write(self, operation: Callable[..., Any], outcome: str, args: tuple, kwargs: dict) -> Any:
        client = self.client()
        try:
            return self.invoke(client, operation, *args, **kwargs)
        except MilvusUnavailableError:
            raise
        except StoreError as exc:
            message = f"{self.disk_note()}{exc}"
            if self.lite is not None:
                self.forget(client)
                self.lite.restart(f"a {operation.__name__} failed, reloading what is on disk")
                message = f"{outcome}: {message}"
            raise StoreError(message) from None

    def disk_note(self) -> str:
        """What the disk says, when it is the likely cause of a failed write."""
        if self.lite is None:
            return ""
        free = free_bytes(self.lite.db_file)
        if free is not None and free < max(LOW_DISK_BYTES, self.settings.min_free_disk_bytes):
            return (
                f"the disk holding {self.lite.db_file.parent} is full ({free} bytes free): free space "
                "(or move QBANK_DATA_DIR) and send the request again. "
            )
        return ""

    def forget(self, client: Any) -> None:
        """Drop ``client``: the next call connects again (and restarts Milvus Lite if it died)."""
        with self._lock:
            if self._client is client:
                self._client = None
        self._close_quietly(client)

    @staticmethod
    def _close_quietly(client: Any) -> None:
        try:
            client.close()
        except Exception:  # closing a broken connection may fail too; nothing more to do
            pass

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._close_quietly(client)
        if self.lite is not None:
            self.lite.stop()
