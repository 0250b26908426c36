"""The service path, side by side in one run: Jina's dynamic batching off and on for many small
concurrent requests, and the client's import rate against the Flow's encode rate.

    .venv/bin/python bench/service.py                         # ViT-B/32-size ONNX model, 8 clients
    .venv/bin/python bench/service.py --model chinese_clip --clients 16 --requests 16
    .venv/bin/python bench/service.py --model tiny            # quick check that it runs

Part 1 starts flow.yml twice: as it is, and with `uses_dynamic_batching` on the encoder's /encode
(preferred batch --preferred, --timeout-ms); each time C clip_client clients send one image per
request at once, and one client sends batches of 32. Part 2 imports a bank (one stem + one figure
per question) with qbank_client's importer and compares it with clip_client encoding the same
items in batches of 32 through the same Flow, alternating, --rounds times (medians): import/encode
>= 0.9 means the encoder bounds imports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from encode import png_inputs, text_inputs  # noqa: E402  (the same inputs as bench/encode.py)


def flow_file(folder: Path, dynamic: dict | None) -> Path:
    """flow.yml with absolute executor paths, optionally with dynamic batching on the encoder."""
    flow = yaml.safe_load((REPO / "flow.yml").read_text())
    for executor in flow["executors"]:
        executor["uses"] = str(REPO / executor["uses"])
        if executor["name"] == "encoder" and dynamic:
            executor["uses_dynamic_batching"] = {"/encode": dynamic}
    path = folder / ("flow-dynamic.yml" if dynamic else "flow-plain.yml")
    path.write_text(yaml.safe_dump(flow, allow_unicode=True, sort_keys=False))
    return path


def concurrent_singles(url: str, blobs: list[bytes], clients: int, requests: int) -> dict:
    from clip_client import Client
    from docarray import Document, DocumentArray

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(index: int) -> None:
        client = Client(url)
        client.encode(DocumentArray([Document(blob=blobs[0], mime_type="image/png")]))  # connect + warm up
        barrier.wait()
        for r in range(requests):
            blob = blobs[(index * requests + r) % len(blobs)]
            started = time.perf_counter()
            try:
                client.encode(DocumentArray([Document(blob=blob, mime_type="image/png")]))
            except Exception as exc:  # counted, not raised: a bench reports failures
                with lock:
                    errors.append(str(exc)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "items_per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": len(errors),
    }


def batched(url: str, blobs: list[bytes], batch: int = 32) -> float:
    from clip_client import Client
    from docarray import Document, DocumentArray

    client = Client(url)
    docs = [Document(blob=b, mime_type="image/png") for b in blobs]
    client.encode(DocumentArray(docs[:batch]), batch_size=batch)
    started = time.perf_counter()
    client.encode(DocumentArray(docs), batch_size=batch)
    return len(docs) / (time.perf_counter() - started)


def import_versus_encode(url: str, folder: Path, questions: int, rounds: int) -> dict:
    """Alternate rounds of clip_client encoding the items and qbank importing them (deleted again
    after each round, so every import writes all items); medians, because one pass of a hundred
    items on 2 shared cores swings by a third from run to run (seen: 14.8 to 22.1 items/s)."""
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank_client import QbankClient, read_bank
    from qbank_client.importer import import_bank

    blobs, stems = png_inputs(questions), text_inputs(questions)
    (folder / "figs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (blob, stem) in enumerate(zip(blobs, stems, strict=True)):
        (folder / "figs" / f"b{i}.png").write_bytes(blob)
        lines.append(json.dumps({"id": f"bench-{i}", "stem": stem, "figures": [f"figs/b{i}.png"], "subject": "数学"}))
    bank = folder / "bank.jsonl"
    bank.write_text("\n".join(lines) + "\n", encoding="utf-8")

    docs = []
    for blob, stem in zip(blobs, stems, strict=True):
        docs += [Document(text=stem), Document(blob=blob, mime_type="image/png")]
    client, qbank = Client(url), QbankClient(url)
    client.encode(DocumentArray(docs[:32]), batch_size=32)
    encode_rates, import_rates = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        client.encode(DocumentArray(docs), batch_size=32)
        encode_rates.append(len(docs) / (time.perf_counter() - started))
        started = time.perf_counter()
        summary = import_bank(qbank, read_bank(bank), batch_size=16, concurrency=2, progress=False)
        import_rates.append(summary.items_sent / (time.perf_counter() - started))
        assert summary.items_sent == len(docs) and not summary.failed, summary.to_dict()
        qbank.delete_questions([f"bench-{i}" for i in range(questions)])
    return {
        "encode_items_per_s": statistics.median(encode_rates),
        "import_items_per_s": statistics.median(import_rates),
        "encode_rounds": encode_rates,
        "import_rounds": import_rates,
        "items": len(docs),
    }


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clip", choices=["clip", "chinese_clip", "tiny"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=8, help="single-image requests per client")
    parser.add_argument("--preferred", type=int, default=16, help="dynamic batching: preferred batch size")
    parser.add_argument("--timeout-ms", type=int, default=20, help="dynamic batching: wait for a batch to fill")
    parser.add_argument("--questions", type=int, default=64, help="questions imported in part 2")
    parser.add_argument("--rounds", type=int, default=3, help="encode/import rounds in part 2 (medians)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from qbank.model.clip import export_onnx
    from qbank.service.flow import running_flow
    from qbank_devtools.tiny_clip import build_tiny_clip

    results = {}
    with tempfile.TemporaryDirectory(prefix="qbank-bench-service-") as tmp:
        folder = Path(tmp)
        architecture = "chinese_clip" if args.model == "tiny" else args.model
        model = build_tiny_clip(folder / "model", architecture, full_size=args.model != "tiny")
        onnx = export_onnx(str(model), folder / "onnx")
        blobs = png_inputs(64)
        dynamic = {"preferred_batch_size": args.preferred, "timeout": args.timeout_ms}
        for label, config in (("plain", None), ("dynamic batching", dynamic)):
            settings = dict(
                model=model, engine="onnx", onnx_path=onnx, device="cpu", data_dir=folder / f"data-{len(results)}",
                num_threads=args.threads,
            )  # fmt: skip
            with running_flow(flow_file(folder, config), **settings) as urls:
                url = urls["grpc"]
                results[label] = concurrent_singles(url, blobs, args.clients, args.requests)
                results[label]["batch32_items_per_s"] = batched(url, blobs)
                if config is None:
                    results["import"] = import_versus_encode(url, folder / "bank", args.questions, args.rounds)

    name = {"clip": "ViT-B/32", "chinese_clip": "CN-CLIP ViT-B/16", "tiny": "TINY model"}[args.model]
    print(f"\nPart 1: {args.clients} clients x {args.requests} single-image requests at once ({name}, ONNX, CPU)")
    header = f"{'flow':<18} {'items/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'batch-32 items/s':>17}"
    print(header + "\n" + "-" * len(header))
    for label in ("plain", "dynamic batching"):
        r = results[label]
        print(
            f"{label:<18} {r['items_per_s']:>8.1f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['errors']:>7} "
            f"{r['batch32_items_per_s']:>17.1f}"
        )
    plain, dyn = results["plain"], results["dynamic batching"]
    print(
        f"ratio dynamic/plain: small concurrent {dyn['items_per_s'] / plain['items_per_s']:.2f}  "
        f"batches of 32 {dyn['batch32_items_per_s'] / plain['batch32_items_per_s']:.2f}  "
        f"(preferred {args.preferred}, timeout {args.timeout_ms} ms)"
    )
    r = results["import"]
    print(f"\nPart 2: import of {args.questions} questions ({r['items']} items: stems + figures), plain flow")
    rounds = "  ".join(f"{e:.1f}/{i:.1f}" for e, i in zip(r["encode_rounds"], r["import_rounds"], strict=True))
    print(f"rounds, encode/import items/s: {rounds}")
    print(
        f"medians: Flow encode (clip_client, batches of 32) {r['encode_items_per_s']:.1f} items/s;  "
        f"qbank import {r['import_items_per_s']:.1f} items/s;  import/encode {r['import_items_per_s'] / r['encode_items_per_s']:.2f} (target >= 0.90)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
