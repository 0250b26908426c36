"""``qbank-export-onnx``: export a CLIP model to clip-server's ONNX layout for the ONNX engine."""

from __future__ import annotations

import argparse
import logging
import sys

from qbank.config import DEFAULT_MODEL
from qbank.model.clip import ONNX_PRECISIONS, ModelUnavailableError, export_onnx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbank-export-onnx",
        description="Write textual.onnx + visual.onnx (inputs input_ids/attention_mask, pixel_values) and the "
        "tokenizer/image processor into one folder; serve it with QBANK_ENGINE=onnx QBANK_ONNX_PATH=<folder>.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id, local folder or clip-server name")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--precision",
        choices=ONNX_PRECISIONS,
        default="fp32",
        help="weights: fp32 (default), fp16 (GPU), int8 (CPU: dynamic quantisation, about 2.5x fp32 images/s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = export_onnx(args.model, args.out, args.opset, args.precision)
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.model} ({args.precision}) to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
