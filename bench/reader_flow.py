"""Photo search through the real Flow with each OCR engine of the reader, side by side: the same
photos of typeset CMMLU questions (KaTeX in headless Chromium, the distortions in turn), rendered
before any Flow starts, searched against the same CMMLU bank, one Flow per engine and round, the
engines alternating, medians over all rounds. Prints p50/p90 per photo, the ratio, and recall@1.

    .venv/bin/python bench/reader_flow.py ../shared/data/cmmlu
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
from realbank import questions, typeset_photo  # noqa: E402

ENGINES = ("onnxruntime", "openvino")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", type=Path, help="the CMMLU data folder")
    parser.add_argument("--limit", type=int, default=4000, help="CMMLU questions in the bank")
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2, help="Flows per engine, alternating")
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
    latency: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    firsts: dict[str, list[bool]] = {engine: [] for engine in ENGINES}
    with tempfile.TemporaryDirectory(prefix="qbank-reader-flow-") as tmp:
        model = build_tiny_clip(Path(tmp) / "model", "chinese_clip")
        for round_number in range(args.rounds):
            order = ENGINES if round_number % 2 == 0 else tuple(reversed(ENGINES))
            for engine in order:
                data = Path(tmp) / f"data-{engine}-{round_number}"
                with running_flow(model=model, data_dir=data, device="cpu", ocr_engine=engine) as urls:
                    client = QbankClient(urls["grpc"])
                    import_bank(client, bank, batch_size=64, progress=False)
                    client.photo_search(photos[0][1], 10)  # warm: the first call pays for lazy set-up
                    for qid, photo in photos:
                        started = time.perf_counter()
                        answer = client.photo_search(photo, 10)
                        latency[engine].append(time.perf_counter() - started)
                        if round_number == 0:
                            firsts[engine].append(
                                bool(answer["questions"]) and answer["questions"][0].question_id == qid
                            )
                    client.close()
                print(f"round {round_number + 1}: {engine} done", flush=True)
    print(f"\n{len(photos)} photos of typeset CMMLU questions, {len(bank)} in the bank, {args.rounds} rounds")
    print(f"{'engine':<12} {'p50':>7} {'p90':>7} {'recall@1':>9}")
    for engine in ENGINES:
        times = sorted(latency[engine])
        print(
            f"{engine:<12} {statistics.median(times) * 1000:>5.0f}ms {times[int(0.9 * (len(times) - 1))] * 1000:>5.0f}ms "
            f"{sum(firsts[engine]) / len(firsts[engine]):>9.3f}"
        )
    ratio = statistics.median(latency["openvino"]) / statistics.median(latency["onnxruntime"])
    print(f"openvino/onnxruntime p50: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
