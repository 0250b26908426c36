"""Searches within one subject on a Milvus server: a partition key on the subject against a plain
filter on it, side by side on the same vectors (issue 31: a bank is searched by subject far more
than as a whole).

The Milvus 2.3.5 standalone of the dev extra; clustered 512-d vectors as bench/server.py draws
them, each mixture centre given one of ten subjects, so a subject's questions lie together as
real subjects do. Two collections hold the same rows: ``plain`` (subject a VARCHAR field, searched
with ``filter='subject == "s3"'``) and ``keyed`` (the same field declared ``is_partition_key``, 16
partitions, Milvus' default, so the same filter prunes the partitions searched). Each query is a
fresh draw searched within its own centre's subject; recall@10 against exact search among that
subject's rows. Single-query latency (p50, p99) and QPS, collections alternating over the rounds,
medians. ``--sweep nprobe=8,16,32,64`` searches both collections at each value, so they can be
compared at equal recall (the keyed collection's smaller segments find less at the same nprobe);
the last lines print, for each of the plain collection's recalls, the keyed collection's p50 at the
first setting that reaches it.

``--upsert-probe`` only checks what blocks the partition key as qbank's default: rows written by
upsert (as the store writes) and by insert (as this bench does) into a keyed collection, counted
with and without a subject filter.

    .venv/bin/python bench/partitions.py --rows 1000000 --sweep nprobe=8,16,32,64
    .venv/bin/python bench/partitions.py --rows 3000000 --sweep nprobe=8,16 \\
        --milvus-set dataCoord.compaction.enableAutoCompaction=false
    .venv/bin/python bench/partitions.py --upsert-probe
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from search_worker import normalised  # noqa: E402
from server import INDEXES, add_milvus_set, compact_and_wait, milvus_settings, rss_mb, wait_until_indexed  # noqa: E402

SUBJECTS = 10


def dataset(rows: int, queries: int, dim: int, seed: int):
    """(vectors, their subjects, queries, their subjects): bench/server.py's mixture, subject = centre % 10."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng, max(SUBJECTS, rows // 1000), dim)
    variance = (1.0 / 0.8**2 - 1.0) / dim

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(len(centres), size=n)
        points = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 250_000):
            chunk = slice(start, min(n, start + 250_000))
            block = centres[labels[chunk]] + np.sqrt(variance) * rng.standard_normal(
                (chunk.stop - chunk.start, dim), dtype=np.float32
            )
            points[chunk] = block / np.linalg.norm(block, axis=1, keepdims=True)
        return points, labels % SUBJECTS

    vectors, subjects = draw(rows)
    query_vectors, query_subjects = draw(queries)
    return vectors, subjects, query_vectors, query_subjects


def truth_within_subject(vectors, subjects, queries, query_subjects, k: int = 10) -> list[set[int]]:
    found = []
    for subject in range(SUBJECTS):
        rows = np.flatnonzero(subjects == subject)
        picked = np.flatnonzero(query_subjects == subject)
        if not len(picked):
            continue
        scores = queries[picked] @ vectors[rows].T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        found += [(int(q), {int(rows[j]) for j in row}) for q, row in zip(picked, top, strict=True)]
    return [ids for _, ids in sorted(found)]


def create(client, name: str, dim: int, index_type: str, params: dict, keyed: bool) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("subject", DataType.VARCHAR, max_length=16, is_partition_key=keyed)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    index = MilvusClient.prepare_index_params()
    index.add_index("embedding", index_type=index_type, metric_type="COSINE", params=params)
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Bounded")


def insert_all(client, name: str, vectors: np.ndarray, subjects: np.ndarray, batch: int = 1000) -> float:
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        client.insert(
            name,
            [
                {"id": start + i, "subject": f"s{subjects[start + i]}", "embedding": v.tolist()}
                for i, v in enumerate(vectors[start : start + batch])
            ],
        )
    return len(vectors) / (time.perf_counter() - started)


def measure(client, params: dict, queries, query_subjects, truth, rounds: int, number: int) -> dict:  # noqa: ANN001
    """{(collection, number): (recall@10, sorted latencies)} of single-query searches within each
    query's subject at ``params``, the two collections alternating over ``rounds``."""
    latencies: dict[str, list[float]] = {"plain": [], "keyed": []}
    recalls: dict[str, float] = {}
    search_params = {"metric_type": "COSINE", "params": params}
    for round_number in range(rounds):
        order = ("plain", "keyed") if round_number % 2 == 0 else ("keyed", "plain")
        for name in order:
            found = []
            for q, subject in zip(queries, query_subjects, strict=True):
                started = time.perf_counter()
                hits = client.search(
                    name, data=[q.tolist()], limit=10, filter=f'subject == "s{subject}"', search_params=search_params
                )
                latencies[name].append(time.perf_counter() - started)
                found.append({h["id"] for h in hits[0]})
            recalls[name] = float(np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)]))
    return {(name, number): (recalls[name], sorted(latencies[name])) for name in latencies}


def upsert_probe(client) -> None:  # noqa: ANN001 - a MilvusClient
    """Rows upserted and inserted into a collection partitioned by subject, counted with a filter."""
    from pymilvus import DataType, MilvusClient

    for subjects in (("数学", "物理"), ("math", "physics")):
        for write in ("upsert", "insert"):
            name = f"probe_{write}_{subjects[0].isascii()}"
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
            schema.add_field("subject", DataType.VARCHAR, max_length=64, is_partition_key=True)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
            index = MilvusClient.prepare_index_params()
            index.add_index(
                "embedding", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 64}
            )
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
            rows = [{"id": f"r{i}", "subject": subjects[i % 2], "embedding": [1.0, i, 0.5, 0.1]} for i in range(20)]
            getattr(client, write)(name, rows)
            client.flush(name)

            counted = {
                expr: client.query(name, filter=expr, output_fields=["count(*)"], consistency_level="Strong")[0][
                    "count(*)"
                ]
                for expr in ("", f'subject == "{subjects[0]}"')
            }
            everything, filtered = counted.values()
            print(
                f"  {write} of 20 rows, subjects {subjects}: counted {everything}, "
                f'with subject == "{subjects[0]}" {filtered} (10 written)',
                flush=True,
            )


def main() -> int:
    from pymilvus import MilvusClient

    from qbank.service.flow import free_ports
    from qbank_devtools.milvus_server import StandaloneMilvus
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index", default="IVF_SQ8", choices=sorted(INDEXES))
    parser.add_argument(
        "--search", default="", help='search params as JSON (default: the bench/server.py first, e.g. {"nprobe": 8})'
    )
    parser.add_argument(
        "--sweep", default="", help="KEY=V1,V2,...: search both collections at each value (e.g. nprobe=8,16,32,64)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--upsert-probe", action="store_true", help="only count upserted and inserted rows by subject")
    add_milvus_set(parser)
    args = parser.parse_args()
    server_settings = milvus_settings(parser, args)
    if args.upsert_probe:
        with tempfile.TemporaryDirectory(prefix="qbank-bench-partitions-") as tmp:
            with StandaloneMilvus(Path(tmp), free_ports(1)[0], server_settings) as server:
                client = MilvusClient(server.uri)
                print(f"Milvus {client.get_server_version()}, a collection partitioned by subject:")
                upsert_probe(client)
                client.close()
        return 0
    build, settings = INDEXES[args.index]
    key, value = settings[0]
    search = json.loads(args.search) if args.search else ({} if value is None else {key: value})
    if args.sweep:
        sweep_key, _, values = args.sweep.partition("=")
        searches = [{**search, sweep_key: int(v)} for v in values.split(",")]
    else:
        searches = [search]

    vectors, subjects, queries, query_subjects = dataset(args.rows, args.queries, args.dim, args.seed)
    truth = truth_within_subject(vectors, subjects, queries, query_subjects)
    print(f"{args.rows:,} x {args.dim}, {SUBJECTS} subjects, {args.queries} queries within their subject", flush=True)
    with tempfile.TemporaryDirectory(prefix="qbank-bench-partitions-") as tmp:
        with StandaloneMilvus(Path(tmp), free_ports(1)[0], server_settings) as server:
            client = MilvusClient(server.uri, timeout=3600)
            built = {}
            for name in ("plain", "keyed"):
                create(client, name, args.dim, args.index, build, keyed=name == "keyed")
                client.release_collection(name)
                rate = insert_all(client, name, vectors, subjects)
                client.flush(name)
                compact_and_wait(client, name, 3600)
                started = time.perf_counter()
                wait_until_indexed(client, name, 3600)
                built[name] = (rate, time.perf_counter() - started)
                print(f"  {name}: inserted at {rate:,.0f} rows/s, indexed {built[name][1]:.0f} s after", flush=True)
            for name in ("plain", "keyed"):
                client.load_collection(name)
            print(f"  both loaded: server RSS {rss_mb(server.pid):,.0f} MB", flush=True)
            measured = {}  # (collection, setting index) -> (recall, latencies)
            for number, params in enumerate(searches):
                measured.update(measure(client, params, queries, query_subjects, truth, args.rounds, number))
                print(f"  searched at {json.dumps(params)}", flush=True)
            client.close()
    print(f"\n{args.index} {json.dumps(build)}, {args.rows:,} rows, one subject of {SUBJECTS}")
    print(f"{'search':<18}{'collection':<12}{'recall@10':>10}{'p50 ms':>9}{'p99 ms':>9}{'QPS':>8}")
    for number, params in enumerate(searches):
        for name in ("plain", "keyed"):
            recall, times = measured[name, number]
            print(
                f"{json.dumps(params):<18}{name:<12}{recall:>10.3f}{statistics.median(times) * 1000:>9.1f}"
                f"{times[int(0.99 * (len(times) - 1))] * 1000:>9.1f}{len(times) / sum(times):>8.0f}"
            )
        plain, keyed = measured["plain", number][1], measured["keyed", number][1]
        print(f"{'':<18}keyed/plain p50 at the same setting: {statistics.median(keyed) / statistics.median(plain):.2f}")
    print("\nat equal recall (the keyed collection's first setting that finds as much as the plain one):")
    for number, params in enumerate(searches):
        recall, times = measured["plain", number]
        reaching = [n for n in range(len(searches)) if measured["keyed", n][0] >= recall - 0.002]
        if not reaching:
            print(f"  plain {json.dumps(params)} recall {recall:.3f}: no keyed setting tried reaches it")
            continue
        keyed_recall, keyed_times = measured["keyed", reaching[0]]
        print(
            f"  plain {json.dumps(params)} recall {recall:.3f}, p50 {statistics.median(times) * 1000:.1f} ms; "
            f"keyed {json.dumps(searches[reaching[0]])} recall {keyed_recall:.3f}, "
            f"p50 {statistics.median(keyed_times) * 1000:.1f} ms: "
            f"keyed/plain {statistics.median(keyed_times) / statistics.median(times):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
