"""Search benchmark: the two Milvus Lite lines side by side, and the Flow's /search against pymilvus.

    .venv/bin/python bench/search.py                      # 100k x 512, both Lite lines, Flow vs direct
    .venv/bin/python bench/search.py --rows 1000000       # 1M (opt-in: minutes and ~4 GB)
    .venv/bin/python bench/search.py --lines 2.5 --no-flow --rows 20000   # quick

Part 1 runs bench/search_worker.py once per line: milvus-lite 2.5.1 + pymilvus 2.5.18 (this venv)
and milvus-lite 3.2.2 + pymilvus 3.0.2 (a side venv, bench/.venv-lite32, made on first use from
the package registry). Same seed, same vectors and queries: insert rate, time until the index
answers, QPS for batches of queries and for single queries, recall@10 against exact numpy search.

Part 2 (Lite 2.5) indexes the same vectors as question items through the Flow (/index over gRPC,
vectors precomputed, so the encoder only passes them on) and through the store layer directly
(pymilvus MilvusClient, same schema, same output fields), then compares /search with direct search,
sent two ways: jina's Client (a new channel per call, what clip_client does) and QbankClient (one
kept channel).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIDE_VENV = HERE / ".venv-lite32"
SIDE_PACKAGES = ["numpy", "pymilvus==3.0.2", "milvus-lite==3.2.2"]


def side_python() -> Path:
    """The venv of the other Lite line, created once (registry access needed the first time)."""
    python = SIDE_VENV / "bin" / "python"
    if not python.exists():
        print(f"[bench] creating {SIDE_VENV} with {' '.join(SIDE_PACKAGES)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(SIDE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *SIDE_PACKAGES], check=True)
    return python


def run_line(python: Path, args: argparse.Namespace, index: str) -> dict:
    command = [
        str(python),
        str(HERE / "search_worker.py"),
        f"--rows={args.rows}",
        f"--dim={args.dim}",
        f"--queries={args.queries}",
        f"--batch={args.batch}",
        f"--single={args.single}",
        f"--index={index}",
        f"--seed={args.seed}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_lines(args: argparse.Namespace) -> None:
    pythons = {"2.5": Path(sys.executable)}
    if "3.2" in args.lines:
        pythons["3.2"] = side_python()
    print(f"\nPart 1: Milvus Lite lines, {args.rows:,} x {args.dim} random normalised vectors, COSINE, limit 10")
    header = f"{'line':<24} {'index':<10} {'insert/s':>10} {'ready s':>8} {'batch QPS':>10} {'single QPS':>11} {'recall@10':>10}"
    print(header + "\n" + "-" * len(header))
    results = {}
    for line in args.lines:
        for index in args.indexes:
            r = run_line(pythons[line], args, index)
            results[(line, index)] = r
            if "error" in r:
                print(f"{line:<24} {index:<10} error: {r['error'][:80]}")
                continue
            label = f"lite {r['milvus_lite']} / py {r['pymilvus']}"
            print(
                f"{label:<24} {index:<10} {r['insert_rows_per_s']:>10,.0f} {r['ready_s']:>8.1f} "
                f"{r['batch_qps']:>10,.0f} {r['single_qps']:>11,.1f} {r['recall_at_10']:>10.3f}"
            )
    if "3.2" in args.lines and "2.5" in args.lines:
        for index in args.indexes:
            a, b = results.get(("2.5", index), {}), results.get(("3.2", index), {})
            if "batch_qps" in a and "batch_qps" in b:
                print(
                    f"ratio 2.5/3.2 ({index}): insert {a['insert_rows_per_s'] / b['insert_rows_per_s']:.2f}  "
                    f"batch QPS {a['batch_qps'] / b['batch_qps']:.2f}  single QPS {a['single_qps'] / b['single_qps']:.2f}"
                )


def part_flow(args: argparse.Namespace) -> None:
    from docarray import Document, DocumentArray
    from jina import Client

    from qbank.config import IndexerSettings
    from qbank.domain.schema import item_row
    from qbank.service.flow import running_flow
    from qbank.store import ItemStore
    from qbank_client import QbankClient
    from qbank_devtools.tiny_clip import build_tiny_clip

    rows, dim = args.flow_rows, args.dim
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((rows, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(rows, size=args.queries, replace=False)]
    subjects = ["数学", "物理", "化学"]
    work = Path(tempfile.mkdtemp(prefix="qbank-bench-flow-"))
    model = build_tiny_clip(work / "tiny-chinese-clip", "chinese_clip")  # passes vectors on, encodes nothing

    def item(i: int) -> dict:
        return item_row(
            f"b{i}:text:0", vectors[i].tolist(), question_id=f"b{i}", text=f"题{i}", subject=subjects[i % 3]
        )

    print(f"\nPart 2: the Flow's /search vs direct pymilvus, {rows:,} items x {dim}, Milvus Lite 2.5, limit 10")
    store = ItemStore(IndexerSettings.resolve(data_dir=str(work / "direct"), model=str(model)))
    store.check_vectors(Path(model).name, dim, create=True)
    started = time.perf_counter()
    for start in range(0, rows, 1000):
        store.upsert([item(i) for i in range(start, min(start + 1000, rows))])
    direct_insert = rows / (time.perf_counter() - started)
    store.search([queries[0].tolist()], 10)

    def in_batches(send) -> None:
        for start in range(0, len(queries), args.batch):
            send(queries[start : start + args.batch])

    def one_by_one(send) -> None:
        for q in queries[: args.single]:
            send([q])

    def query_docs(chunk: np.ndarray) -> DocumentArray:
        return DocumentArray([Document(embedding=q) for q in chunk])

    os.environ["JINA_LOG_LEVEL"] = "ERROR"
    with running_flow(REPO / "flow.yml", model=model, data_dir=work / "flow") as urls:
        grpc_port = int(urls["grpc"].rsplit(":", 1)[1])
        client = Client(host="127.0.0.1", port=grpc_port, protocol="grpc")
        started = time.perf_counter()
        for start in range(0, rows, 500):
            docs = DocumentArray()
            for i in range(start, min(start + 500, rows)):
                row = item(i)
                docs.append(
                    Document(
                        id=row["id"],
                        embedding=vectors[i],
                        tags={"question_id": row["question_id"], "subject": row["subject"]},
                    )
                )
            client.post("/index", docs, request_size=500)
        flow_insert = rows / (time.perf_counter() - started)
        client.post("/search", DocumentArray([Document(embedding=queries[0])]), parameters={"limit": 10})

        kept = QbankClient(urls["grpc"])  # one kept channel, unary calls
        senders = {
            "direct": lambda qs: store.search(qs, 10),
            "flow": lambda qs: client.post("/search", query_docs(qs), parameters={"limit": 10}, request_size=len(qs)),
            "kept": lambda qs: kept.post("/search", query_docs(qs), {"limit": 10}),
        }

        # Rounds alternate the paths and the medians are kept: on 2 cores one pass swings with
        # whatever the two Milvus Lite servers do in the background (seen: direct batch 46 to 79 QPS).
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for kind, run, count in (("batch", in_batches, len(queries)), ("single", one_by_one, args.single)):
                for path, send in senders.items():
                    started = time.perf_counter()
                    run(send)
                    samples.setdefault(f"{path} {kind}", []).append(count / (time.perf_counter() - started))
        figures = {name: statistics.median(values) for name, values in samples.items()}
        kept.close()
    store.close()
    print(f"{'path':<34} {'insert items/s':>15} {'batch QPS':>10} {'single QPS':>11}")
    for label, key, insert in (
        ("direct (store layer)", "direct", f"{direct_insert:>15,.0f}"),
        ("Flow, jina Client (as clip_client)", "flow", f"{flow_insert:>15,.0f}"),
        ("Flow, QbankClient (kept channel)", "kept", f"{'':>15}"),
    ):
        print(f"{label:<34} {insert} {figures[key + ' batch']:>10,.0f} {figures[key + ' single']:>11,.1f}")
    print(f"(search QPS: medians of {args.rounds} alternating rounds)")
    for key, label in (("flow", "jina Client"), ("kept", "QbankClient")):
        print(
            f"ratio Flow/direct, {label}: batch {figures[key + ' batch'] / figures['direct batch']:.2f}  "
            f"single {figures[key + ' single'] / figures['direct single']:.2f}  (target >= 0.70)"
        )


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="vectors for part 1 (1000000: the 1M run)")
    parser.add_argument("--flow-rows", type=int, default=100_000, help="items for part 2")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--lines", default="2.5,3.2", help="Milvus Lite lines: 2.5 (pinned), 3.2 (side venv)")
    parser.add_argument("--indexes", default="FLAT,AUTOINDEX,IVF_FLAT", help="index types for part 1")
    parser.add_argument("--no-flow", action="store_true", help="skip part 2")
    parser.add_argument("--rounds", type=int, default=3, help="part 2: alternating rounds of searches (medians)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per line and index")
    args = parser.parse_args(argv)
    args.lines = [x.strip() for x in args.lines.split(",") if x.strip()]
    args.indexes = [x.strip() for x in args.indexes.split(",") if x.strip()]
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    part_lines(args)
    if not args.no_flow:
        part_flow(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
