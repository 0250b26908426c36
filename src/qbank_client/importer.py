"""Bulk import: batched, concurrent, resumable, with progress and a summary.

Resume needs no local state: before encoding a batch, the client asks the server (/exists) which of
its item ids are stored and sends only the rest. Items are upserted by id, so even a batch that was
in flight when the import was killed is written once. A question's items travel in one request,
and requests are all-or-nothing, so a question is never half-written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from docarray import DocumentArray

from qbank_client.api import QbankClient
from qbank_client.bank import BadRow, Question, load_figures


@dataclass
class ImportSummary:
    questions: int = 0  # good questions read
    imported: int = 0  # questions whose items are all stored after this run
    items_sent: int = 0  # items encoded and written by this run
    items_skipped: int = 0  # items already stored (resume)
    bad_rows: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # questions whose request failed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def batches(rows: Iterable[Question | BadRow], size: int, summary: ImportSummary) -> Iterator[list[Question]]:
    batch: list[Question] = []
    for row in rows:
        if isinstance(row, BadRow):
            summary.bad_rows.append(str(row))
            continue
        try:
            load_figures(row)
        except (OSError, ValueError) as exc:
            summary.bad_rows.append(f"{row.source}: figure cannot be read: {exc}")
            continue
        summary.questions += 1
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_bank(
    client: QbankClient,
    rows: Iterable[Question | BadRow],
    batch_size: int = 32,
    concurrency: int = 2,
    force: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> ImportSummary:
    """Import questions; bad rows are collected in the summary (the caller decides to fail on them)."""
    from tqdm import tqdm

    summary = ImportSummary()
    lock = threading.Lock()
    bar = tqdm(total=total, unit="q", desc="import", disable=not progress)

    def send(batch: list[Question]) -> None:
        ids = [i for q in batch for i in q.item_ids()]
        stored = set() if force else client.existing(ids)
        docs = DocumentArray(d for q in batch for d in q.documents() if d.id not in stored)
        try:
            if docs:
                client.index(docs)
        except Exception as exc:  # the server's message names the bad items
            with lock:
                summary.failed.extend(f"{q.source}: {q.id}: {str(exc).splitlines()[0][:300]}" for q in batch)
                bar.update(len(batch))
            return
        with lock:
            summary.items_sent += len(docs)
            summary.items_skipped += len(ids) - len(docs)
            summary.imported += len(batch)
            bar.update(len(batch))

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending = []
        for batch in batches(rows, batch_size, summary):
            pending.append(pool.submit(send, batch))
            if len(pending) >= 2 * concurrency:  # bounded read-ahead: memory stays flat on big banks
                pending.pop(0).result()
        for future in pending:
            future.result()
    bar.close()
    return summary
