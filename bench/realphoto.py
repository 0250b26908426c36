"""Photos as students take them (issue 45), first class: whole exam sheets of real questions.

CMMLU's questions (the folder given; ../shared/data/cmmlu by default) are imported whole through
the Flow (tiny CLIP; photo search is OCR + BM25, which needs no CLIP semantics). Sheets of 3-5
numbered questions under a section header ("一、选择题"), options a line each, are typeset by KaTeX
in headless Chromium as printed (qbank_devtools.typeset) and photographed with the phone
distortions of qbank_devtools.photos, in turn. Each sheet is searched twice through the Flow:

* **page** (``/search`` with ``ocr`` and ``page``: the reader splits the page at its question numbers
  and each question is searched on its own): a sheet's question counts as found when the segment
  with its printed number has it at rank 1;
* **whole** (today's photo search, one text for the photo): found when it is in the top 10 of the
  one result list.

Prints, per distortion and overall: questions found, sheets with every question found, p50/p90 per
sheet. Other classes of the issue (hand crops with neighbours, pen marks, curved pages, moiré) are
not drawn yet.

    .venv/bin/python bench/realphoto.py                     # 40 sheets
    .venv/bin/python bench/realphoto.py --sheets 12 --limit 3000
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from realbank import questions, stem_only  # noqa: E402

HEADERS = ("一、选择题", "二、单项选择题", "一、单选题")


def sheet_lines(sheet: list, header: str) -> list[str]:  # noqa: ANN001 - Questions
    lines = [header]
    for number, question in enumerate(sheet, 1):
        lines.append(f"{number}. {stem_only(question)}")
        lines += [f"{o['label']}. {o['text']}" for o in question.tags.get("options") or []]
    return lines


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--sheets", type=int, default=40)
    parser.add_argument("--limit", type=int, default=None, help="questions of the bank imported (default all)")
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.photos import DISTORTIONS, distort
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    bank = questions(Path(args.cmmlu), args.limit)
    printable = [q for q in bank if len(stem_only(q)) <= 160 and "\n" not in stem_only(q)]
    rng = random.Random(45)
    sheets = [rng.sample(printable, rng.randint(3, 5)) for _ in range(args.sheets)]
    kinds = [DISTORTIONS[n % len(DISTORTIONS)] for n in range(len(sheets))]
    with tempfile.TemporaryDirectory(prefix="qbank-realphoto-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip")
        photos = []
        with Typesetter() as typesetter:  # before the Flow starts: Chromium would take the timed cores
            for number, (sheet, kind) in enumerate(zip(sheets, kinds, strict=True)):
                page = typesetter.page(sheet_lines(sheet, HEADERS[number % len(HEADERS)]))
                buffer = io.BytesIO()
                distort(page, kind, seed=number).save(buffer, format="JPEG", quality=90)
                photos.append(buffer.getvalue())
        with running_flow(model=model, data_dir=folder / "data", device="cpu") as urls:
            client = QbankClient(urls["grpc"])
            summary = import_bank(client, bank, batch_size=64, progress=False)
            print(f"{summary.imported} CMMLU questions imported; {len(sheets)} sheets of 3-5 questions", flush=True)
            client.photo_search(photos[0], 10, page=True)  # warm
            rows: dict[str, dict[str, list]] = {}
            for sheet, kind, photo in zip(sheets, kinds, photos, strict=True):
                started = time.perf_counter()
                page = client.photo_search(photo, 1, page=True)
                took = time.perf_counter() - started
                by_number = {s["number"]: s for s in page["segments"]}
                page_found = [
                    bool(by_number.get(str(n)) and by_number[str(n)]["questions"])
                    and by_number[str(n)]["questions"][0].question_id == q.id
                    for n, q in enumerate(sheet, 1)
                ]
                whole = {h.question_id for h in client.photo_search(photo, 10)["questions"]}
                whole_found = [q.id in whole for q in sheet]
                for key in (kind, "every sheet"):
                    row = rows.setdefault(key, {"page": [], "whole": [], "pages": [], "whole_pages": [], "time": []})
                    row["page"] += page_found
                    row["whole"] += whole_found
                    row["pages"].append(all(page_found))
                    row["whole_pages"].append(all(whole_found))
                    row["time"].append(took)
    print(
        f"\n{'distortion':<12} {'sheets':>6} {'questions':>9} {'page r@1':>9} {'all found':>9} "
        f"{'whole r@10':>10} {'all found':>9} {'p50 s':>6} {'p90 s':>6}"
    )
    for key, row in rows.items():
        share = lambda values: sum(values) / len(values)  # noqa: E731
        print(
            f"{key:<12} {len(row['pages']):>6} {len(row['page']):>9} {share(row['page']):>9.3f} "
            f"{share(row['pages']):>9.3f} {share(row['whole']):>10.3f} {share(row['whole_pages']):>9.3f} "
            f"{statistics.median(row['time']):>6.2f} {percentile(row['time'], 0.9):>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
