"""Issue 46's two figures of the search plan (qbank.domain.search_plan), measured side by side in one run.

1. **The encoder's CPU a bm25 search costs.** With ``QBANK_SEARCH_MODE=bm25`` a typed search names no
   mode; the plan embeds no query, where before the encoder embedded every one (and the indexer never
   used it). In alternating rounds over the same CMMLU texts: the encoder process's CPU-ms per bm25
   search now, and per ``/encode`` of the same text (the embed each of those searches carried
   before), with a full-size Chinese-CLIP (ViT-B/16, random weights: compute does not depend on them)
   on torch, CPU.
2. **The page and the CLI on the same photos.** Photos of CMMLU questions (typeset by KaTeX, photographed
   under the benchmark distortions) searched as the search page sends them (HTTP ``/post``, the photo
   as a data URI, ``limit``, ``group_by`` and ``ocr`` and nothing else) and as ``qbank photo`` does
   (``QbankClient.photo_search`` over gRPC): the same questions in the same order? Before, the client
   fetched 4x the limit itself and the page did not, so the two ranked the same photo from different
   pools.

    .venv/bin/python bench/search_plan.py                       # ../shared/data/cmmlu, 2,000 questions
    .venv/bin/python bench/search_plan.py --questions 500 --searches 50 --photos 10
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from figure_import import process_cpu_seconds  # noqa: E402
from realbank import questions, stem_only, typed_query, typeset_photo  # noqa: E402


def executor_pid(name: str) -> int | None:
    """The pid of the Flow's executor ``name`` (jina names each process after its executor)."""
    for child in multiprocessing.active_children():
        if name in child.name:
            return child.pid
    return None


def encoder_cpu_ms(pid: int, work) -> float:  # noqa: ANN001 - a callable
    before = process_cpu_seconds(pid)
    count = work()
    return 1000 * (process_cpu_seconds(pid) - before) / count


def page_search(http_url: str, photo: bytes, limit: int) -> list[str]:
    """The question ids the search page's own request returns for ``photo`` (app.js: search())."""
    body = {
        "execEndpoint": "/search",
        "data": [{"uri": "data:image/jpeg;base64," + base64.b64encode(photo).decode()}],
        "parameters": {"limit": limit, "group_by": "question_id", "filter": {}, "ocr": True},
    }
    request = urllib.request.Request(
        http_url + "/post", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        docs = json.loads(response.read())["data"]
    return [(m.get("tags") or {}).get("question_id") or m["id"] for m in docs[0].get("matches") or []]


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--questions", type=int, default=2000, help="CMMLU questions imported")
    parser.add_argument("--searches", type=int, default=100, help="typed bm25 searches a round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from docarray import Document, DocumentArray

    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.photos import DISTORTIONS
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    bank = questions(Path(args.cmmlu), None)
    rng = random.Random(46)
    imported = rng.sample(bank, min(args.questions, len(bank)))
    texts = [typed_query(q) for q in rng.sample(imported, min(args.searches, len(imported)))]
    printable = [q for q in imported if len(stem_only(q)) <= 160 and "\n" not in stem_only(q)]
    photographed = rng.sample(printable, min(args.photos, len(printable)))
    with Typesetter() as typesetter:  # before the Flow: Chromium would take the measured cores
        photos = [
            (q.id, typeset_photo(typesetter, q, DISTORTIONS[n % len(DISTORTIONS)], seed=n))
            for n, q in enumerate(photographed)
        ]
    with tempfile.TemporaryDirectory(prefix="qbank-search-plan-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip", full_size=True)
        with running_flow(model=model, device="cpu", data_dir=folder / "data", search_mode="bm25") as urls:
            client = QbankClient(urls["grpc"])
            summary = import_bank(client, imported, batch_size=32, progress=False)
            print(f"{summary.imported} CMMLU questions imported (full-size CN-CLIP, random weights)", flush=True)
            pid = executor_pid("encoder")
            assert pid, "no encoder process found"

            def searches() -> int:
                for text in texts:
                    client.post("/search", DocumentArray([Document(text=text)]), {"limit": args.limit})
                return len(texts)

            def embeds() -> int:
                for text in texts:
                    client.post("/encode", DocumentArray([Document(text=text)]), {})
                return len(texts)

            searches(), embeds()  # warm
            cpu: dict[str, list[float]] = {"bm25 search (now)": [], "embed of its query (before)": []}
            latency: dict[str, list[float]] = {key: [] for key in cpu}
            for number in range(args.rounds):
                sides = list(zip(cpu, (searches, embeds), strict=True))
                for key, work in sides if number % 2 == 0 else reversed(sides):
                    started = time.perf_counter()
                    cpu[key].append(encoder_cpu_ms(pid, work))
                    latency[key].append(1000 * (time.perf_counter() - started) / len(texts))
            same, compared = 0, 0
            for qid, photo in photos:
                by_page = page_search(urls["http"], photo, args.limit)
                by_cli = [h.question_id for h in client.photo_search(photo, args.limit)["questions"]]
                same += by_page == by_cli
                compared += 1
                if by_page != by_cli:
                    print(f"DIFFERENT for {qid}: page {by_page}, cli {by_cli}", flush=True)
            found = sum(
                bool(h) and h[0].question_id == qid
                for qid, h in ((qid, client.photo_search(photo, args.limit)["questions"]) for qid, photo in photos)
            )
            client.close()
    now, before = (statistics.median(cpu[key]) for key in cpu)
    print(f"\n{len(texts)} typed bm25 searches a round, {args.rounds} alternating rounds, {os.cpu_count()} cores")
    print(f"{'encoder CPU-ms per query':<32} {'median':>8} {'rounds':>28} {'ms a request':>13}")
    for key in cpu:
        rounds = " ".join(f"{v:.1f}" for v in cpu[key])
        print(f"{key:<32} {statistics.median(cpu[key]):>8.2f} {rounds:>28} {statistics.median(latency[key]):>13.1f}")
    print(
        f"encoder CPU a bm25 search saves: {before - now:.1f} ms ({now:.2f} ms now against {now + before:.1f} before)"
    )
    print(
        f"\npage and CLI on the same {compared} photos (limit {args.limit}): the same questions in the same "
        f"order for {same}; the photographed question first for {found}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
