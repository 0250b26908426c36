"""``qbank-serve``: start flow.yml with working defaults for every variable it reads."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

from qbank.config import FLOW_ENV_DEFAULTS, ConfigError, check_flow_topology


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open together, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def apply_flow_defaults() -> dict[str, str]:
    """Fill in QBANK_* variables flow.yml needs, leaving any the operator set."""
    for name, value in FLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # Executors in fresh interpreters: a fork of a process holding gRPC/torch threads can deadlock.
    os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
    check_flow_topology(dict(os.environ))
    return {name: os.environ[name] for name in FLOW_ENV_DEFAULTS}


def load_flow(flow_file: str | Path | None = None):
    """The Flow from flow.yml, with relative executor paths resolved against the file's folder."""
    from jina import Flow

    apply_flow_defaults()
    path = Path(flow_file or os.environ.get("QBANK_FLOW") or "flow.yml").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"flow file {path} not found: run from the project folder or pass --flow / QBANK_FLOW")
    return Flow.load_config(str(path), extra_search_paths=[str(path.parent)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qbank-serve", description=__doc__)
    parser.add_argument("--flow", default=None, help="flow YAML (default: $QBANK_FLOW or ./flow.yml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        ports = apply_flow_defaults()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    flow = load_flow(args.flow)
    with flow:
        print(
            f"qbank flow up: grpc://0.0.0.0:{ports['QBANK_GRPC_PORT']}  http://0.0.0.0:{ports['QBANK_HTTP_PORT']}  "
            f"ws://0.0.0.0:{ports['QBANK_WS_PORT']}",
            flush=True,
        )
        flow.block()


if __name__ == "__main__":
    main()
