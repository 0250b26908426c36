"""The Flow's own cost on one search: /search through the Flow against the same search made directly
by the store layer (pymilvus MilvusClient, the call the indexer makes), same queries, alternating
query by query; p50 and p99 of each path and of the per-query difference, and where the Flow's time
goes (the spans jina records in each response's routes: the gateway's, then each executor's as the
gateway saw it).

    .venv/bin/python bench/flow_cost.py                   # Milvus 2.3.5 standalone (dev extra), 20k items
    .venv/bin/python bench/flow_cost.py --milvus lite     # the embedded default

Vectors are sent precomputed (the encoder passes them on, as for a client that embeds itself), so
the figures are the Flow's own cost: gateway, the hops through the reader and the encoder, the
indexer's mapping, and the transport. Paths: QbankClient (one kept gRPC channel) and jina's Client
(a new channel per call, what clip_client does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def spans(response) -> dict[str, float]:
    """Milliseconds per route of a jina response: 'gateway' is the whole request inside the gateway,
    each executor's is from the gateway sending to it until its answer arrived."""
    out = {}
    for route in response.routes:
        start, end = route.start_time.ToNanoseconds(), route.end_time.ToNanoseconds()
        if end > start:
            out[route.executor] = (end - start) / 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milvus", choices=("server", "lite"), default="server")
    parser.add_argument("--rows", type=int, default=20_000, help="question items in the collection")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300, help="single-query searches per path")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from docarray import Document, DocumentArray
    from jina import Client

    from qbank.config import IndexerSettings
    from qbank.domain.schema import item_row
    from qbank.service.flow import free_ports, running_flow
    from qbank.store import ItemStore
    from qbank_client.transport import GrpcTransport
    from qbank_devtools.tiny_clip import build_tiny_clip

    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.rows, size=args.queries + args.warmup, replace=False)]
    work = Path(tempfile.mkdtemp(prefix="qbank-bench-flowcost-"))
    model = build_tiny_clip(work / "tiny-chinese-clip", "chinese_clip")  # passes vectors on, encodes nothing

    server = None
    if args.milvus == "server":
        from qbank_devtools.milvus_server import StandaloneMilvus

        server = StandaloneMilvus(work / "milvus", free_ports(1)[0])
        server.start()
    try:
        where = {"milvus_uri": server.uri} if server else {"data_dir": str(work / "data")}
        store = ItemStore(IndexerSettings.resolve(model=str(model), **where))
        store.check_vectors(Path(model).name, args.dim, create=True)
        for start in range(0, args.rows, 1000):
            store.upsert(
                [
                    item_row(f"b{i}:text:0", vectors[i].tolist(), question_id=f"b{i}", text=f"题{i}")
                    for i in range(start, min(start + 1000, args.rows))
                ]
            )
        version = store.describe().get("milvus_version", "?")
        if server is None:
            store.close()  # Milvus Lite: one process per file, the Flow's indexer takes it over
        print(
            f"{args.rows:,} items x {args.dim} on Milvus {version} ({args.milvus}); limit 10, dense, one query a call"
        )

        with running_flow(REPO / "flow.yml", model=model, **where) as urls:
            direct_store = store if server else None
            kept = GrpcTransport("127.0.0.1", int(urls["grpc"].rsplit(":", 1)[1]), tls=False)  # QbankClient's
            jina_client = Client(host=urls["grpc"])

            def flow_kept(q: np.ndarray):
                response = kept.post("/search", DocumentArray([Document(embedding=q)]), {"limit": 10})
                assert len(response.docs[0].matches) == 10  # read like QbankClient reads it
                return response

            def flow_jina(q: np.ndarray):
                response = jina_client.post(
                    "/search", DocumentArray([Document(embedding=q)]), parameters={"limit": 10}, return_responses=True
                )[0]
                assert len(response.docs[0].matches) == 10
                return response

            def direct(q: np.ndarray):
                return direct_store.search([q.tolist()], 10, "", None)

            paths = {"flow (QbankClient)": flow_kept, "flow (jina Client)": flow_jina}
            if direct_store is not None:
                paths = {"direct (store layer)": direct, **paths}
            latencies: dict[str, list[float]] = {name: [] for name in paths}
            routes: list[dict[str, float]] = []
            order = list(paths)
            for n, q in enumerate(queries):
                order = order[1:] + order[:1]  # each path goes first in turn
                for name in order:
                    started = time.perf_counter()
                    result = paths[name](q)
                    elapsed = (time.perf_counter() - started) * 1000
                    if n >= args.warmup:
                        latencies[name].append(elapsed)
                        if name == "flow (QbankClient)":
                            routes.append({"client": elapsed, **spans(result)})
            kept.close()
        if server is not None:
            store.close()
    finally:
        if server is not None:
            server.stop()

    print(f"\n{'path':<24}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in latencies.items():
        print(f"{name:<24}{percentile(values, 50):>9.2f}{percentile(values, 99):>9.2f}")
    if "direct (store layer)" in latencies:
        base = latencies["direct (store layer)"]
        for name in paths:
            if name.startswith("flow"):
                diff = [f - d for f, d in zip(latencies[name], base, strict=True)]
                print(
                    f"{name} minus direct: p50 {percentile(latencies[name], 50) - percentile(base, 50):.2f} ms, "
                    f"p99 {percentile(latencies[name], 99) - percentile(base, 99):.2f} ms "
                    f"(per-query difference: p50 {percentile(diff, 50):.2f}, p99 {percentile(diff, 99):.2f} ms)"
                )
    names = sorted({k for r in routes for k in r}, key=lambda k: -statistics.median(r.get(k, 0) for r in routes))
    print("\nwhere a QbankClient search goes (medians, ms; each executor's span as the gateway saw it):")
    for name in names:
        print(f"  {name:<12}{statistics.median(r.get(name, 0.0) for r in routes):>8.2f}")
    executors = [n for n in names if n not in ("client", "gateway")]
    print(
        f"  client minus gateway (transport, (de)serialising at the client): "
        f"{statistics.median(r['client'] - r.get('gateway', 0.0) for r in routes):.2f}"
    )
    print(
        f"  gateway minus its executors (the gateway's own work): "
        f"{statistics.median(r.get('gateway', 0.0) - sum(r.get(e, 0.0) for e in executors) for r in routes):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
