"""Faults: Milvus down at start, going away and coming back; the Flow stays up and recovers.

Milvus here is a real Milvus gRPC server: milvus-lite's server binary listening on a loopback
port, reached by URI exactly like a Milvus cluster (QBANK_MILVUS_URI=http://host:port).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from clip_client import Client
from conftest import free_ports, running_flow
from test_flow import count, question_items


class MilvusServer:
    """milvus-lite's server on a fixed loopback port and file, so it can be stopped and restarted."""

    def __init__(self, db_file: str):
        self.db_file = db_file
        self.port = free_ports(1)[0]
        self.uri = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from milvus_lite.server import Server

        self._server = Server(self.db_file, f"127.0.0.1:{self.port}")
        assert self._server.init() and self._server.start(), "milvus-lite server did not start"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextlib.contextmanager
def milvus_server(db_file: str) -> Iterator[MilvusServer]:
    server = MilvusServer(db_file)
    try:
        yield server
    finally:
        server.stop()


def fails_fast(action, within: float) -> str:
    started = time.monotonic()
    with pytest.raises(Exception) as error:
        action()
    elapsed = time.monotonic() - started
    assert elapsed < within, f"took {elapsed:.1f} s to fail"
    return str(error.value)


def eventually(action, timeout: float = 90.0):
    """Retry until Milvus' reconnect backoff lets the call through."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@pytest.mark.service
def test_milvus_down_at_start_and_restarted_later_the_flow_recovers(tiny_model, tmp_path):
    docs = question_items("fault", 3, "物理")
    with milvus_server(str(tmp_path / "milvus.db")) as milvus:
        # Milvus is not running yet: the Flow starts anyway, and requests fail fast with a clear error.
        with running_flow(model=tiny_model, milvus_uri=milvus.uri, connect_timeout=2) as urls:
            client = Client(urls["grpc"])
            message = fails_fast(lambda: client.index(docs), within=15)
            assert "cannot connect to Milvus at " + milvus.uri in message

            milvus.start()
            eventually(lambda: client.index(docs))
            assert count(urls["grpc"]) == 6

            # Milvus goes away: search, index and count fail fast; the gateway keeps answering.
            milvus.stop()
            for action in (lambda: client.search(["物理"], limit=3), lambda: client.index(docs)):
                message = fails_fast(action, within=15)
                assert "Milvus at " + milvus.uri in message or "cannot connect to Milvus" in message
            fails_fast(lambda: count(urls["http"]), within=15)
            assert len(client.encode(["编码不需要 Milvus"])[0]) == 16  # the encoder path still works

            # Back on the same data: the same Flow, without a restart, finds everything.
            milvus.start()
            assert eventually(lambda: count(urls["grpc"])) == 6
            result = client.search([docs[4].text], limit=1)
            assert result[0].matches[0].id == docs[4].id


@pytest.mark.service
def test_milvus_lites_server_by_uri_is_known_as_lite_and_gets_flat(tmp_path):
    """Lite's server binary answers no version call (UNIMPLEMENTED) and builds no HNSW ("local mode
    only support FLAT IVF_FLAT AUTOINDEX"): reached by URI it is still Lite, and gets FLAT."""
    from qbank.config import IndexerSettings
    from qbank.store import ItemStore

    with milvus_server(str(tmp_path / "milvus.db")) as milvus:
        milvus.start()
        store = ItemStore(IndexerSettings.resolve(milvus_uri=milvus.uri))
        try:
            store.check_vectors("test-model", 4, create=True)
            assert store.capabilities.lite and store.describe()["index_type"] == "FLAT"
        finally:
            store.close()
