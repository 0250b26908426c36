"""Load test on loopback: start the Flow, import a demo bank, then N clients for M seconds.

    .venv/bin/python bench/load.py                       # 8 clients, 60 s, rounds of 20 s
    .venv/bin/python bench/load.py --clients 16 --seconds 300

Prints, per round, requests, errors, req/s, p50/p99 latency and the Flow's memory; memory that
keeps climbing from round to round after the first is a leak. Uses the tiny random model (the
service path, not the model, is what is under load here); --model takes a real one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="total run time (default %(default)s)")
    parser.add_argument("--round", type=float, default=20.0, help="seconds per reported round")
    parser.add_argument("--questions", type=int, default=300, help="demo questions imported first")
    parser.add_argument("--model", default="", help="model to serve (default: a tiny random one)")
    parser.add_argument("--protocol", choices=["grpc", "http", "websocket"], default="grpc")
    args = parser.parse_args()

    from qbank.service.flow import running_flow
    from qbank_client import QbankClient, read_bank
    from qbank_client.importer import import_bank
    from qbank_devtools.demo import write_demo_bank
    from qbank_devtools.loadtest import run_load
    from qbank_devtools.tiny_clip import build_tiny_clip

    work = Path(tempfile.mkdtemp(prefix="qbank-load-"))
    model = args.model or str(build_tiny_clip(work / "tiny-clip", "chinese_clip"))
    with running_flow(Path(__file__).resolve().parent.parent / "flow.yml", model=model, data_dir=work / "data") as url:
        bank = write_demo_bank(work / "bank", args.questions)
        summary = import_bank(QbankClient(url["grpc"]), read_bank(bank), progress=False)
        print(f"imported {summary.items_sent} items; load on {args.protocol} with {args.clients} clients", flush=True)
        rounds = max(1, round(args.seconds / args.round))
        errors = 0
        for n in range(rounds):
            report = run_load(url[args.protocol], args.clients, args.seconds / rounds)
            errors += len(report.errors)
            print(f"round {n + 1}/{rounds}: {report.summary()}", flush=True)
            for message in sorted(set(report.errors))[:5]:
                print(f"  error: {message}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
