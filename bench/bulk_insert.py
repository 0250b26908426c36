"""A first load into a Milvus server, two ways side by side on the same rows: upserts as the indexer
makes them (qbank.store.ItemStore.upsert, requests of --batch rows, two at once as `qbank import`
sends them) against Milvus' bulk insert (pymilvus' LocalBulkWriter writes NumPy files into the
server's storage, utility.do_bulk_insert loads them, polled until done).

Both collections are created by the store with the same schema and index (the 2.3.5 standalone of
the dev extra, qbank_devtools.milvus_server); the rows are the store's own (qbank.domain.schema.item_row,
with the matching form of their text), with random unit vectors: encoding costs the same on both
paths and is left out, so this measures what the store path costs beyond it. Each side is timed until
its rows are counted by the server; then the same query runs on both.

Needs pymilvus' bulk writer packages, not part of any extra, and the server to see the client's
files: it reads them from its local storage folder. Install them beside the venv, not into it (they
pull urllib3 2, which jina refuses), and drop the packages the venv already has:

    .venv/bin/pip install --target /tmp/bulkdeps minio azure-storage-blob pyarrow -c constraints.txt
    rm -rf /tmp/bulkdeps/{urllib3,requests,idna,certifi,charset_normalizer,typing_extensions}*
    PYTHONPATH=/tmp/bulkdeps .venv/bin/python bench/bulk_insert.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_worker import normalised  # noqa: E402

CHUNK = 100_000  # rows built at a time: 1M rows as Python lists held at once took about 16 GB


def row_chunks(count: int, dim: int, seed: int, size: int = CHUNK) -> Iterator[list[dict]]:
    """The rows in chunks of ``size``: the store's own rows, with random unit vectors."""
    from qbank.domain.schema import item_row

    rng = np.random.default_rng(seed)
    subjects = ("数学", "物理", "化学", "生物", "地理")
    for start in range(0, count, size):
        vectors = normalised(rng, min(size, count - start), dim)
        yield [
            item_row(
                f"q{i}:text:0",
                vectors[i - start].tolist(),
                question_id=f"q{i}",
                text=f"已知等腰三角形的两边长分别为{i % 97}和{i % 89}，求这个三角形的周长。第{i}题",
                subject=subjects[i % len(subjects)],
                metadata={"source": "bench"},
            )
            for i in range(start, start + len(vectors))
        ]


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="rows per upsert (a Flow request's items)")
    parser.add_argument("--port", type=int, default=19571)
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from pymilvus import Collection, connections, utility
    from pymilvus.bulk_writer import BulkFileType, LocalBulkWriter

    from qbank.config import IndexerSettings
    from qbank.store.items import ItemStore
    from qbank_devtools.milvus_server import StandaloneMilvus

    with tempfile.TemporaryDirectory(prefix="qbank-bulk-") as tmp:
        server = StandaloneMilvus(Path(tmp) / "milvus", args.port)
        server.start()
        try:
            stores = {}
            for side in ("upsert", "bulk"):
                store = ItemStore(
                    IndexerSettings.resolve(milvus_uri=server.uri, collection=f"bench_{side}", model="bench")
                )
                store.check_vectors("bench", args.dim, create=True)
                stores[side] = store
            timings: dict[str, float] = {}

            # Only the writes are timed, chunk by chunk; building the rows is left out on both sides.
            timings["upsert"] = 0.0
            with ThreadPoolExecutor(2) as pool:  # two requests at once, as `qbank import` sends them
                for rows in row_chunks(args.rows, args.dim, seed=1):
                    started = time.perf_counter()
                    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
                    list(pool.map(stores["upsert"].upsert, batches))
                    timings["upsert"] += time.perf_counter() - started
                    print(f"  upserted {stores['upsert'].count():,} rows", flush=True)
            started = time.perf_counter()
            stores["upsert"].connection.client().flush(collection_name="bench_upsert")
            timings["upsert"] += time.perf_counter() - started

            connections.connect(alias="bulk", uri=server.uri)
            schema = Collection("bench_bulk", using="bulk").schema
            storage = Path(tmp) / "milvus" / "data" / "bulk-files"  # inside the server's local storage
            writer = LocalBulkWriter(schema=schema, local_path=str(storage), file_type=BulkFileType.NUMPY)
            written = 0.0
            for rows in row_chunks(args.rows, args.dim, seed=1):
                started = time.perf_counter()
                for row in stores["bulk"]._with_search_form(rows):
                    writer.append_row(row)
                writer.commit()  # this chunk's buffered rows reach disk inside its timed span
                written += time.perf_counter() - started
            importing = time.perf_counter()
            tasks = [utility.do_bulk_insert("bench_bulk", files=batch, using="bulk") for batch in writer.batch_files]
            while True:
                states = [utility.get_bulk_insert_state(task, using="bulk") for task in tasks]
                if all(state.state_name in ("Completed", "Failed") for state in states):
                    break
                time.sleep(0.5)
            failed = [state.infos.get("failed_reason") for state in states if state.state_name == "Failed"]
            if failed:
                raise SystemExit(f"bulk insert failed: {failed}")
            loaded = time.perf_counter()
            while stores["bulk"].count() < args.rows and time.perf_counter() - loaded < 1800:
                time.sleep(1.0)  # imported segments are searchable once the query node has loaded them
            visible_after = time.perf_counter() - loaded
            timings["bulk"] = written + time.perf_counter() - importing

            counts = {side: store.count() for side, store in stores.items()}
            print(f"\n{args.rows:,} rows of {args.dim}-d, the 2.3.5 standalone, 2 cores")
            print(f"{'path':<8} {'seconds':>8} {'rows/s':>9} {'counted':>9}")
            for side in ("upsert", "bulk"):
                print(f"{side:<8} {timings[side]:>8.1f} {args.rows / timings[side]:>9,.0f} {counts[side]:>9,}")
            print(
                f"bulk: {written:.1f} s writing files, {timings['bulk'] - written - visible_after:.1f} s importing them, "
                f"{visible_after:.1f} s more until every row was counted"
            )
            print(f"bulk/upsert time: {timings['bulk'] / timings['upsert']:.2f}")
            for store in stores.values():
                store.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
