"""A bounded load test: N concurrent clients for M seconds against a running Flow; it stops by itself.

Each client alternates the calls a search service sees (similar-question recall, text->image,
stored-count), and the run reports errors, p50/p99 latency, throughput and the memory of the
Flow's processes before and after (growth over the run is what a leak looks like).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QUERIES = ["已知三角形的面积求边长", "圆的半径与周长", "电路中的电流", "化学反应方程式", "函数图像的交点"]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_tree_rss_mb(root: int | None = None) -> float:
    """Resident memory of a process's descendants (a Flow started in this process: its gateway and
    executors), in MB. Linux /proc only; 0.0 elsewhere."""
    pending, total = list(_children(root or os.getpid())), 0
    while pending:
        pid = pending.pop()
        pending.extend(_children(pid))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class LoadReport:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"{self.clients} clients x {self.seconds:.0f} s: {self.requests} requests, {len(self.errors)} errors, "
            f"{self.requests / self.seconds:.1f} req/s, p50 {self.percentile(0.5):.0f} ms, "
            f"p99 {self.percentile(0.99):.0f} ms, Flow RSS {self.rss_before_mb:.0f} -> {self.rss_after_mb:.0f} MB"
        )


def run_load(url: str, clients: int = 4, seconds: float = 10.0, token: str | None = None) -> LoadReport:
    """Run ``clients`` threads against ``url`` until ``seconds`` pass; never runs longer than that
    plus one request each."""
    from qbank_client import QbankClient

    report = LoadReport(clients=clients, seconds=seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(n: int) -> None:
        client = QbankClient(url, token=token)
        i = n
        while time.monotonic() < deadline:
            query = QUERIES[i % len(QUERIES)]
            calls = (client.similar_questions, client.text_to_image, lambda _q: client.count())
            started = time.monotonic()
            try:
                calls[i % len(calls)](query)
                with lock:
                    report.latencies.append(time.monotonic() - started)
            except Exception as exc:  # counted, never raised: the report says how many and which
                with lock:
                    report.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            i += 1

    report.rss_before_mb = process_tree_rss_mb()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.rss_after_mb = process_tree_rss_mb()
    return report
