"""Cluster sizing (what ``qbank plan`` prints): from a bank's size and the load it must carry, the Milvus query nodes, the Flow's
replicas and a first import's duration, each number traced to the measured line it comes from.

Pure, no server (the client's `qbank plan` and anyone may call it): the planner is arithmetic over the points this project measured (the
tables of docs/performance.md and docs/photo-search.md, which name their runs). Its models, each
stated where it is used:

* **Query-node memory** of a vector index grows linearly with the rows: ``RSS(N) = a + b N``,
  least squares over the measured sizes of that index and search setting (bench/server.py on the
  Milvus 2.3.5 standalone, clustered 512-d vectors). Beside it, Milvus' published per-vector sizes
  (raw float32 for IVF_FLAT, a quarter for IVF_SQ8, m bytes for IVF_PQ, raw plus 2M links for HNSW).
* **Search cost** per query, in core-seconds (the measured machine had 2 cores), from the measured
  single-query QPS: interpolated in logs between the measured sizes (no one power fits them: IVF_SQ8
  grew N^0.13 from 200k to 1M, where the call itself dominates, and N^1.18 from 1M to 3M), and
  beyond the largest at the last step's exponent, at least linear: Milvus searches every sealed
  segment, and once segments are full each costs the same, so a bank of thousands of segments costs
  no less a row than the largest measured one.
* A replica holds all rows; replicas add throughput (Milvus' in-memory replicas).

Where a number was not measured here (GPUs, the cluster's insert rate), the plan says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

DIM = 512  # Chinese-CLIP ViT-B/16, the default model
MEASURED_CORES = 2  # every bench here ran on this 2-core machine
HEADROOM = 0.7  # the share of a node's memory and cores a plan fills (the rest: segments loading, compaction, spikes)


@dataclass(frozen=True)
class IndexPoint:
    """One measured line of bench/server.py: an index and search setting at a size."""

    index: str
    build: str  # build parameters as QBANK_INDEX_PARAMS takes them
    search: str  # search parameters as QBANK_SEARCH_PARAMS takes them
    rows: int
    recall: float  # recall@10 against exact search
    single_qps: float  # one query per call, one client
    rss_mb: float  # the standalone's resident memory with the index loaded
    build_s: float
    source: str


PERF = "docs/performance.md"
SIZING = "docs/sizing.md"
_1M = f"{PERF}, '1M vectors on the server' (bench/server.py --rows 1000000 --data clustered --queries 500)"
_200K = f"{SIZING}, 'The curve' (bench/server.py --rows 200000 --data clustered --queries 500 --indexes IVF_SQ8,IVF_PQ)"
_3M = (
    f"{SIZING}, 'The curve' (bench/server.py --rows 3000000 --data clustered --queries 300 --indexes IVF_SQ8 "
    "--milvus-set dataCoord.compaction.enableAutoCompaction=false)"
)

# Only runs that waited until every row was indexed (bench/server.py's wait_until_indexed): the
# first 200k table of docs/performance.md predates that wait and is left out.
INDEX_POINTS: tuple[IndexPoint, ...] = (
    IndexPoint("HNSW", '{"M": 16, "efConstruction": 200}', '{"ef": 32}', 1_000_000, 0.986, 340, 2460, 1005, _1M),
    IndexPoint("HNSW", '{"M": 16, "efConstruction": 200}', '{"ef": 64}', 1_000_000, 1.000, 282, 2460, 1005, _1M),
    IndexPoint("IVF_FLAT", '{"nlist": 1024}', '{"nprobe": 8}', 1_000_000, 1.000, 357, 2489, 146, _1M),
    IndexPoint("IVF_SQ8", '{"nlist": 1024}', '{"nprobe": 8}', 1_000_000, 0.970, 339, 972, 132, _1M),
    IndexPoint("IVF_SQ8", '{"nlist": 1024}', '{"nprobe": 8}', 200_000, 0.977, 421, 490, 33, _200K),
    IndexPoint("IVF_SQ8", '{"nlist": 1024}', '{"nprobe": 8}', 3_000_000, 0.966, 93, 2229, 954, _3M),
    IndexPoint("IVF_PQ", '{"nlist": 1024, "m": 64, "nbits": 8}', '{"nprobe": 8}', 200_000, 0.228, 515, 464, 668, _200K),
)


@dataclass(frozen=True)
class Figure:
    """A measured rate with where it was measured."""

    value: float
    unit: str
    source: str


# The Flow's rates on this 2-core machine (per 2 cores), from the named tables.
# A first import writes through the indexer's upserts (64 rows a call, two calls at once), not the
# bench's 1,000-row inserts (9,019 rows/s at 1M): the store's own rate is the one an import sees.
INSERT_ROWS_S = Figure(
    4126,
    "rows/s upserted by the store into the 2-core standalone",
    f"{SIZING}, 'Bulk insert against upserts' (bench/bulk_insert.py --rows 1000000: 1M upserts in 242.4 s)",
)
ENCODE_IMAGES_S = {
    "fp32": Figure(3.5, "images/s on 2 cores", f"{PERF}, bench/encode.py: CN-CLIP ViT-B/16 image, batch 32, ONNX fp32"),
    "int8": Figure(8.3, "images/s on 2 cores", f"{PERF}, bench/encode.py: CN-CLIP ViT-B/16 image, batch 32, ONNX int8"),
}
ENCODE_TEXTS_S = {
    "fp32": Figure(19.4, "texts/s on 2 cores", f"{PERF}, bench/encode.py: CN-CLIP ViT-B/16 text, batch 32, ONNX fp32"),
    "int8": Figure(33.8, "texts/s on 2 cores", f"{PERF}, bench/encode.py: CN-CLIP ViT-B/16 text, batch 32, ONNX int8"),
}
FIGURE_OCR_S = Figure(
    0.017,
    "s a figure on 2 cores",
    "docs/photo-search.md, 'Figure OCR at import' (48 figures, threads asleep: on 17 ms / off 2 ms)",
)
PHOTO_OCR_CPU_S = Figure(
    0.372,
    "CPU-s a photo",
    "docs/photo-search.md, 'Threads that sleep': the reader's CPU-s per typeset CMMLU photo through the Flow",
)


def fit_memory(points: list[IndexPoint]) -> tuple[float, float]:
    """(a MB, b bytes a row) of RSS = a + b N, least squares over the sizes measured (one size: a = 0)."""
    if len({p.rows for p in points}) < 2:
        p = points[0]
        return 0.0, p.rss_mb * 2**20 / p.rows
    n = len(points)
    mean_x = sum(p.rows for p in points) / n
    mean_y = sum(p.rss_mb for p in points) / n
    slope = sum((p.rows - mean_x) * (p.rss_mb - mean_y) for p in points) / sum((p.rows - mean_x) ** 2 for p in points)
    return mean_y - slope * mean_x, slope * 2**20


def search_cost(points: list[IndexPoint], rows: int) -> tuple[float, float]:
    """(core-seconds a query over ``rows``, the exponent used there): the measured single-query cost
    (MEASURED_CORES / QPS) interpolated in logs between the measured sizes, the smallest's below
    them, and beyond the largest grown at the last step's exponent, at least 1 (one size: 1)."""
    measured = sorted({p.rows: MEASURED_CORES / p.single_qps for p in points}.items())
    if rows <= measured[0][0]:
        return measured[0][1], 0.0
    exponent = 1.0
    for (low, low_cost), (high, high_cost) in itertools.pairwise(measured):
        exponent = math.log(high_cost / low_cost) / math.log(high / low)
        if rows <= high:
            return low_cost * (rows / low) ** exponent, exponent
    largest, largest_cost = measured[-1]
    beyond = max(1.0, exponent)
    return largest_cost * (rows / largest) ** beyond, beyond


def published_bytes_per_row(index: str, build: str, dim: int = DIM) -> float:
    """Milvus' published index sizes per vector (its index docs and sizing tool's basis): IVF_FLAT
    keeps the float32 vector, IVF_SQ8 one byte a dimension, IVF_PQ m codes of nbits, HNSW the vector
    plus 2M links of 4 bytes on its base layer."""
    import json

    params = json.loads(build)
    if index == "IVF_FLAT":
        return dim * 4
    if index == "IVF_SQ8":
        return dim
    if index == "IVF_PQ":
        return params.get("m", 64) * params.get("nbits", 8) / 8
    if index == "HNSW":
        return dim * 4 + 2 * params.get("M", 16) * 4
    raise ValueError(f"no published size for index {index!r}")


@dataclass
class Plan:
    lines: list[tuple[str, str, str]]  # (what, value, source)
    index: IndexPoint
    query_nodes: int
    replicas: int
    encoders: int
    readers: int


# What the planner is asked within, and why: its figures are measured up to 3M rows and grown beyond
# (docs/sizing.md); past these bounds the answer says nothing (--qps 1e308 printed a 300-digit replica
# count, --qps inf and a 400-digit --questions crashed).
INPUT_BOUNDS: dict[str, tuple[float, float, bool, str]] = {
    # name: (lowest, highest, lowest allowed itself, why the highest)
    "questions": (1, 10**12, True, "10,000 times the 10^8 questions this sizing is for"),
    "figure_share": (0, 1, True, "a share"),
    "qps": (0, 10**6, False, "a million searches a second"),
    "recall": (0, 1, False, "a share"),
    "node_memory_gb": (0, 65_536, False, "64 TiB, more than any machine"),
    "node_cores": (1, 4096, True, "more cores than any machine"),
    "photo_qps": (0, 10**5, True, "100,000 photos a second"),
    "import_days": (0, 3650, False, "ten years"),
    "encoder_cores": (1, 4096, True, "more cores than any machine"),
}


def check_input(name: str, value: float) -> float:
    """``value`` when it is a finite number within INPUT_BOUNDS[name]; ValueError naming the bound."""
    low, high, low_ok, why = INPUT_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"plan: {name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"plan: {name} must be a finite number, got {value!r}")
    if not (low <= value if low_ok else low < value) or value > high:
        shown = (
            f"{value:.4g}"
            if isinstance(value, float)
            else value
            if abs(value) < 10**15
            else f"a {len(str(abs(value)))}-digit number"
        )
        lower = f">= {low}" if low_ok else f"> {low}"
        raise ValueError(f"plan: {name} must be {lower} and <= {high:,} ({why}), got {shown}")
    return value


def plan(
    questions: int,
    figure_share: float = 0.3,
    qps: float = 300,
    recall: float = 0.95,
    node_memory_gb: float = 64,
    node_cores: int = 16,
    photo_qps: float = 10,
    import_days: float = 7,
    encoder_cores: int = 4,
    precision: str = "int8",
) -> Plan:
    """A cluster for ``questions`` (each one text item, ``figure_share`` of them one figure item too)."""
    for name, value in (
        ("questions", questions),
        ("figure_share", figure_share),
        ("qps", qps),
        ("recall", recall),
        ("node_memory_gb", node_memory_gb),
        ("node_cores", node_cores),
        ("photo_qps", photo_qps),
        ("import_days", import_days),
        ("encoder_cores", encoder_cores),
    ):
        check_input(name, value)
    if precision not in ENCODE_IMAGES_S:
        raise ValueError(f"plan: precision must be fp32 or int8, got {precision!r}")
    rows = round(questions * (1 + figure_share))
    candidates = []
    for key in dict.fromkeys((p.index, p.build, p.search) for p in INDEX_POINTS):
        points = [p for p in INDEX_POINTS if (p.index, p.build, p.search) == key]
        largest = max(points, key=lambda p: p.rows)
        if largest.recall < recall:
            continue
        base_mb, per_row = fit_memory(points)
        memory_gb = (base_mb * 2**20 + per_row * rows) / 2**30
        nodes_per_replica = max(1, math.ceil(memory_gb / (node_memory_gb * HEADROOM)))
        cost, alpha = search_cost(points, rows)  # core-seconds a query
        replicas = max(1, math.ceil(qps * cost / (nodes_per_replica * node_cores * HEADROOM)))
        candidates.append(
            (
                replicas * nodes_per_replica,
                memory_gb,
                largest,
                points,
                nodes_per_replica,
                replicas,
                cost,
                alpha,
                per_row,
            )
        )
    if not candidates:
        best = max(p.recall for p in INDEX_POINTS)
        raise ValueError(f"plan: no measured index reaches recall {recall} (the best measured is {best})")
    nodes, memory_gb, chosen, points, per_replica, replicas, cost, alpha, per_row = min(
        candidates, key=lambda c: (c[0], c[1])
    )
    sources = "; ".join(dict.fromkeys(p.source for p in points))
    sizes = ", ".join(f"{p.rows:,}" for p in sorted(points, key=lambda p: p.rows))
    lines = [
        ("items (text + figure vectors)", f"{rows:,}", f"{questions:,} questions x (1 + {figure_share} with a figure)"),
        (
            "index",
            f"{chosen.index} {chosen.build}, search {chosen.search}",
            f"the fewest query nodes among the measured settings with recall@10 >= {recall}",
        ),
        ("recall@10", f"{chosen.recall:.3f} at {chosen.rows:,} rows", chosen.source),
        (
            "memory per row",
            f"{per_row:,.0f} bytes (Milvus' published size {published_bytes_per_row(chosen.index, chosen.build):,.0f})",
            f"fit over {sizes} rows: {sources}",
        ),
        (
            "vector index memory",
            f"{memory_gb:,.1f} GB a replica",
            "the fit above; scalar fields and the BM25 index come on top (not measured here)",
        ),
        (
            "query nodes",
            f"{nodes} ({replicas} replica(s) x {per_replica} nodes of {node_memory_gb:g} GB, {node_cores} cores)",
            f"memory at {HEADROOM:.0%} of a node; {qps:g} queries/s x {cost * 1000:,.1f} core-ms a query",
        ),
        (
            "search cost",
            f"{cost * 1000:,.1f} core-ms a query over {rows:,} rows",
            f"single-query QPS on {MEASURED_CORES} cores at {sizes} rows, "
            + (
                f"grown N^{alpha:.2f} beyond {chosen.rows:,} (the last measured step's exponent, at least 1)"
                if rows > chosen.rows
                else f"interpolated N^{alpha:.2f} between the measured sizes"
            )
            + f": {sources}",
        ),
    ]
    texts = questions
    images = round(questions * figure_share)
    encode_core_s = MEASURED_CORES * (
        texts / ENCODE_TEXTS_S[precision].value + images / ENCODE_IMAGES_S[precision].value
    )
    ocr_core_s = MEASURED_CORES * images * FIGURE_OCR_S.value
    seconds = import_days * 86400
    encoders = max(1, math.ceil(encode_core_s / seconds / encoder_cores / HEADROOM))
    insert_s = rows / INSERT_ROWS_S.value
    lines += [
        (
            "encoder replicas (CPU)",
            f"{encoders} of {encoder_cores} cores, ONNX {precision}",
            f"{encode_core_s / 3600:,.0f} core-hours ({texts:,} texts at {ENCODE_TEXTS_S[precision].value}/s and {images:,} figures at {ENCODE_IMAGES_S[precision].value}/s per 2 cores: {ENCODE_IMAGES_S[precision].source}) in {import_days:g} days",
        ),
        ("encoder replicas (GPU)", "not planned", "no GPU was lent to measure bench/encode.py's GPU sections here"),
        (
            "figure OCR at import",
            f"{ocr_core_s / 3600:,.0f} core-hours",
            f"{images:,} figures x {FIGURE_OCR_S.value} s on 2 cores: {FIGURE_OCR_S.source}",
        ),
    ]
    readers = max(1, math.ceil((photo_qps * PHOTO_OCR_CPU_S.value + ocr_core_s / seconds) / (2 * HEADROOM)))
    lines += [
        (
            "reader replicas",
            f"{readers} of 2 cores",
            f"{photo_qps:g} photos/s x {PHOTO_OCR_CPU_S.value} CPU-s ({PHOTO_OCR_CPU_S.source}) plus the import's figure OCR",
        ),
        (
            "first import",
            f"{max(encode_core_s / (encoders * encoder_cores), ocr_core_s / (readers * 2)) / 86400:,.1f} days encoding; inserts {insert_s / 3600:,.1f} h into one standalone",
            f"the replicas above; {INSERT_ROWS_S.source} (a cluster's insert rate was not measured)",
        ),
    ]
    return Plan(lines, chosen, nodes, replicas, encoders, readers)


def format_plan(found: Plan) -> str:
    width = max(len(what) for what, _, _ in found.lines)
    return "\n".join(
        f"{what:<{width}}  {value}\n{'':<{width}}    source: {source}" for what, value, source in found.lines
    )


def kustomization(found: Plan, base: str) -> str:
    """A kustomize overlay for k8s/ with the plan's replicas and index settings (``base``: the path
    of k8s/base from the overlay's folder). Milvus' query nodes are set in k8s/milvus (printed)."""
    import json

    config = {
        "QBANK_INDEX_TYPE": found.index.index,
        "QBANK_INDEX_PARAMS": found.index.build,
        "QBANK_SEARCH_PARAMS": found.index.search,
    }
    patch = "\n".join(
        f"      - op: add\n        path: /data/{key}\n        value: {json.dumps(value)}"
        for key, value in config.items()
    )
    return (
        "# Written by `qbank plan`: the Flow's replicas and the vector index it planned. Milvus itself:\n"
        f"# {found.query_nodes} query nodes ({found.replicas} replica(s)) in k8s/milvus (queryNode replicas).\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\n"
        f"replicas:\n  - name: encoder\n    count: {found.encoders}\n  - name: reader\n    count: {found.readers}\n"
        "patches:\n  - target:\n      kind: ConfigMap\n      name: qbank-config\n    patch: |-\n"
        f"{patch}\n"
    )
