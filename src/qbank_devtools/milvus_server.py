"""A real Milvus server on loopback for tests and benchmarks: the embedded Milvus *standalone* of the
PyPI package ``milvus`` (2.3.5: the real engine with knowhere, HNSW and index builds, not Milvus
Lite's), started in a folder of its own and stopped by its process.

It is the dev extra's, never a runtime dependency: users bring their own Milvus by URI. Measured here
(../shared/README.md): up in about 9 s; pymilvus 2.5.18 talks to it; it reports 'v2.3.5-lite'.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

logger = logging.getLogger("qbank.devtools.milvus")


def _bind_reusing_address(port: int) -> socket.socket | None:
    """The package's check that a port is free, as Milvus (Go) itself binds: with SO_REUSEADDR, so a
    port whose last connections are in TIME_WAIT after a crash counts as free."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


class StandaloneMilvus:
    """One Milvus standalone process: its data under ``base_dir``, gRPC on ``port`` (loopback).
    ``stop`` (or ``kill``) then ``start`` restarts it on the same data and the same port.

    The port is passed as a hard setting: given only as a preferred port (the package's
    ``listen_port``), a restart after a crash silently moved to the next free port, and clients of
    the old one never reconnected (measured: 180 s of "Fail connecting" while it ran elsewhere)."""

    def __init__(self, base_dir: Path, port: int, settings: dict[str, str] | None = None):
        """``settings``: milvus.yaml entries by dotted key, e.g.
        ``{"dataCoord.compaction.enableAutoCompaction": "false"}`` (bench/server.py --milvus-set)."""
        from milvus import MilvusServer, MilvusServerConfig

        self.base_dir = Path(base_dir)
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        config = MilvusServerConfig(proxy_port=port)
        config.try_bind_port = _bind_reusing_address
        for key, value in (settings or {}).items():
            config.set(key, value)
        self._server = MilvusServer(config)
        self._server.set_base_dir(str(self.base_dir))

    @property
    def pid(self) -> int | None:
        process = self._server.server_proc
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start and wait until its health check answers (raises when it does not come up)."""
        self._server.start()
        listening = int(self._server.config.get("proxy_port"))
        if listening != self.port:
            self.stop()
            raise RuntimeError(f"Milvus standalone came up on port {listening}, not {self.port}")
        logger.info("Milvus standalone pid %s at %s (data in %s)", self.pid, self.uri, self.base_dir)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a second (the package's own stop)."""
        self._server.stop()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        process = self._server.server_proc
        if process is not None:
            process.kill()
            process.wait(timeout=30)
        self._server.server_proc = None
        self._server.stop()  # closes its log files

    def __enter__(self) -> StandaloneMilvus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
