"""Encoder throughput, side by side in one run: bare torch, bare ONNX Runtime, and the Flow (ONNX
engine) through clip_client over gRPC. Random-initialised models of the real shapes (compute does
not depend on the weights). Prints items/s, the ratios ONNX/torch and Flow/bare-ONNX, and the peak
memory of each bare engine (each measured in its own process).

    .venv/bin/python bench/encode.py                      # ViT-B/32 and Chinese-CLIP B/16, batches 1/8/32
    .venv/bin/python bench/encode.py --models clip --batches 32 --items 64
    .venv/bin/python bench/encode.py --tiny               # tiny models: a quick check that the bench runs

Images are PNG bytes (224x224 noise) and pass decode + preprocessing on every path, as they do in
the service; texts are Chinese question stems.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEM = "如图，在等腰三角形ABC中，AB=AC，∠A=40°，点D在BC上，求∠BAD的度数并说明理由。"
MODEL_NAMES = {"clip": "ViT-B/32 (CLIP)", "chinese_clip": "CN-CLIP ViT-B/16"}


def png_inputs(count: int, side: int = 224) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    return blobs


def text_inputs(count: int) -> list[str]:
    return [f"{STEM}（第{i}题）" for i in range(count)]


def rate(run, inputs: list, batch: int) -> float:
    """Items per second for ``run(chunk)`` over all inputs in chunks of ``batch``, after one warm-up."""
    run(inputs[:batch])
    start = time.perf_counter()
    for i in range(0, len(inputs), batch):
        run(inputs[i : i + batch])
    return len(inputs) / (time.perf_counter() - start)


def peak_rss_mb() -> float:
    """This process's resident high-water mark. Not ru_maxrss: on Linux that survives fork+exec, so a
    spawned child would report its parent's peak (measured: both engines showed the parent's 2.6 GB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def bare_worker(model_dir: str, engine: str, onnx_dir: str, batches: list[int], items: int, threads: int, out) -> None:
    """In its own process: load one engine, measure texts and images at each batch size, report peak RSS."""
    from qbank.clip_model import ClipEncoder
    from qbank.images import ImageLimits, decode_image

    encoder = ClipEncoder.load(model_dir, engine=engine, device="cpu", onnx_path=onnx_dir, num_threads=threads)
    limits = ImageLimits()
    texts, blobs = text_inputs(items), png_inputs(items)
    result = {}
    for batch in batches:
        result[("text", batch)] = rate(lambda chunk, b=batch: encoder.encode_texts(chunk, b), texts, batch)
        result[("image", batch)] = rate(
            lambda chunk, n=batch: encoder.encode_images([decode_image(x, limits) for x in chunk], n), blobs, batch
        )
    result["peak_mb"] = peak_rss_mb()
    out.put(result)


def measure_bare(model_dir: Path, engine: str, onnx_dir: Path, batches: list[int], items: int, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=bare_worker, args=(str(model_dir), engine, str(onnx_dir), batches, items, threads, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def measure_flow(model_dir: Path, onnx_dir: Path, batches: list[int], items: int, threads: int, data_dir: Path) -> dict:
    """The same through the Flow (ONNX engine), clip_client over gRPC, one request per batch."""
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.serve import free_ports, load_flow

    ports = free_ports(3)
    os.environ.update(
        QBANK_GRPC_PORT=str(ports[0]), QBANK_HTTP_PORT=str(ports[1]), QBANK_WS_PORT=str(ports[2]), QBANK_MODEL=str(model_dir),
        QBANK_ENGINE="onnx", QBANK_ONNX_PATH=str(onnx_dir), QBANK_DATA_DIR=str(data_dir), QBANK_NUM_THREADS=str(threads),
        QBANK_DEVICE="cpu",
    )  # fmt: skip
    texts, blobs = text_inputs(items), png_inputs(items)
    result = {}
    with load_flow(Path(__file__).resolve().parent.parent / "flow.yml"):
        client = Client(f"grpc://127.0.0.1:{ports[0]}")
        for batch in batches:
            result[("text", batch)] = rate(lambda chunk, b=batch: client.encode(chunk, batch_size=b), texts, batch)
            docs = [Document(blob=b, mime_type="image/png") for b in blobs]
            result[("image", batch)] = rate(
                lambda chunk, b=batch: client.encode(DocumentArray(chunk), batch_size=b), docs, batch
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="clip,chinese_clip", help="comma list of: clip (ViT-B/32), chinese_clip (B/16)"
    )
    parser.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    parser.add_argument("--items", type=int, default=64, help="items per measurement (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads per engine")
    parser.add_argument("--tiny", action="store_true", help="tiny models (checks the bench, measures nothing real)")
    args = parser.parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    batches = [int(b) for b in args.batches.split(",")]
    from qbank.clip_model import export_onnx
    from qbank.tiny_clip import build_tiny_clip

    rows = []
    with tempfile.TemporaryDirectory(prefix="qbank-bench-") as tmp:
        for architecture in args.models.split(","):
            model_dir = build_tiny_clip(Path(tmp) / architecture, architecture, full_size=not args.tiny)
            start = time.perf_counter()
            onnx_dir = export_onnx(str(model_dir), Path(tmp) / f"{architecture}-onnx")
            print(
                f"[{architecture}] random model built and exported to ONNX in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
            torch_result = measure_bare(model_dir, "torch", onnx_dir, batches, args.items, args.threads)
            onnx_result = measure_bare(model_dir, "onnx", onnx_dir, batches, args.items, args.threads)
            flow_result = measure_flow(
                model_dir, onnx_dir, batches, args.items, args.threads, Path(tmp) / f"{architecture}-data"
            )
            for kind in ("text", "image"):
                for batch in batches:
                    t, o, f = torch_result[(kind, batch)], onnx_result[(kind, batch)], flow_result[(kind, batch)]
                    rows.append((MODEL_NAMES[architecture], kind, batch, t, o, f, o / t, f / o))
            rows.append(
                (
                    MODEL_NAMES[architecture],
                    "peak MB",
                    "",
                    torch_result["peak_mb"],
                    onnx_result["peak_mb"],
                    None,
                    None,
                    None,
                )
            )

    print(
        f"\nencode throughput, items/s ({args.items} items per cell, {args.threads} threads, CPU{', TINY models' if args.tiny else ''})"
    )
    header = f"{'model':<18} {'input':<8} {'batch':>5} {'torch':>9} {'onnx':>9} {'flow':>9} {'onnx/torch':>11} {'flow/onnx':>10}"
    print(header + "\n" + "-" * len(header))
    for model, kind, batch, t, o, f, r1, r2 in rows:
        cells = [f"{v:>9.1f}" if v is not None else f"{'':>9}" for v in (t, o, f)]
        ratios = [f"{v:>11.2f}" if v is not None else f"{'':>11}" for v in (r1,)] + [
            f"{v:>10.2f}" if v is not None else "" for v in (r2,)
        ]
        print(f"{model:<18} {kind:<8} {batch!s:>5} {' '.join(cells)} {' '.join(ratios)}")
    print("peak MB: resident memory high-water mark of the bare torch / onnx process (model + inputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
