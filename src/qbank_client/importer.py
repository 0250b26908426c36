"""Bulk import: streamed, checked, batched, concurrent, resumable, with progress and a summary.

Rows are read, checked and sent as the file is read, a few batches ahead at most, so the client's
memory does not grow with the bank (a 1 GB JSONL used to take 8-10 GB: the whole bank was read
first). Every limit the service enforces is checked on each row first (:func:`check_items`), so a
bad row is named by its line and the good rows of its batch are stored; should the service refuse
a batch anyway (other settings than the defaults), the batch is split and its halves retried until
only the refused question is left out.

Resume needs no local state: before encoding a batch, the client asks the server (/exists) which of
its item ids are stored and sends only the rest. Items are upserted by id, so even a batch that was
in flight when the import was killed is written once. A question's items travel in one request,
and requests are all-or-nothing, so a question is never half-written.

A question id used twice in one bank: the first good row with it is imported and each later one
is named (file:line of both) and skipped, so every run keeps the same one, a resumed run included.
The ids seen are kept in a temporary SQLite file, not in memory.
"""

from __future__ import annotations

import gc
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from docarray import DocumentArray

from qbank_client.api import QbankClient
from qbank_client.bank import REQUEST_BYTES, BadRow, Bank, Question, check_items, load_figures
from qbank_client.transport import ServerError, ServerUnavailable

# A batch closes at this many bytes of payload (or at batch_size questions): a few batches in flight
# stay well inside memory and the gateway's request limit; a larger question goes alone.
BATCH_BYTES = min(16 * 1024 * 1024, REQUEST_BYTES // 2)
# Retries of a batch while the service is unreachable (an executor restarting), seconds apart; then
# the import stops with its summary.
UNAVAILABLE_RETRIES = (1.0, 2.0, 4.0, 8.0)
# docarray v1 Documents hold reference cycles, so a sent batch (its Documents and their tags) is freed
# only by the cycle collector, whose oldest generation runs rarely when objects are few and large: the
# client grew from 100 to 268 MB over a 1 GB bank of 60 KB rows. It is run after this many bytes sent.
COLLECT_EVERY_BYTES = 32 * 1024 * 1024
_NAMED_ITEM = re.compile(r"item '([^']+)'")
# Refusals of what a batch holds or how large it is: a smaller batch may pass, so the batch is split.
# Others (a full disk, an internal error) fail the batch whole, as a smaller one would fail too.
_SPLIT_WHEN = re.compile(r"items? (?:rejected|cannot be encoded)|item '|over the limit|too large|RESOURCE_EXHAUSTED")
# Refusals that no other batch would escape (the token): the import stops at the first.
_WHOLE_IMPORT_REFUSED = ("UNAUTHENTICATED", "missing or wrong token", "PERMISSION_DENIED")


@dataclass
class ImportSummary:
    questions: int = 0  # good questions read
    imported: int = 0  # questions whose items are all stored after this run
    items_sent: int = 0  # items encoded and written by this run
    items_skipped: int = 0  # items already stored (resume)
    bad_rows: list[str] = field(default_factory=list)  # "file:line: why"
    duplicates: list[str] = field(default_factory=list)  # later rows of an id already read
    conflicts: int = 0  # of the duplicates, those whose content differs from the first
    failed: list[str] = field(default_factory=list)  # questions the service refused
    stopped: str | None = None  # why the import ended before the bank did (the service went away)
    not_sent: int = 0  # good questions read but not sent because the import stopped
    files: list[str] = field(default_factory=list)  # how each file was read (format, encoding)
    checked_only: bool = False  # --check: read and checked, nothing sent

    @property
    def complete(self) -> bool:
        """Every row stored or already there: nothing bad, different under one id, failed or left."""
        return not (self.bad_rows or self.conflicts or self.failed or self.stopped)

    def to_dict(self) -> dict:
        return dict(self.__dict__, complete=self.complete)

    def line(self) -> str:
        if self.checked_only:
            return (
                f"checked, nothing sent: questions ready to import: {self.questions}  bad rows: {len(self.bad_rows)}  "
                f"duplicate ids: {len(self.duplicates)}"
            )
        return (
            f"questions read: {self.questions}  imported: {self.imported}  items written: {self.items_sent}  "
            f"already stored (skipped): {self.items_skipped}  bad rows: {len(self.bad_rows)}  "
            f"duplicate ids: {len(self.duplicates)}  failed: {len(self.failed)}"
            + (f"  not sent: {self.not_sent} (stopped)" if self.stopped else "")
        )


class SeenIds:
    """Question ids read so far, where, and a digest of their content, in a private temporary
    SQLite file (an empty file name): memory stays flat on a bank of 10^8 questions."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, source TEXT, digest TEXT) WITHOUT ROWID")

    def first(self, question: Question) -> tuple[str, bool] | None:
        """None the first time the question's id is read; else (where it was, whether the content
        is the same)."""
        digest = question.digest()
        cursor = self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", (question.id, question.source, digest))
        if cursor.rowcount:
            return None
        source, first_digest = self._db.execute(
            "SELECT source, digest FROM seen WHERE id = ?", (question.id,)
        ).fetchone()
        return source, first_digest == digest

    def close(self) -> None:
        self._db.close()


def checked(rows: Iterable[Question | BadRow], summary: ImportSummary, seen: SeenIds) -> Iterator[Question]:
    """The good questions of ``rows``, their figures read and every item checked as the service
    would; bad rows and later duplicates go to the summary."""
    for row in rows:
        if isinstance(row, BadRow):
            summary.bad_rows.append(str(row))
            continue
        try:
            load_figures(row)
            check_items(row)
        except (OSError, ValueError) as exc:
            summary.bad_rows.append(f"{row.source}: {exc}")
            continue
        earlier = seen.first(row)
        if earlier is not None:
            source, same = earlier
            summary.duplicates.append(
                f"{row.source}: question id {row.id!r} was read before at {source} "
                f"({'the same content' if same else 'different content'}): skipped, the first is imported"
            )
            summary.conflicts += 0 if same else 1
            row.figure_bytes = []
            continue
        summary.questions += 1
        yield row


def batches(questions: Iterable[Question], size: int, max_bytes: int = BATCH_BYTES) -> Iterator[list[Question]]:
    """Questions in batches of at most ``size`` questions and about ``max_bytes`` of payload."""
    batch: list[Question] = []
    held = 0
    for question in questions:
        weight = question.payload_bytes
        if batch and (len(batch) == size or held + weight > max_bytes):
            yield batch
            batch, held = [], 0
        batch.append(question)
        held += weight
    if batch:
        yield batch


def check_bank(rows: Iterable[Question | BadRow] | Bank) -> ImportSummary:
    """Read and check a bank as an import would, sending nothing (``qbank import --check``)."""
    summary = ImportSummary(checked_only=True)
    seen = SeenIds()
    if isinstance(rows, Bank):
        summary.files = [f.describe() for f in rows.files]
        rows = rows.rows()
    try:
        for question in checked(rows, summary, seen):
            question.figure_bytes = []
    finally:
        seen.close()
    return summary


class _Importer:
    def __init__(self, client: QbankClient, force: bool) -> None:
        self.client, self.force = client, force
        self.summary = ImportSummary()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent_bytes = 0  # since the last cycle collection

    def send(self, batch: list[Question]) -> None:
        if self.stop.is_set():
            with self.lock:
                self.summary.not_sent += len(batch)
            return
        for pause in (*UNAVAILABLE_RETRIES, None):
            try:
                self._write(batch)
                return
            except ServerUnavailable as exc:
                if pause is None or self.stop.is_set():
                    self._stop(batch, str(exc).splitlines()[0])
                    return
                time.sleep(pause)
            except ServerError as exc:
                message = str(exc).splitlines()[0]
                if any(mark in message for mark in _WHOLE_IMPORT_REFUSED):
                    self._stop(batch, message)
                else:
                    self._refused(batch, message)
                return

    def _stop(self, batch: list[Question], reason: str) -> None:
        """End the import: ``batch`` and every batch after it are not sent; the first reason stays."""
        with self.lock:
            self.summary.not_sent += len(batch)
            if not self.stop.is_set():
                self.summary.stopped = reason[:300]
                self.stop.set()

    def _write(self, batch: list[Question]) -> None:
        ids = [i for q in batch for i in q.item_ids()]
        stored = set() if self.force else self.client.existing(ids)
        docs = DocumentArray(d for q in batch for d in q.documents() if d.id not in stored)
        if docs:
            self.client.index(docs)
        sent = len(docs)
        del docs
        with self.lock:
            self.summary.items_sent += sent
            self.summary.items_skipped += len(ids) - sent
            self.summary.imported += len(batch)
            self.sent_bytes += sum(q.payload_bytes for q in batch)
            collect = self.sent_bytes >= COLLECT_EVERY_BYTES
            if collect:
                self.sent_bytes = 0
        if collect:
            gc.collect()

    def _refused(self, batch: list[Question], message: str) -> None:
        """The service refused ``batch``: the questions its message names fail and the rest is sent
        again (split in halves while a refusal of items or size names none), so only refused
        questions are left out."""
        named = set(_NAMED_ITEM.findall(message))
        failing = [q for q in batch if named & set(q.item_ids())]
        if not failing and (len(batch) == 1 or not _SPLIT_WHEN.search(message)):
            failing = batch
        with self.lock:
            self.summary.failed.extend(f"{q.source}: {q.id}: {message[:300]}" for q in failing)
        refused = {id(q) for q in failing}  # by identity: == compares every field, figures included
        rest = [q for q in batch if id(q) not in refused]
        if not rest:
            return
        if failing:
            self.send(rest)
        else:
            half = len(rest) // 2
            self.send(rest[:half])
            self.send(rest[half:])


def import_bank(
    client: QbankClient,
    rows: Iterable[Question | BadRow] | Bank,
    batch_size: int = 32,
    concurrency: int = 2,
    force: bool = False,
    progress: bool = True,
) -> ImportSummary:
    """Import a bank (a :class:`Bank` from :func:`open_bank`, or rows from :func:`read_bank`); bad
    rows, duplicates and refused questions are collected in the summary, never raised."""
    from tqdm import tqdm

    bank = rows if isinstance(rows, Bank) else None
    by_bytes = bank is not None and bank.size > 0
    bar = tqdm(
        total=bank.size if by_bytes else None,
        unit="B" if by_bytes else "q",
        unit_scale=by_bytes,
        desc="import",
        disable=not progress,
    )
    importer = _Importer(client, force)
    summary = importer.summary
    if bank is not None:
        summary.files = [f.describe() for f in bank.files]
    seen = SeenIds()
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            pending = []
            source = bank.rows() if bank is not None else rows
            for batch in batches(checked(source, summary, seen), batch_size):
                if importer.stop.is_set():
                    break
                pending.append(pool.submit(importer.send, batch))
                if len(pending) > concurrency:  # one batch ready per sender: memory stays flat on big banks
                    pending.pop(0).result()
                bar.update((bank.bytes_read - bar.n) if by_bytes else len(batch))
                bar.set_postfix(questions=summary.questions, refresh=False)
            for future in pending:
                future.result()
    finally:
        seen.close()
        bar.close()
    return summary
