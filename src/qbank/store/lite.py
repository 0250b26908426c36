"""The Milvus Lite server process behind a ``.db`` file, owned by the store so it can be restarted.

pymilvus starts Milvus Lite itself when given a file URI, but keeps the process in a module-level
registry that never notices it died: after ``kill -9`` of that process every later call failed and
nothing restarted it. It also never reloads after a failed write: Milvus Lite 2.5.1 applies an
upsert in memory before it reaches the file, so a write that failed on a full disk stayed visible
(``/count`` counted it) until the next restart dropped it (measured on a 3 MB tmpfs: 800 counted,
700 on disk). Owning the process lets the store restart it in both cases, so what requests see is
what is on disk. On a full disk Lite 2.5.1 does not even fail: it logs "database or disk is full"
and acknowledges the write, which is lost at the next restart; so every write is first checked
against the free space (:func:`check_disk_room`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from qbank.store.errors import DiskFullError

logger = logging.getLogger("qbank.store.lite")


class LiteProcess:
    """One Milvus Lite server for one file; :meth:`uri` (re)starts it when it is not running."""

    def __init__(self, db_file: str | Path):
        self.db_file = Path(db_file).resolve()
        self._server = None
        self.restarts = 0

    def alive(self) -> bool:
        process = getattr(self._server, "_p", None)
        return process is not None and process.poll() is None

    def exit_code(self) -> int | None:
        process = getattr(self._server, "_p", None)
        return None if process is None else process.poll()

    def uri(self) -> str:
        """The running server's ``unix:`` URI, starting (or restarting) the server when needed."""
        if self.alive():
            return self._server.uds_path
        if self._server is not None:
            logger.error(
                "Milvus Lite for %s is not running (exit code %s); restarting it", self.db_file, self.exit_code()
            )
            self.stop()
            self.restarts += 1
        from milvus_lite.server import Server

        server = Server(str(self.db_file))
        if not server.init() or not server.start():
            server.stop()
            raise RuntimeError(
                f"Milvus Lite could not start on {self.db_file} (is another process using the file, "
                "or is its folder missing or read-only?)"
            )
        self._server = server
        return server.uds_path

    def restart(self, reason: str) -> None:
        """Stop the server; the next :meth:`uri` starts it again from what is on disk."""
        logger.warning("restarting Milvus Lite for %s: %s", self.db_file, reason)
        self.stop()
        self.restarts += 1

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing folder), None if unknown."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        return shutil.disk_usage(target).free
    except OSError:
        return None


# Disk bytes Milvus Lite 2.5.1 wrote per byte of a request's rows (text, matching form, vector,
# tags, qbank.store.lite.row_bytes), measured on fresh files by bench/disk.py: 1.3 (1,000 items with
# 768-d vectors) to 4.6 (100 stems of 20 characters, 16-d); the peak while writing, the rollback
# journal included, up to 7.6 on that smallest request, whose 30 KB is mostly page granularity.
# So: 6 per byte, plus a fixed allowance per write for the journal and partly filled pages.
DISK_BYTES_PER_ROW_BYTE = 6
DISK_BYTES_PER_WRITE = 1024 * 1024
ROW_OVERHEAD_BYTES = 100  # ids, scalar columns and row framing beyond the fields counted


def row_bytes(row: dict[str, Any]) -> int:
    """The bytes of one row's values as Milvus stores them (strings as UTF-8, floats as float32)."""
    size = ROW_OVERHEAD_BYTES
    for value in row.values():
        if isinstance(value, str):
            size += len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (list, tuple)):
            size += 4 * len(value)
        elif isinstance(value, dict):
            size += len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        else:
            size += 8
    return size


def disk_needed(rows: list[dict[str, Any]]) -> int:
    """Disk bytes a write of ``rows`` may take on Milvus Lite, with margin (DISK_BYTES_PER_ROW_BYTE)."""
    return DISK_BYTES_PER_WRITE + DISK_BYTES_PER_ROW_BYTE * sum(row_bytes(row) for row in rows)


def check_disk_room(db_file: Path, need: int, floor: int, outcome: str) -> None:
    """Refuse a write that would leave less than ``floor`` bytes free on the disk holding ``db_file``.

    Checked before each write, because Milvus Lite 2.5.1 does not report a write it could not store:
    on a full disk it logs "database or disk is full" and answers success, and the rows are gone at
    the next restart (measured: 40,000 acknowledged, 4,000 after a restart)."""
    free = free_bytes(db_file)
    if free is None or free - need >= floor:
        return
    raise DiskFullError(
        f"{outcome}: the disk holding {db_file.parent} has {free} bytes free; this write needs about "
        f"{need} bytes and the disk must keep {floor} free (QBANK_MIN_FREE_DISK_BYTES): free space "
        "(or move QBANK_DATA_DIR) and send the request again"
    )


class DataDirError(RuntimeError):
    """The Milvus Lite data folder cannot be used."""


def check_writable(folder: Path) -> None:
    """Refuse a data folder that cannot be written (checked by writing, since root ignores mode bits):
    on a read-only folder the Flow used to come up and pass health checks while every call failed."""
    probe = folder / f".qbank-write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(
            f"the data folder {folder} cannot be written ({exc.strerror}): Milvus Lite keeps its file there. "
            "Make it writable or set QBANK_DATA_DIR (or QBANK_MILVUS_URI for a Milvus server)"
        ) from None
