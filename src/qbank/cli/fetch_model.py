"""``qbank-fetch-model``: bring a CLIP model into the local cache (and optionally its ONNX export).

It is the init step of the encoder on Kubernetes (k8s/base/encoder.yaml): the image carries no
weights, so a pod either mounts a volume that already holds them or runs this first. Idempotent: a
cached model and an existing ONNX folder are left alone, so a restarted pod starts at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qbank.config import ONNX_PRECISIONS, ConfigError, EncoderSettings, hub_offline
from qbank.model.clip import (
    ONNX_TEXTUAL,
    ONNX_VISUAL,
    ModelUnavailableError,
    export_onnx,
    model_identity,
    read_onnx_meta,
    resolve_model_name,
)

logger = logging.getLogger("qbank.cli.fetch_model")

# What loading a transformers CLIP needs; skips other frameworks' weight files in a hub repo.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"]


def fetch_model(model: str) -> str:
    """Make ``model`` loadable offline; returns where it is (a folder or the hub id in the cache)."""
    source = resolve_model_name(model)
    if Path(source).is_dir():
        logger.info("model %s is a local folder: nothing to fetch", source)
        return source
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(source, allow_patterns=HUB_PATTERNS, local_files_only=True)
        logger.info("model %s already in the cache (%s)", source, folder)
        return source
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise ModelUnavailableError(f"model {source!r} is not in the cache and HF_HUB_OFFLINE is set")
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    logger.info("downloading %s from %s into %s", source, endpoint, constants.HF_HUB_CACHE)
    try:
        snapshot_download(source, allow_patterns=HUB_PATTERNS)
    except Exception as exc:  # network, auth, no such repo: one message for the operator
        raise ModelUnavailableError(f"model {source!r} could not be downloaded from {endpoint}: {exc}") from exc
    return source


def exported_model(folder: Path) -> tuple[str, str] | None:
    """(model, precision) of the export in an ONNX folder: None when there is no complete export,
    ("", "") when it has no qbank metadata (a clip-server folder brought by a volume)."""
    if not ((folder / ONNX_TEXTUAL).is_file() and (folder / ONNX_VISUAL).is_file()):
        return None
    meta = read_onnx_meta(folder)
    if not meta:
        return "", ""
    return meta.get("model", ""), meta.get("precision", "fp32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qbank-fetch-model", description=__doc__.split("\n\n")[0])
    try:  # the encoder's settings (QBANK_MODEL, QBANK_ENGINE, QBANK_ONNX_PATH, QBANK_ONNX_PRECISION)
        settings = EncoderSettings.resolve()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser.add_argument("--model", default=settings.model)
    # With QBANK_ENGINE=onnx the encoder reads QBANK_ONNX_PATH: export there by default.
    onnx_default = settings.onnx_path if settings.engine == "onnx" else ""
    parser.add_argument("--onnx-out", default=onnx_default, help="also export to this folder unless it holds one")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument(
        "--precision",
        choices=ONNX_PRECISIONS,
        default=settings.onnx_precision,
        help="weights of the ONNX export (QBANK_ONNX_PRECISION; default fp32)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fetch_model(args.model)
        if args.onnx_out:
            out = Path(args.onnx_out)
            exported = exported_model(out)
            wanted = (model_identity(args.model), args.precision)
            if exported == ("", "") or exported == wanted:
                logger.info("ONNX export %s already in %s: left as it is", "/".join(exported) or "(no metadata)", out)
            else:
                if exported:
                    logger.warning(
                        "%s holds an export of %s, not %s: exporting over it", out, "/".join(exported), "/".join(wanted)
                    )
                export_onnx(args.model, out, args.opset, args.precision)
                logger.info("exported %s (%s) to ONNX in %s", args.model, args.precision, out)
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model {args.model} ready" + (f"; ONNX in {args.onnx_out}" if args.onnx_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
