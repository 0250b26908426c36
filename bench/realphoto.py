"""Photos as students take them (issue 45): whole exam sheets, hurried shots, pen marks and phone
conditions, of real questions, beside an OCR + TF-IDF baseline.

CMMLU's questions (the folder given; ../shared/data/cmmlu by default) are imported whole through
the Flow (tiny CLIP; photo search is OCR + BM25, which needs no CLIP semantics). Sheets of 3-5
numbered questions under a section header ("一、选择题"), options a line each, are typeset by KaTeX
in headless Chromium as printed (qbank_devtools.typeset) and photographed with the phone
distortions of qbank_devtools.photos, in turn. A third of the sheets are printed in two balanced columns (a question
may run on into the next column). Each sheet is searched twice through the Flow:

* **page** (``/search`` with ``ocr`` and ``page``: the reader splits the page at its question numbers
  and each question is searched on its own): a sheet's question counts as found when the segment
  with its printed number has it at rank 1;
* **whole** (today's photo search, one text for the photo): found when it is in the top 10 of the
  one result list.

Prints, per distortion and overall: questions found, sheets with every question found, p50/p90 per
sheet.

Then single-question photos cut from the same typeset sheets (each line's box comes from the page),
searched as ``qbank photo`` does (one result list), found when the question is at rank 1:

* **hurried shots**: a hand crop that catches part of the lines above and below; the question with
  half of the next question (neighbour below) or of the previous one (neighbour above); only the
  last 60-80 % of the question (cut top) or the first 60-80 % (cut bottom);
* **pen marks** (qbank_devtools.photos.pen_marks): underlines, a circled option, a tick and a
  handwritten answer or note in a Kai face over a hand crop;
* **phone conditions** (qbank_devtools.photos.phone_photo): perspective, a curved page, a hard shadow
  edge, motion blur, a low-resolution photo, a photo of a screen (moiré), curve + shadow + blur.

Beside each, the baseline a team would build without the project: rapidocr with its own defaults
reads the photo, and TF-IDF over character uni- and bigrams of stem and options ranks the bank.
Photos whose read found no text (the service fell back to CLIP) are counted per class.

    .venv/bin/python bench/realphoto.py                     # 40 sheets, 40 photos per class
    .venv/bin/python bench/realphoto.py --sheets 12 --photos 12 --limit 3000
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


def columns(number: int) -> int:
    """A third of the sheets are printed in two columns, as many exam papers are."""
    return 2 if number % 3 == 2 else 1


HURRIED = ("hand crop", "neighbour below", "neighbour above", "cut top", "cut bottom")


def question_spans(sheet: list) -> list[tuple[int, int]]:  # noqa: ANN001 - Questions
    """Each question's first and last line index in sheet_lines (line 0 is the header)."""
    spans, line = [], 1
    for question in sheet:
        count = 1 + len(question.tags.get("options") or [])
        spans.append((line, line + count - 1))
        line += count
    return spans


def single_photo(page, boxes, sheet, kind: str, rng: random.Random, seed: int) -> tuple[bytes, int]:  # noqa: ANN001
    """A photo of one question of a typeset sheet (hurried, pen-marked or under a phone condition):
    JPEG bytes, and the index in ``sheet`` of the question it is of."""
    from qbank_devtools.photos import pen_marks, phone_photo

    spans = question_spans(sheet)
    target = (
        rng.randint(1, len(sheet) - 2) if kind in ("neighbour below", "neighbour above") else rng.randrange(len(sheet))
    )
    first, last = spans[target]
    top, bottom = boxes[first][1], boxes[last][3]
    height = bottom - top
    margin = 12
    if kind == "hand crop":
        above = boxes[first - 1] if first > 0 else None
        below = boxes[last + 1] if last + 1 < len(boxes) else None
        top -= round(rng.uniform(0.3, 0.7) * (above[3] - above[1])) if above else margin
        bottom += round(rng.uniform(0.3, 0.7) * (below[3] - below[1])) if below else margin
    elif kind == "neighbour below":
        next_first, next_last = spans[target + 1]
        bottom = round((boxes[next_first][1] + boxes[next_last][3]) / 2)
        top -= margin
    elif kind == "neighbour above":
        previous_first, previous_last = spans[target - 1]
        top = round((boxes[previous_first][1] + boxes[previous_last][3]) / 2)
        bottom += margin
    elif kind == "cut top":
        top += round(rng.uniform(0.2, 0.4) * height)
        bottom += margin
    elif kind == "cut bottom":
        bottom = top + round(rng.uniform(0.6, 0.8) * height)
        top -= margin
    else:
        top, bottom = top - margin, bottom + margin
    top, bottom = max(0, top), min(page.height, bottom)
    photo = page.crop((0, top, page.width, bottom))
    if kind == "pen marks":
        shifted = [(b[0], b[1] - top, b[2], b[3] - top) for b in boxes[first : last + 1]]
        photo = pen_marks(photo, shifted, seed=seed)
    elif kind not in HURRIED:
        photo = phone_photo(photo, kind, seed=seed)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), target


class TfIdfBaseline:
    """OCR + TF-IDF without the project: rapidocr with its own defaults reads the photo, and the bank
    is ranked by the cosine of TF-IDF vectors over characters and character bigrams."""

    def __init__(self, bank: list) -> None:  # noqa: ANN001 - Questions
        import math
        from collections import Counter

        from rapidocr import RapidOCR

        self.ocr = RapidOCR(params={"Global.log_level": "error"})
        self.ids = [q.id for q in bank]
        counts = [Counter(self.terms(q.stem)) for q in bank]
        frequency: Counter = Counter()
        for terms in counts:
            frequency.update(terms.keys())
        self.idf = {term: math.log(len(bank) / df) for term, df in frequency.items()}
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for number, terms in enumerate(counts):
            weights = {t: c * self.idf[t] for t, c in terms.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for term, weight in weights.items():
                self.postings.setdefault(term, []).append((number, weight / norm))

    @staticmethod
    def terms(text: str) -> list[str]:
        import unicodedata

        chars = [c for c in unicodedata.normalize("NFKC", text).lower() if not c.isspace()]
        return chars + [a + b for a, b in zip(chars, chars[1:], strict=False)]

    def best(self, photo: bytes) -> str | None:
        from collections import Counter, defaultdict

        text = "".join(self.ocr(photo).txts or ())
        scores: dict[int, float] = defaultdict(float)
        for term, count in Counter(self.terms(text)).items():
            weight = count * self.idf.get(term, 0.0)
            for number, document_weight in self.postings.get(term, ()):
                scores[number] += weight * document_weight
        return self.ids[max(scores, key=scores.__getitem__)] if scores else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--sheets", type=int, default=40)
    parser.add_argument("--photos", type=int, default=40, help="single-question photos per class")
    parser.add_argument("--misses", action="store_true", help="print each single photo not found at rank 1")
    parser.add_argument(
        "--seed",
        type=int,
        default=45,
        help="which questions make the sheets (the rules were fitted on 45: try another)",
    )
    parser.add_argument("--limit", type=int, default=None, help="questions of the bank imported (default all)")
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.photos import DISTORTIONS, PHONE_CONDITIONS, distort
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    bank = questions(Path(args.cmmlu), args.limit)
    printable = [q for q in bank if len(stem_only(q)) <= 160 and "\n" not in stem_only(q)]
    rng = random.Random(args.seed)
    sheets = [rng.sample(printable, rng.randint(3, 5)) for _ in range(args.sheets)]
    kinds = [DISTORTIONS[n % len(DISTORTIONS)] for n in range(len(sheets))]
    with tempfile.TemporaryDirectory(prefix="qbank-realphoto-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip")
        photos, singles = [], []
        classes = [*HURRIED, "pen marks", *PHONE_CONDITIONS]
        with Typesetter() as typesetter:  # before the Flow starts: Chromium would take the timed cores
            typeset = []
            for number, (sheet, kind) in enumerate(zip(sheets, kinds, strict=True)):
                lines = sheet_lines(sheet, HEADERS[number % len(HEADERS)])
                page, boxes = typesetter.page_with_boxes(lines)
                typeset.append((page, boxes))  # single-question photos are cut from one column
                if columns(number) == 2:
                    page = typesetter.page(lines, columns=2)
                buffer = io.BytesIO()
                distort(page, kind, seed=number).save(buffer, format="JPEG", quality=90)
                photos.append(buffer.getvalue())
        for kind in classes:
            for number in range(args.photos):
                sheet = sheets[number % len(sheets)]
                page, boxes = typeset[number % len(sheets)]
                photo, target = single_photo(page, boxes, sheet, kind, rng, seed=number)
                singles.append((kind, photo, sheet[target].id))
        baseline = TfIdfBaseline(bank)
        baseline_found = [baseline.best(photo) == qid for _, photo, qid in singles]
        with running_flow(model=model, data_dir=folder / "data", device="cpu") as urls:
            client = QbankClient(urls["grpc"])
            summary = import_bank(client, bank, batch_size=64, progress=False)
            print(f"{summary.imported} CMMLU questions imported; {len(sheets)} sheets of 3-5 questions", flush=True)
            client.photo_search(photos[0], 10, page=True)  # warm
            rows: dict[str, dict[str, list]] = {}
            for number, (sheet, kind, photo) in enumerate(zip(sheets, kinds, photos, strict=True)):
                started = time.perf_counter()
                page = client.photo_search(photo, 1, page=True)
                took = time.perf_counter() - started
                by_number = {s["number"]: s for s in page["segments"]}
                page_found = [
                    bool(by_number.get(str(n)) and by_number[str(n)]["questions"])
                    and by_number[str(n)]["questions"][0].question_id == q.id
                    for n, q in enumerate(sheet, 1)
                ]
                if args.misses and not all(page_found):
                    print(f"MISS sheet {number} ({kind}, {columns(number)} columns): found {page_found}", flush=True)
                    for segment in page["segments"]:
                        best = segment["questions"][0].question_id if segment["questions"] else None
                        print(f"     {segment['number']}: {segment['text'][:50]!r} -> {best}", flush=True)
                whole = {h.question_id for h in client.photo_search(photo, 10)["questions"]}
                whole_found = [q.id in whole for q in sheet]
                for key in (kind, "every sheet", "two columns" if columns(number) == 2 else "one column"):
                    row = rows.setdefault(key, {"page": [], "whole": [], "pages": [], "whole_pages": [], "time": []})
                    row["page"] += page_found
                    row["whole"] += whole_found
                    row["pages"].append(all(page_found))
                    row["whole_pages"].append(all(whole_found))
                    row["time"].append(took)
            single_rows: dict[str, dict[str, list]] = {}
            for (kind, photo, qid), base in zip(singles, baseline_found, strict=True):
                started = time.perf_counter()
                found = client.photo_search(photo, 1)
                took = time.perf_counter() - started
                row = single_rows.setdefault(kind, {"found": [], "base": [], "clip": [], "time": []})
                hit = bool(found["questions"]) and found["questions"][0].question_id == qid
                row["found"].append(hit)
                if args.misses and not hit:
                    got = found["questions"][0].question_id if found["questions"] else None
                    wanted = next(q for q in bank if q.id == qid)
                    print(f"MISS {kind}: wanted {qid} {stem_only(wanted)[:50]!r}; got {got}", flush=True)
                    print(f"     read {found['text'][:120]!r}; searched {found['focus'][:80]!r}", flush=True)
                row["base"].append(base)
                row["clip"].append(not found["text"])
                row["time"].append(took)
    share = lambda values: sum(values) / len(values)  # noqa: E731
    print(f"\n{'single-question photo':<22} {'photos':>6} {'r@1':>6} {'baseline':>8} {'no text':>7} {'p50 ms':>7}")
    groups = {"hurried shots": HURRIED, "pen marks": ("pen marks",), "phone conditions": PHONE_CONDITIONS}
    for group, members in groups.items():
        for kind in [*members, group] if len(members) > 1 else members:
            picked = [single_rows[k] for k in (members if kind == group else (kind,))]
            found = [v for r in picked for v in r["found"]]
            base = [v for r in picked for v in r["base"]]
            clip = [v for r in picked for v in r["clip"]]
            took = [v for r in picked for v in r["time"]]
            label = f"  {kind}" if kind != group else group
            print(
                f"{label:<22} {len(found):>6} {share(found):>6.3f} {share(base):>8.3f} {sum(clip):>7} "
                f"{1000 * statistics.median(took):>7.0f}"
            )
    print(
        f"\n{'distortion':<12} {'sheets':>6} {'questions':>9} {'page r@1':>9} {'all found':>9} "
        f"{'whole r@10':>10} {'all found':>9} {'p50 s':>6} {'p90 s':>6}"
    )
    for key, row in rows.items():
        print(
            f"{key:<12} {len(row['pages']):>6} {len(row['page']):>9} {share(row['page']):>9.3f} "
            f"{share(row['pages']):>9.3f} {share(row['whole']):>10.3f} {share(row['whole_pages']):>9.3f} "
            f"{statistics.median(row['time']):>6.2f} {percentile(row['time'], 0.9):>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
