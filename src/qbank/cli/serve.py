"""``qbank-serve``: start flow.yml with working defaults for every variable it reads."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from qbank.config import ConfigError, EncoderSettings, IndexerSettings, hub_offline, is_milvus_server_uri
from qbank.quiet import quiet_known_warnings
from qbank.service.flow import apply_flow_defaults, load_flow, run
from qbank.store.lite import DataDirError, check_writable


def preflight() -> None:
    """Refuse at once, with the reason on one line, what would stop the indexer from starting
    (the indexer checks it too, for Flows started otherwise, but jina reports only that it failed)."""
    settings = IndexerSettings.resolve()
    if not is_milvus_server_uri(settings.uri):
        check_writable(Path(settings.uri).parent)


# Where the demo (qbank-demo, scripts/demo.sh) keeps the toy CLIP it trains: a model ready on this machine.
DEMO_MODELS = Path("models")


def ready_local_models(root: Path = DEMO_MODELS) -> list[Path]:
    """Model folders under ``root`` that load without the hub (a save_pretrained folder: config.json)."""
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir() if (folder / "config.json").is_file())


def model_problem() -> str | None:
    """Why the encoder will not find its CLIP model on this machine, with what to set; None when it
    will (a local folder, an ONNX folder, or a hub id in the local cache). Without it, a missing model
    cost 45 s of hub retries and ended "the service did not start: " with nothing after the colon."""
    from qbank.model.clip import resolve_model_name

    settings = EncoderSettings.resolve()
    if settings.engine == "onnx":
        if Path(settings.onnx_path).expanduser().is_dir():
            return None
        return "QBANK_ENGINE=onnx needs QBANK_ONNX_PATH set to an exported ONNX folder (qbank-export-onnx makes one)"
    source = resolve_model_name(settings.model)
    if Path(source).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return None
    hint = (
        f"the CLIP model {source!r} is neither a local folder nor in this machine's model cache: set QBANK_MODEL "
        f"to a local model folder (`qbank-fetch-model --model {source}` brings it where the hub is reachable)"
    )
    ready = ready_local_models()
    if ready:
        hint += (
            f"; ready here: QBANK_MODEL={ready[0]} ("
            + ("the demo's toy CLIP" if "toy" in ready[0].name else "a saved model")
            + ")"
        )
    return hint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qbank-serve", description=__doc__)
    parser.add_argument("--flow", default=None, help="flow YAML (default: $QBANK_FLOW or ./flow.yml)")
    args = parser.parse_args(argv)
    quiet_known_warnings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ports = apply_flow_defaults()
        preflight()
        missing_model = model_problem()
    except (ConfigError, DataDirError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if missing_model and hub_offline():  # nothing to wait for: say it now
        raise SystemExit(f"error: {missing_model}")
    if missing_model:
        logging.getLogger("qbank.serve").warning("%s; trying the model hub", missing_model)
    flow = load_flow(args.flow)

    def announce() -> None:
        print(
            f"qbank flow up: grpc://0.0.0.0:{ports['QBANK_GRPC_PORT']}  http://0.0.0.0:{ports['QBANK_HTTP_PORT']}  "
            f"ws://0.0.0.0:{ports['QBANK_WS_PORT']}",
            flush=True,
        )

    try:
        code = run(flow, announce)
    except Exception as exc:  # the Flow did not start: an executor refused its settings or data dir
        reason = str(exc).strip() or f"{type(exc).__name__}: an executor failed to start (its log is above)"
        hint = f". {missing_model}" if missing_model else ""
        raise SystemExit(f"error: the service did not start: {reason}{hint}") from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
