"""An import with figures through the real Flow: the questions/s a first load gets, with the reader
reading each figure's text (QBANK_OCR_FIGURES=true, the default) and without (false), side by side.

The bank is the demo's (stems and figures drawn in code with their labels: triangles, circuits,
charts...), one figure per question, written as users' banks are (bank.jsonl + figs/*.png) and
imported with qbank_client's importer (batches of 16, 2 at once, as `qbank import`). One fresh Flow
and data folder per side and round, the sides alternating, medians over the rounds; the time is the
import's alone (the Flow's start is left out). The reader's CPU-seconds per figure are read from
/proc for the reader's process, which the shared cores disturb less than wall time.

    .venv/bin/python bench/figure_import.py                      # tiny CLIP, 300 questions, 3 rounds
    .venv/bin/python bench/figure_import.py --model chinese_clip # a full-size CN-CLIP ViT-B/16 (random weights)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

SIDES = ("figures read", "figures not read")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reader_pid() -> int | None:
    """The pid of the Flow's reader replica (jina names its process after the executor)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        if "reader" in child.name:
            return child.pid
    return None


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="tiny", choices=["tiny", "chinese_clip"])
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient, read_bank
    from qbank_client.importer import import_bank
    from qbank_devtools.demo import write_demo_bank
    from qbank_devtools.tiny_clip import build_tiny_clip

    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    reader_cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="qbank-figure-import-") as tmp:
        folder = Path(tmp)
        bank_file = write_demo_bank(folder / "bank", args.questions)
        model = build_tiny_clip(folder / "model", "chinese_clip", full_size=args.model != "tiny")
        for round_number in range(args.rounds):
            order = SIDES if round_number % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                settings = dict(model=model, device="cpu", data_dir=folder / f"data-{round_number}-{side[8:11]}")
                with running_flow(ocr_figures=str(side == "figures read").lower(), **settings) as urls:
                    client = QbankClient(urls["grpc"])
                    pid = reader_pid()
                    cpu = process_cpu_seconds(pid) if pid else 0.0
                    started = time.perf_counter()
                    summary = import_bank(client, read_bank(bank_file), batch_size=16, concurrency=2, progress=False)
                    elapsed = time.perf_counter() - started
                    assert summary.imported == args.questions and not summary.failed, summary.to_dict()
                    rates[side].append(args.questions / elapsed)
                    if pid:
                        reader_cpu[side].append((process_cpu_seconds(pid) - cpu) / args.questions)
                    client.close()
                print(f"round {round_number + 1}: {side}: {rates[side][-1]:.1f} questions/s", flush=True)

    name = "tiny CLIP" if args.model == "tiny" else "full-size CN-CLIP ViT-B/16 (random weights), torch"
    print(f"\n{args.questions} demo questions, one figure each, {name}, {args.rounds} rounds, {os.cpu_count()} cores")
    print(f"{'side':<18} {'questions/s':>12} {'reader CPU-s/figure':>20}")
    for side in SIDES:
        cpu = f"{statistics.median(reader_cpu[side]):.3f}" if reader_cpu[side] else "-"
        print(f"{side:<18} {statistics.median(rates[side]):>12.1f} {cpu:>20}")
    ratio = statistics.median(rates["figures read"]) / statistics.median(rates["figures not read"])
    print(f"read/not read questions/s: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
