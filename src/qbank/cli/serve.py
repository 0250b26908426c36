"""``qbank-serve``: start flow.yml with working defaults for every variable it reads."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from qbank.config import ConfigError, IndexerSettings, is_milvus_server_uri
from qbank.quiet import quiet_known_warnings
from qbank.service.flow import apply_flow_defaults, load_flow, run
from qbank.store.lite import DataDirError, check_writable


def preflight() -> None:
    """Refuse at once, with the reason on one line, what would stop the indexer from starting
    (the indexer checks it too, for Flows started otherwise, but jina reports only that it failed)."""
    settings = IndexerSettings.resolve()
    if not is_milvus_server_uri(settings.uri):
        check_writable(Path(settings.uri).parent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qbank-serve", description=__doc__)
    parser.add_argument("--flow", default=None, help="flow YAML (default: $QBANK_FLOW or ./flow.yml)")
    args = parser.parse_args(argv)
    quiet_known_warnings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ports = apply_flow_defaults()
        preflight()
    except (ConfigError, DataDirError) as exc:
        raise SystemExit(f"error: {exc}") from None
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
        raise SystemExit(f"error: the service did not start: {exc}") from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
