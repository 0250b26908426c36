"""Photo search through the real Flow with two settings of the reader, side by side: the same
photos of typeset CMMLU questions (KaTeX in headless Chromium, the distortions in turn), rendered
before any Flow starts, searched against the same CMMLU bank, one Flow per side and round, the
sides alternating, medians over all rounds. Prints p50/p90 per photo, the ratio, and recall@1.

A side is QBANK_* settings without the prefix, e.g. ``ocr_engine=openvino``; the default compares
rapidocr's recognition padding and a 960 px detector (before) with today's defaults (after).

    .venv/bin/python bench/reader_flow.py ../shared/data/cmmlu
    .venv/bin/python bench/reader_flow.py ../shared/data/cmmlu --before ocr_engine=openvino --after ''
    .venv/bin/python bench/reader_flow.py ../shared/data/cmmlu --limit 2000 --photos 24 --rounds 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from figure_import import process_cpu_seconds, reader_pid  # noqa: E402
from ocr import reader_settings  # noqa: E402  (the same key=value,... form as bench/ocr.py's sides)
from realbank import questions, typeset_photo  # noqa: E402

SIDES = ("before", "after")
BEFORE = "ocr_rec_min_width=320,ocr_det_side=960"


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", type=Path, help="the CMMLU data folder")
    parser.add_argument("--limit", type=int, default=4000, help="CMMLU questions in the bank")
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2, help="Flows per side, alternating")
    parser.add_argument("--before", default=BEFORE, help=f"settings of the first side (default {BEFORE!r})")
    parser.add_argument("--after", default="", help="settings of the second side (default: the defaults)")
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.photos import DISTORTIONS
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    bank = questions(args.cmmlu, args.limit)
    sample = random.Random(7).sample(bank, min(args.photos, len(bank)))
    with Typesetter() as typesetter:
        photos = [
            (q.id, typeset_photo(typesetter, q, DISTORTIONS[n % len(DISTORTIONS)], n)) for n, q in enumerate(sample)
        ]
    sides = {"before": reader_settings(args.before), "after": reader_settings(args.after)}
    latency: dict[str, list[float]] = {side: [] for side in SIDES}
    firsts: dict[str, list[bool]] = {side: [] for side in SIDES}
    reader_cpu: dict[str, list[float]] = {side: [] for side in SIDES}  # the reader's CPU-s per photo, per round
    with tempfile.TemporaryDirectory(prefix="qbank-reader-flow-") as tmp:
        model = build_tiny_clip(Path(tmp) / "model", "chinese_clip")
        for round_number in range(args.rounds):
            order = SIDES if round_number % 2 == 0 else tuple(reversed(SIDES))
            for side in order:
                data = Path(tmp) / f"data-{side}-{round_number}"
                with running_flow(model=model, data_dir=data, device="cpu", **sides[side]) as urls:
                    client = QbankClient(urls["grpc"])
                    import_bank(client, bank, batch_size=64, progress=False)
                    client.photo_search(photos[0][1], 10)  # warm: the first call pays for lazy set-up
                    pid = reader_pid()
                    cpu = process_cpu_seconds(pid) if pid else 0.0
                    for qid, photo in photos:
                        started = time.perf_counter()
                        answer = client.photo_search(photo, 10)
                        latency[side].append(time.perf_counter() - started)
                        if round_number == 0:
                            firsts[side].append(bool(answer["questions"]) and answer["questions"][0].question_id == qid)
                    if pid:
                        reader_cpu[side].append((process_cpu_seconds(pid) - cpu) / len(photos))
                    client.close()
                print(f"round {round_number + 1}: {side} done", flush=True)
    print(f"\n{len(photos)} photos of typeset CMMLU questions, {len(bank)} in the bank, {args.rounds} rounds")
    print(f"before: {args.before or 'the defaults'}; after: {args.after or 'the defaults'}")
    print(f"{'side':<12} {'p50':>7} {'p90':>7} {'recall@1':>9} {'reader CPU-s/photo':>19}")
    for side in SIDES:
        times = sorted(latency[side])
        print(
            f"{side:<12} {statistics.median(times) * 1000:>5.0f}ms {times[int(0.9 * (len(times) - 1))] * 1000:>5.0f}ms "
            f"{sum(firsts[side]) / len(firsts[side]):>9.3f} "
            f"{statistics.median(reader_cpu[side]) if reader_cpu[side] else float('nan'):>19.3f}"
        )
    ratio = statistics.median(latency["after"]) / statistics.median(latency["before"])
    print(f"after/before p50: {ratio:.2f}", end="")
    if reader_cpu["before"] and reader_cpu["after"]:
        print(
            f", reader CPU-s per photo: {statistics.median(reader_cpu['after']) / statistics.median(reader_cpu['before']):.2f}"
        )
    else:
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
