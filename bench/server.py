"""Vector indexes on a real Milvus server, side by side: what a server gives past Milvus Lite.

Starts the Milvus 2.3.5 standalone of the dev extra (qbank_devtools.milvus_server) in a temp folder,
inserts the same vectors once, then builds each index in turn on them (AUTOINDEX as the server
chooses it, HNSW, IVF_FLAT, IVF_SQ8;
DISKANN on request: this build never finishes one) and measures, per index and search setting: build time, batch and
single-query QPS, recall@10 against exact search (numpy), and the server's RSS. Milvus Lite 2.5 with
FLAT (exact; the embedded default) on the same data is the baseline.

Data: a clustered distribution beside uniform random unit vectors. Uniform random vectors are the
worst case for graph and cluster indexes (every point is about as far from every other), which real
CLIP embeddings are not: questions of one topic and their variants lie close together. The
clustered set is a Gaussian mixture on the sphere: ``rows / 1000`` centres drawn uniformly, each
point a centre plus isotropic noise, normalised, with the noise set so that a point's cosine to its
centre is about 0.8 (noise variance 0.5625 / dim: cos = 1 / sqrt(1 + dim * var)), about what CLIP
gives between a stem and its rewordings. Queries are fresh draws from the same distribution.

    .venv/bin/python bench/server.py --rows 200000                 # minutes
    .venv/bin/python bench/server.py --rows 1000000 --data clustered  # the issue's size: an hour here
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_worker import exact_top_k, normalised  # noqa: E402

INDEXES = {  # build params, then the search settings tried (name, value; None: the server's default)
    "AUTOINDEX": ({}, [("default", None)]),
    "HNSW": ({"M": 16, "efConstruction": 200}, [("ef", 32), ("ef", 64), ("ef", 128)]),
    "IVF_FLAT": ({"nlist": 1024}, [("nprobe", 8), ("nprobe", 32), ("nprobe", 64)]),
    "IVF_SQ8": ({"nlist": 1024}, [("nprobe", 8), ("nprobe", 32), ("nprobe", 64)]),
    # 64 sub-vectors of 8 bits: 64 bytes a 512-d vector (1/32 of float32), the smallest of these
    "IVF_PQ": ({"nlist": 1024, "m": 64, "nbits": 8}, [("nprobe", 8), ("nprobe", 32), ("nprobe", 64)]),
    "DISKANN": ({}, [("search_list", 20), ("search_list", 50), ("search_list", 100)]),
}
# DISKANN is not run by default: the 2.3.5 standalone accepts it and then indexes nothing (state
# InProgress, 0 of 200,000 rows after 5 minutes). `--indexes DISKANN --build-timeout 600` shows it.
DEFAULT_INDEXES = "AUTOINDEX,HNSW,IVF_FLAT,IVF_SQ8"


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, cosine: float = 0.8) -> np.ndarray:
    """Points around ``centres`` with an expected cosine of ``cosine`` to their centre."""
    variance = (1.0 / cosine**2 - 1.0) / dim
    labels = rng.integers(len(centres), size=n)
    # In chunks (the generator fills them in the same order as one draw): at 3M x 512 the whole
    # draw at once held three 6 GB arrays.
    points = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 250_000):
        chunk = slice(start, min(n, start + 250_000))
        noise = rng.standard_normal((chunk.stop - chunk.start, dim), dtype=np.float32)
        block = centres[labels[chunk]] + np.sqrt(variance) * noise
        points[chunk] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return points


def dataset(kind: str, rows: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return normalised(rng, rows, dim), normalised(rng, queries, dim)
    centres = normalised(rng, max(1, rows // 1000), dim)
    return clustered(rng, rows, dim, centres), clustered(rng, queries, dim, centres)


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(client, name: str, queries: np.ndarray, truth: np.ndarray, params: dict, args) -> dict:
    """Batch QPS (recall from these), then single-query QPS; medians of ``args.rounds`` rounds."""
    search_params = {"metric_type": "COSINE", "params": params}
    consistency = {"consistency_level": args.consistency}
    batch_qps, single_qps, found = [], [], []
    for _ in range(args.rounds):
        found = []
        started = time.perf_counter()
        for start in range(0, len(queries), args.batch):
            hits = client.search(
                name,
                data=queries[start : start + args.batch].tolist(),
                limit=10,
                search_params=search_params,
                **consistency,
            )
            found.extend([h["id"] for h in row] for row in hits)
        batch_qps.append(len(queries) / (time.perf_counter() - started))
        started = time.perf_counter()
        for q in queries[: args.single]:
            client.search(name, data=[q.tolist()], limit=10, search_params=search_params, **consistency)
        single_qps.append(args.single / (time.perf_counter() - started))
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
    return {"batch_qps": statistics.median(batch_qps), "single_qps": statistics.median(single_qps), "recall": recall}


def consistency_cost(client, name: str, queries: np.ndarray, setting: tuple[str, int], args) -> None:
    """Single-query latency at each consistency level, alternating levels, medians: what Strong
    costs on a server (a search waits for the next time tick, 200 ms apart in this build's config)."""
    latencies: dict[str, list[float]] = {}
    search_params = {"metric_type": "COSINE", "params": {} if setting[1] is None else {setting[0]: setting[1]}}
    for q in queries[:60]:
        for level in ("Strong", "Session", "Bounded"):
            started = time.perf_counter()
            client.search(name, data=[q.tolist()], limit=10, search_params=search_params, consistency_level=level)
            latencies.setdefault(level, []).append((time.perf_counter() - started) * 1000)
    print(
        "  single-query p50 by consistency level: "
        + ", ".join(f"{level} {statistics.median(values):.1f} ms" for level, values in latencies.items()),
        flush=True,
    )


def insert_all(client, name: str, vectors: np.ndarray, batch: int = 1000) -> float:
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        chunk = vectors[start : start + batch]
        client.insert(name, [{"id": start + i, "embedding": v.tolist()} for i, v in enumerate(chunk)])
    return len(vectors) / (time.perf_counter() - started)


def compact_and_wait(client, name: str, timeout: float) -> float:
    """Merge the flushed segments before any index is built, so that no compaction replaces indexed
    segments with unindexed ones while an index is measured (seen at 1M: recall 1.000 at ~100 ms a
    query, brute force, after create_index had returned)."""
    started = time.perf_counter()
    job = client.compact(name)
    while client.get_compaction_state(job) != "Completed":
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"compaction of {name} still running after {timeout:.0f} s")
        time.sleep(2)
    return time.perf_counter() - started


def wait_until_indexed(client, name: str, timeout: float) -> dict:
    """create_index returns when the segments it saw are indexed; wait until the server says every
    row is (indexed_rows == total_rows, nothing pending), printing progress for long builds."""
    started = last_print = time.perf_counter()
    index_name = client.list_indexes(name)[0]
    while True:
        info = client.describe_index(name, index_name)
        if info["indexed_rows"] >= info["total_rows"] and info["pending_index_rows"] == 0:
            return info
        now = time.perf_counter()
        if now - started > timeout:
            raise TimeoutError(f"index {index_name} of {name} not finished after {timeout:.0f} s: {info}")
        if now - last_print > 60:
            print(
                f"    indexing: {info['indexed_rows']:,} of {info['total_rows']:,} rows, "
                f"{info['pending_index_rows']:,} pending, {info['state']}",
                flush=True,
            )
            last_print = now
        time.sleep(2)


def create(client, name: str, dim: int, index_type: str, params: dict) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    index = MilvusClient.prepare_index_params()
    index.add_index("embedding", index_type=index_type, metric_type="COSINE", params=params)
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def server_rows(args, kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[tuple]:
    from pymilvus import MilvusClient

    from qbank.service.flow import free_ports
    from qbank_devtools.milvus_server import StandaloneMilvus

    out = []
    with tempfile.TemporaryDirectory(prefix="qbank-bench-server-") as tmp:
        with StandaloneMilvus(Path(tmp), free_ports(1)[0], args.milvus_settings) as server:
            client = MilvusClient(server.uri, timeout=3600)
            version = client.get_server_version()
            name = f"bench_{kind}"
            first = next(iter(args.indexes))
            create(client, name, args.dim, first, INDEXES[first][0])
            client.release_collection(name)
            rate = insert_all(client, name, vectors)
            client.flush(name)
            compacted = compact_and_wait(client, name, args.build_timeout)
            print(
                f"  [{kind}] Milvus {version}: inserted {len(vectors):,} at {rate:,.0f} rows/s, "
                f"compacted in {compacted:.0f} s",
                flush=True,
            )
            for index_type in args.indexes:
                build_params, settings = INDEXES[index_type]
                try:
                    client.release_collection(name)
                    client.drop_index(name, "embedding")
                    index = client.prepare_index_params()
                    index.add_index("embedding", index_type=index_type, metric_type="COSINE", params=build_params)
                    started = time.perf_counter()
                    client.create_index(name, index, timeout=args.build_timeout)
                    wait_until_indexed(client, name, args.build_timeout)
                    built = time.perf_counter() - started
                    client.load_collection(name)
                except Exception as exc:  # a build without this index type says so; the others go on
                    print(f"  [{kind}] {index_type}: not available here ({str(exc)[:160]})", flush=True)
                    continue
                memory = rss_mb(server.pid)
                print(f"  [{kind}] {index_type} loaded: server RSS {memory:,.0f} MB", flush=True)
                if index_type == args.indexes[0]:
                    consistency_cost(client, name, queries, INDEXES[index_type][1][0], args)
                for key, value in settings:
                    got = measure(client, name, queries, truth, {} if value is None else {key: value}, args)
                    out.append((kind, index_type, f"{key}={value}", built, got, memory, rate))
                    print(
                        f"  [{kind}] {index_type} {key}={value}: build {built:.0f} s, recall@10 {got['recall']:.3f}, "
                        f"single {got['single_qps']:.0f} QPS, batch {got['batch_qps']:.0f} QPS, RSS {memory:,.0f} MB",
                        flush=True,
                    )
            client.close()
    return out


def lite_row(args, kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> tuple:
    from pymilvus import MilvusClient

    with tempfile.TemporaryDirectory(prefix="qbank-bench-lite-") as tmp:
        client = MilvusClient(str(Path(tmp) / "lite.db"))
        create(client, "bench", args.dim, "FLAT", {})
        rate = insert_all(client, "bench", vectors)
        single = max(10, args.single // 10)  # exact search is slow: fewer single queries
        got = measure(client, "bench", queries, truth, {}, argparse.Namespace(**{**vars(args), "single": single}))
        client.close()
    return (kind, "Lite FLAT", "exact", 0.0, got, float("nan"), rate)


def add_milvus_set(parser: argparse.ArgumentParser) -> None:
    """``--milvus-set KEY=VALUE``, repeatable: milvus.yaml entries for the standalone."""
    parser.add_argument(
        "--milvus-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a milvus.yaml entry for the standalone, e.g. dataCoord.compaction.enableAutoCompaction=false "
        "(at 3M, compaction re-indexed 2.7M rows after the first build had finished)",
    )


def milvus_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The ``--milvus-set`` entries by key; an entry without ``=`` is a usage error naming it."""
    settings = {}
    for entry in args.milvus_set:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            parser.error(
                f"--milvus-set {entry!r}: expected KEY=VALUE, e.g. dataCoord.compaction.enableAutoCompaction=false"
            )
        settings[key] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=200, help="queries per call in the batch test")
    parser.add_argument("--single", type=int, default=300, help="one-query calls in the single test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="clustered,uniform")
    parser.add_argument("--indexes", default=DEFAULT_INDEXES)
    parser.add_argument("--no-lite", action="store_true", help="skip the Milvus Lite FLAT baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--build-timeout", type=float, default=3600, help="seconds an index build may take")
    parser.add_argument(
        "--consistency", default="Bounded", help="consistency level of the measured searches (Milvus' default)"
    )
    add_milvus_set(parser)
    args = parser.parse_args(argv)
    args.milvus_settings = milvus_settings(parser, args)
    args.indexes = [name for name in args.indexes.split(",") if name]
    rows = []
    for kind in args.data.split(","):
        vectors, queries = dataset(kind, args.rows, args.queries, args.dim, args.seed)
        truth = exact_top_k(vectors, queries, 10)
        print(f"{kind}: {args.rows:,} x {args.dim}, {args.queries} queries", flush=True)
        rows += server_rows(args, kind, vectors, queries, truth)
        if not args.no_lite:
            rows.append(lite_row(args, kind, vectors, queries, truth))
    print(f"\n{args.rows:,} x {args.dim} vectors, limit 10, medians of {args.rounds} rounds, 2-core machine")
    print(
        f"{'data':<10}{'index':<10}{'search':<16}{'build s':>8}{'recall@10':>10}{'single QPS':>11}{'batch QPS':>10}{'RSS MB':>8}"
    )
    for kind, index_type, setting, built, got, memory, _ in rows:
        print(
            f"{kind:<10}{index_type:<10}{setting:<16}{built:>8.0f}{got['recall']:>10.3f}"
            f"{got['single_qps']:>11.0f}{got['batch_qps']:>10.0f}{memory:>8,.0f}"
        )
    inserts = {(r[0], r[1] == "Lite FLAT"): r[6] for r in rows}
    for (kind, lite), rate in sorted(inserts.items()):
        print(f"insert rate, {kind}, {'Milvus Lite' if lite else 'server'}: {rate:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
