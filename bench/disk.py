"""Disk bytes Milvus Lite writes per byte of a request's rows, the figure behind the free-space check.

    .venv/bin/python bench/disk.py

For each shape of request (items per request, characters per stem, vector dimension) it upserts a
few requests into a fresh Lite file through the store and prints the file's growth (and the peak
while writing, the rollback journal included) divided by qbank.store.lite.row_bytes of the rows
written, beside the factor the store assumes (DISK_BYTES_PER_ROW_BYTE). A re-upsert of stored ids
is measured too (it reuses pages). Lite 2.5.1 acknowledges writes it cannot store on a full disk,
so this factor must stay above every measured ratio.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time

import numpy as np

from qbank.config import IndexerSettings
from qbank.domain.schema import item_row
from qbank.store.items import ItemStore
from qbank.store.lite import DISK_BYTES_PER_ROW_BYTE, DISK_BYTES_PER_WRITE, disk_needed, row_bytes

SHAPES = [  # (vector dimension, items per request, characters per stem)
    (16, 500, 860),
    (16, 100, 20),
    (16, 1000, 1),
    (512, 500, 20),
    (512, 1000, 1),
    (512, 200, 3000),
    (768, 1000, 1),
]
REQUESTS = 3


class PeakUsage:
    """The most bytes used on a folder's disk while it runs (polled every 2 ms)."""

    def __init__(self, folder: str):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, shutil.disk_usage(self.folder).used)
            time.sleep(0.002)

    def __enter__(self) -> PeakUsage:
        self.peak = shutil.disk_usage(self.folder).used
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def request_rows(rng: np.random.Generator, first: int, items: int, chars: int, dim: int) -> list[dict]:
    rows = []
    for n in range(first, first + items):
        text = f"第{n}题：" + "".join(chr(0x4E00 + (n * 7 + k) % 20000) for k in range(chars))
        vector = rng.normal(size=dim).astype(np.float32).tolist()
        rows.append(item_row(f"q{n}:text:0", vector, question_id=f"q{n}", text=text, subject="数学"))
    return rows


def main() -> None:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    logging.basicConfig(level=logging.ERROR)
    print(f"store's estimate: {DISK_BYTES_PER_WRITE} bytes + {DISK_BYTES_PER_ROW_BYTE} per row byte")
    header = "growth/row bytes per request   peak/row bytes  re-upsert  peak/estimate"
    print(f"{'dim':>4} {'items':>5} {'chars':>5}  {header}")
    worst = 0.0
    for dim, items, chars in SHAPES:
        folder = tempfile.mkdtemp(prefix="qbank-disk-")
        store = ItemStore(IndexerSettings.resolve(data_dir=folder, model="bench"))
        store.check_vectors("bench", dim, create=True)
        rng = np.random.default_rng(0)
        growth, peaks, used_of_estimate = [], [], []
        for request in range(REQUESTS + 1):
            again = request == REQUESTS
            rows = request_rows(rng, (request - 1 if again else request) * items, items, chars, dim)
            stored = store._with_search_form(rows)
            written = sum(row_bytes(row) for row in stored)
            before = shutil.disk_usage(folder).used
            with PeakUsage(folder) as usage:
                store.upsert(rows)
            ratio = (shutil.disk_usage(folder).used - before) / written
            if again:
                reupsert = ratio
            else:
                growth.append(ratio)
                peaks.append((usage.peak - before) / written)
                used_of_estimate.append((usage.peak - before) / disk_needed(stored))
        worst = max(worst, *used_of_estimate)
        shown = " ".join(f"{g:.2f}" for g in growth)
        print(
            f"{dim:>4} {items:>5} {chars:>5}  {shown:<30} {max(peaks):>14.2f} {reupsert:>10.2f} "
            f"{max(used_of_estimate):>14.2f}"
        )
        store.connection.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"worst peak: {worst:.2f} of the store's estimate (must stay under 1)")


if __name__ == "__main__":
    main()
