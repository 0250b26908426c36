"""The service's own Prometheus series, beside jina's. flow.yml turns jina's monitoring on for the
gateway and each executor (QBANK_METRICS_PORT and one port per executor; k8s: 9090 on every pod),
and jina serves each process's registry there; the series below are made in that registry, so
one scrape of a part reads jina's request series (``jina_process_request_seconds`` per endpoint,
``jina_receiving_request_seconds`` at the gateway) and ours. Without monitoring (a Flow started
otherwise, an executor in a test) they count into a registry nobody reads.

Names follow Prometheus' conventions (a unit suffix, ``_total`` on counters, added by the client).
docs/operations.md describes each, and k8s/monitoring/qbank-dashboard.json draws them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from qbank.store.errors import DiskFullError, MilvusUnavailableError, StoreError

# Seconds a photo's read or a search takes, on 2 CPU cores: a page read is 0.1-1 s, a search 5-300 ms.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REFUSAL_REASONS = ("size", "busy", "timeout", "disk", "auth")


def registry_of(executor: Any) -> CollectorRegistry:
    """The registry jina serves for ``executor``'s process (monitoring on), else a private one."""
    registry = getattr(getattr(executor, "runtime_args", None), "metrics_registry", None)
    return registry if registry is not None else CollectorRegistry()


def refusal_reason(exc: BaseException) -> str | None:
    """Which refusal ``exc`` is (an exception class says so by its ``refusal_reason``), or None."""
    if isinstance(exc, DiskFullError):
        return "disk"
    return getattr(exc, "refusal_reason", None)


class Refusals:
    """``qbank_refusals_total{reason}``: requests refused before or instead of their work."""

    def __init__(self, registry: CollectorRegistry):
        self.counter = Counter(
            "qbank_refusals",
            "Requests refused, by reason: size (a request or image over its limit), busy (the reader's "
            "queue is full), timeout (QBANK_OCR_TIMEOUT), disk (the Milvus Lite free-space floor), auth "
            "(no or a wrong token, at the gateway)",
            ["reason"],
            registry=registry,
        )
        for reason in REFUSAL_REASONS:  # every reason is a series from the start, at 0
            self.counter.labels(reason)

    def count(self, reason: str) -> None:
        self.counter.labels(reason).inc()


class ExecutorSeries:
    """What every executor counts: its refusals and the Milvus errors it met (the indexer's)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.refusals = Refusals(registry)
        self.milvus_errors = Counter(
            "qbank_milvus_errors",
            "Milvus calls that failed, by kind: unavailable (unreachable, not loaded; retried by the "
            "next request) or failed (Milvus refused the operation)",
            ["kind"],
            registry=registry,
        )
        for kind in ("unavailable", "failed"):  # a series from the start, at 0: an alert can read it
            self.milvus_errors.labels(kind)

    def failed(self, exc: BaseException) -> None:
        """Count what ``exc``, a request's failure, says: a refusal, a Milvus error, or nothing."""
        reason = refusal_reason(exc)
        if reason:
            self.refusals.count(reason)
        if isinstance(exc, MilvusUnavailableError):
            self.milvus_errors.labels("unavailable").inc()
        elif isinstance(exc, StoreError) and not isinstance(exc, DiskFullError):
            self.milvus_errors.labels("failed").inc()


class ReaderSeries(ExecutorSeries):
    def __init__(self, registry: CollectorRegistry):
        super().__init__(registry)
        self.read_seconds = Histogram(
            "qbank_ocr_seconds",
            "Seconds the reader took to read one image (a photo at /search, a figure at /index), from "
            "detection to the last line, its second looks included",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue = Gauge(
            "qbank_ocr_queue",
            "Photo searches this reader replica holds now, being read or waiting (refused as busy above "
            "QBANK_OCR_CONCURRENCY + QBANK_OCR_MAX_QUEUE)",
            registry=registry,
        )
        self.photos = Counter(
            "qbank_ocr_photos",
            "Photos read at /search, by what was found: text (searched by its words), no_text (searched "
            "by its CLIP vector), figure (a figure found on it; matched against the bank's figures when asked or when "
            "its words are few)",
            ["found"],
            registry=registry,
        )
        for found in ("text", "no_text", "figure"):
            self.photos.labels(found)


class EncoderSeries(ExecutorSeries):
    def __init__(self, registry: CollectorRegistry):
        super().__init__(registry)
        self.embedded = Counter(
            "qbank_embedded_items",
            "Items and queries the encoder embedded, by modality (text, image)",
            ["modality"],
            registry=registry,
        )
        for modality in ("text", "image"):
            self.embedded.labels(modality)


class IndexerSeries(ExecutorSeries):
    def __init__(self, registry: CollectorRegistry, stored: Callable[[], float], connects: Callable[[], float]):
        super().__init__(registry)
        self.searches = Counter(
            "qbank_searches",
            "Queries searched, by mode (dense, bm25, hybrid) and query (typed, photo, page_question, figure)",
            ["mode", "query"],
            registry=registry,
        )
        self.search_seconds = Histogram(
            "qbank_search_seconds",
            "Seconds one /search took in the indexer (its queries' store calls and ranking), by mode",
            ["mode"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.written = Counter(
            "qbank_items_written", "Items upserted (/index, /update) and deleted", ["operation"], registry=registry
        )
        for operation in ("upsert", "delete"):
            self.written.labels(operation)
        items = Gauge(
            "qbank_items_stored",
            "Items in the collection (a question's stem and each figure are items), read at each scrape",
            registry=registry,
        )
        items.set_function(stored)
        reconnects = Gauge(
            "qbank_milvus_connects",
            "Connections this indexer made to Milvus (1 at start; each more is a reconnect after an outage "
            "or a Milvus Lite restart)",
            registry=registry,
        )
        reconnects.set_function(connects)
