"""One Milvus Lite line measured on random normalised vectors; prints one JSON line.

Run by bench/search.py, in this project's venv (milvus-lite 2.5.1 + pymilvus 2.5.18) and in a
side venv for the other line (milvus-lite 3.2.2 + pymilvus 3.0.x). Needs only numpy and pymilvus,
so the same file runs in both. The same seed gives both lines the same data and queries.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def normalised(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    data = rng.standard_normal((n, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground truth by brute force (inner product of normalised vectors = cosine), in chunks."""
    out = []
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(top, order, axis=1))
    return np.vstack(out)


def main() -> int:
    # qbank_devtools.signals.exit_on_sigterm, inline: this file also runs in a side venv without qbank.
    # SystemExit runs Milvus Lite's exit hooks, which stop the Lite server process it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="queries per search call in the batch test")
    parser.add_argument("--single", type=int, default=200, help="one-query calls in the single test")
    parser.add_argument("--index", default="AUTOINDEX")
    parser.add_argument("--insert-batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--folder", default="")
    args = parser.parse_args()

    import pymilvus
    from pymilvus import DataType, MilvusClient

    try:
        from importlib.metadata import version

        lite = version("milvus-lite")
    except Exception:
        lite = "?"
    rng = np.random.default_rng(args.seed)
    vectors = normalised(rng, args.rows, args.dim)
    queries = normalised(rng, args.queries, args.dim)
    truth = exact_top_k(vectors, queries, 10)

    folder = Path(args.folder or tempfile.mkdtemp(prefix="qbank-bench-search-"))
    client = MilvusClient(str(folder / f"bench-{lite}.db"))
    name = "bench"
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=args.dim)
    index = MilvusClient.prepare_index_params()
    params = {"nlist": 1024} if args.index.startswith("IVF") else {}
    index.add_index("embedding", index_type=args.index, metric_type="COSINE", params=params)
    client.create_collection(name, schema=schema, index_params=index)

    started = time.perf_counter()
    for start in range(0, args.rows, args.insert_batch):
        chunk = vectors[start : start + args.insert_batch]
        client.insert(name, [{"id": start + i, "embedding": v.tolist()} for i, v in enumerate(chunk)])
    insert_seconds = time.perf_counter() - started

    # Index build + load: until the first search answers on everything inserted.
    started = time.perf_counter()
    if hasattr(client, "flush"):
        client.flush(name)
    client.load_collection(name)
    search_params = {"metric_type": "COSINE", "params": {"nprobe": 32} if args.index.startswith("IVF") else {}}
    client.search(name, data=[queries[0].tolist()], limit=10, search_params=search_params)
    ready_seconds = time.perf_counter() - started

    found = []
    started = time.perf_counter()
    for start in range(0, args.queries, args.batch):
        chunk = queries[start : start + args.batch]
        hits = client.search(name, data=chunk.tolist(), limit=10, search_params=search_params)
        found.extend([h["id"] for h in row] for row in hits)
    batch_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for q in queries[: args.single]:
        client.search(name, data=[q.tolist()], limit=10, search_params=search_params)
    single_seconds = time.perf_counter() - started

    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
    client.close()
    print(
        json.dumps(
            {
                "milvus_lite": lite,
                "pymilvus": pymilvus.__version__,
                "index": args.index,
                "rows": args.rows,
                "insert_rows_per_s": round(args.rows / insert_seconds, 1),
                "ready_s": round(ready_seconds, 2),
                "batch_qps": round(args.queries / batch_seconds, 1),
                "single_qps": round(args.single / single_seconds, 1),
                "recall_at_10": round(recall, 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
