"""Encoder throughput, side by side in one run: bare torch, bare ONNX Runtime (fp32 and int8), and
the Flow (ONNX engine) through clip_client over gRPC. Random-initialised models of the real shapes
(compute does not depend on the weights). Prints items/s, the ratios ONNX/torch, int8/torch and
Flow/bare-ONNX, and the peak memory of each bare engine (each measured in its own process).

With CUDA (torch sees a device), a GPU section follows: torch fp16 and ONNX fp16 (CUDA provider)
bare, and the Flow with 1..N encoder replicas (CUDA_VISIBLE_DEVICES=RR) under concurrent requests,
as items/s per GPU beside clip-as-service's published ViT-B-32 figures on one TITAN RTX.

    .venv/bin/python bench/encode.py                      # ViT-B/32 and Chinese-CLIP B/16, batches 1/8/32
    .venv/bin/python bench/encode.py --models clip --batches 32 --items 64
    .venv/bin/python bench/encode.py --tiny               # tiny models: a quick check that the bench runs
    .venv/bin/python bench/encode.py --gpu only --models clip   # GPU section only

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
# clip-as-service's published ViT-B-32 throughput on one TITAN RTX (items/s), to hold GPU figures against.
CLIP_AS_SERVICE_TITAN_RTX = {"text": 1064.0, "image": 286.0}
FLOW_FILE = Path(__file__).resolve().parent.parent / "flow.yml"


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


def bare_worker(
    model_dir: str, engine: str, onnx_dir: str, device: str, batches: list[int], items: int, threads: int, out
) -> None:
    """In its own process: load one engine, measure texts and images at each batch size, report peak RSS."""
    from qbank.media.images import ImageLimits, decode_image
    from qbank.model.clip import ClipEncoder

    encoder = ClipEncoder.load(model_dir, engine=engine, device=device, onnx_path=onnx_dir, num_threads=threads)
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


def measure_bare(
    model_dir: Path, engine: str, onnx_dir: Path, batches: list[int], items: int, threads: int, device: str = "cpu"
) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=bare_worker, args=(str(model_dir), engine, str(onnx_dir), device, batches, items, threads, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def flow_settings(model_dir: Path, onnx_dir: Path, threads: int, data_dir: Path, device: str, replicas: int) -> dict:
    """QBANK_* settings that point flow.yml at the ONNX export."""
    return dict(
        model=model_dir, engine="onnx", onnx_path=onnx_dir, data_dir=data_dir, num_threads=threads, device=device,
        encoder_replicas=replicas,
    )  # fmt: skip


def measure_flow(model_dir: Path, onnx_dir: Path, batches: list[int], items: int, threads: int, data_dir: Path) -> dict:
    """The same through the Flow (ONNX engine), clip_client over gRPC, one request per batch."""
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.service.flow import running_flow

    texts, blobs = text_inputs(items), png_inputs(items)
    result = {}
    with running_flow(FLOW_FILE, **flow_settings(model_dir, onnx_dir, threads, data_dir, "cpu", 1)) as urls:
        client = Client(urls["grpc"])
        for batch in batches:
            result[("text", batch)] = rate(lambda chunk, b=batch: client.encode(chunk, batch_size=b), texts, batch)
            docs = [Document(blob=b, mime_type="image/png") for b in blobs]
            result[("image", batch)] = rate(
                lambda chunk, b=batch: client.encode(DocumentArray(chunk), batch_size=b), docs, batch
            )
    return result


def measure_flow_replicas(
    model_dir: Path, onnx_dir: Path, batch: int, items: int, data_dir: Path, replicas: int, device: str
) -> dict:
    """The Flow with ``replicas`` encoders: all items in one clip_client call, which keeps many
    requests of ``batch`` in flight, so every replica is busy (what a GPU deployment serves)."""
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.service.flow import running_flow

    texts = text_inputs(items)
    docs = DocumentArray([Document(blob=b, mime_type="image/png") for b in png_inputs(items)])
    result = {}
    with running_flow(FLOW_FILE, **flow_settings(model_dir, onnx_dir, 0, data_dir, device, replicas)) as urls:
        client = Client(urls["grpc"])
        for kind, inputs in (("text", texts), ("image", docs)):
            client.encode(inputs[: batch * replicas], batch_size=batch)  # warm every replica
            start = time.perf_counter()
            client.encode(inputs, batch_size=batch)
            result[kind] = items / (time.perf_counter() - start)
    return result


def cuda_devices() -> int:
    """Number of CUDA devices torch sees (0 without CUDA or without a CUDA build of torch)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def cpu_section(architecture: str, model_dir: Path, tmp: Path, args, batches: list[int]) -> list[tuple]:
    from qbank.model.clip import export_onnx

    start = time.perf_counter()
    onnx_dir = export_onnx(str(model_dir), tmp / f"{architecture}-onnx")
    int8_dir = export_onnx(str(model_dir), tmp / f"{architecture}-onnx-int8", precision="int8")
    print(f"[{architecture}] exported to ONNX fp32 and int8 in {time.perf_counter() - start:.0f} s", flush=True)
    torch_result = measure_bare(model_dir, "torch", onnx_dir, batches, args.items, args.threads)
    onnx_result = measure_bare(model_dir, "onnx", onnx_dir, batches, args.items, args.threads)
    int8_result = measure_bare(model_dir, "onnx", int8_dir, batches, args.items, args.threads)
    flow_result = measure_flow(model_dir, onnx_dir, batches, args.items, args.threads, tmp / f"{architecture}-data")
    rows = []
    for kind in ("text", "image"):
        for batch in batches:
            t, o, q, f = (r[(kind, batch)] for r in (torch_result, onnx_result, int8_result, flow_result))
            rows.append((MODEL_NAMES[architecture], kind, batch, t, o, q, f, o / t, q / t, f / o))
    peaks = (torch_result["peak_mb"], onnx_result["peak_mb"], int8_result["peak_mb"])
    rows.append((MODEL_NAMES[architecture], "peak MB", "", *peaks, None, None, None, None))
    return rows


def gpu_section(architecture: str, model_dir: Path, tmp: Path, args, gpus: int, device: str = "cuda") -> list[tuple]:
    """fp16 torch and ONNX bare on one GPU, then the Flow with 1..N replicas; items/s per GPU."""
    from qbank.model.clip import export_onnx

    fp16_dir = export_onnx(str(model_dir), tmp / f"{architecture}-onnx-fp16", precision="fp16")
    batch = args.gpu_batch
    torch_result = measure_bare(model_dir, "torch", fp16_dir, [batch], args.gpu_items, 0, device)
    onnx_result = measure_bare(model_dir, "onnx", fp16_dir, [batch], args.gpu_items, 0, device)
    rows = []
    for kind in ("text", "image"):
        reference = CLIP_AS_SERVICE_TITAN_RTX[kind] if architecture == "clip" else None
        for engine, result in (("torch fp16", torch_result), ("onnx fp16", onnx_result)):
            rows.append((MODEL_NAMES[architecture], kind, engine, 1, result[(kind, batch)], reference))
    for replicas in sorted({1, *args.replicas}):
        flow = measure_flow_replicas(
            model_dir, fp16_dir, batch, args.gpu_items, tmp / f"{architecture}-gpu-{replicas}", replicas, device
        )
        used = min(replicas, gpus)
        for kind in ("text", "image"):
            reference = CLIP_AS_SERVICE_TITAN_RTX[kind] if architecture == "clip" else None
            rows.append((MODEL_NAMES[architecture], kind, f"flow x{replicas}", used, flow[kind] / used, reference))
    return rows


def print_cpu_table(rows: list[tuple], args) -> None:
    print(
        f"\nencode throughput, items/s ({args.items} items per cell, {args.threads} threads, CPU{', TINY models' if args.tiny else ''})"
    )
    names = ("torch", "onnx", "int8")
    header = f"{'model':<18} {'input':<8} {'batch':>5} " + " ".join(f"{n:>9}" for n in (*names, "flow"))
    header += f" {'onnx/torch':>11} {'int8/torch':>11} {'flow/onnx':>10}"
    print(header + "\n" + "-" * len(header))
    for model, kind, batch, *values in rows:
        cells = [f"{v:>9.1f}" if v is not None else f"{'':>9}" for v in values[:4]]
        ratios = [f"{v:>11.2f}" if v is not None else f"{'':>11}" for v in values[4:6]]
        ratios.append(f"{values[6]:>10.2f}" if values[6] is not None else "")
        print(f"{model:<18} {kind:<8} {batch!s:>5} {' '.join(cells)} {' '.join(ratios)}")
    print("int8: qbank-export-onnx --precision int8 (dynamic quantisation); flow runs the fp32 export")
    print("peak MB: resident memory high-water mark of the bare torch / onnx / int8 process (model + inputs)")


def print_gpu_table(rows: list[tuple], args, gpus: int) -> None:
    print(f"\nGPU encode throughput, items/s per GPU ({args.gpu_items} items, batch {args.gpu_batch}, {gpus} GPU(s))")
    header = f"{'model':<18} {'input':<6} {'path':<11} {'GPUs':>4} {'items/s/GPU':>12} {'TITAN RTX*':>11} {'ratio':>6}"
    print(header + "\n" + "-" * len(header))
    for model, kind, path, used, value, reference in rows:
        ref = f"{reference:>11.0f} {value / reference:>6.2f}" if reference else ""
        print(f"{model:<18} {kind:<6} {path:<11} {used:>4} {value:>12.1f} {ref}")
    print("* clip-as-service's published ViT-B-32 figures on one TITAN RTX (its ONNX/TensorRT runtimes, own client)")


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="clip,chinese_clip", help="comma list of: clip (ViT-B/32), chinese_clip (B/16)"
    )
    parser.add_argument("--batches", default="1,8,32", help="comma list of batch sizes")
    parser.add_argument("--items", type=int, default=64, help="items per measurement (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads per engine")
    parser.add_argument("--tiny", action="store_true", help="tiny models (checks the bench, measures nothing real)")
    parser.add_argument(
        "--gpu", choices=("auto", "off", "only"), default="auto", help="GPU section: when CUDA is there (auto)"
    )
    parser.add_argument("--gpu-batch", type=int, default=64, help="batch size on the GPU (default %(default)s)")
    parser.add_argument("--gpu-items", type=int, default=2048, help="items per GPU measurement (default %(default)s)")
    parser.add_argument(
        "--replicas", default="", help="comma list of encoder replica counts for the Flow (default: 1 and #GPUs)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    batches = [int(b) for b in args.batches.split(",")]
    gpus = cuda_devices() if args.gpu != "off" else 0
    args.replicas = [int(r) for r in args.replicas.split(",") if r] or [max(gpus, 1)]
    if args.gpu == "only" and not gpus:
        print("--gpu only: torch sees no CUDA device", file=sys.stderr)
        return 2
    from qbank_devtools.tiny_clip import build_tiny_clip

    cpu_rows, gpu_rows = [], []
    with tempfile.TemporaryDirectory(prefix="qbank-bench-") as tmp:
        for architecture in args.models.split(","):
            model_dir = build_tiny_clip(Path(tmp) / architecture, architecture, full_size=not args.tiny)
            if args.gpu != "only":
                cpu_rows += cpu_section(architecture, model_dir, Path(tmp), args, batches)
            if gpus:
                gpu_rows += gpu_section(architecture, model_dir, Path(tmp), args, gpus)
    if cpu_rows:
        print_cpu_table(cpu_rows, args)
    if gpu_rows:
        print_gpu_table(gpu_rows, args, gpus)
    elif args.gpu == "auto":
        print("\nGPU section skipped: torch sees no CUDA device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
