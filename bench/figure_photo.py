"""Photos of real questions with a figure, through the Flow with a full-size CN-CLIP (issue 45's speed
targets): the figure matched as the service does by default (only when the words read are too few to
tell the question: QBANK_OCR_FIGURE_SEARCH_BELOW) beside the figure always matched (``figures: true``,
what every photo with a figure paid before), alternating photo by photo in one run.

CMMLU's questions (the folder given; ../shared/data/cmmlu by default) are imported through the Flow
(``qbank import``'s code) into a bank whose every fifth question also has a drawn figure (an image
item, qbank_devtools.demo.draw_figure, the six kinds in turn). Photos of questions of the bank: each
typeset by KaTeX as printed (stem, then its options a line each; qbank_devtools.typeset), half with
the question's figure on the page below the text, right of centre as exam papers place it, then
photographed under qbank_devtools.photos' phone conditions in turn. A question counts as found when it
is first in the answer. Then sheets of 4 numbered questions (one with its figure) searched with
``page``: every question found first in its own segment, and the time a sheet.

The CLIP model has the real shapes (ViT-B/16 Chinese-CLIP) and random weights: the compute is the
real one, its matches mean nothing, so the questions are found by their words (the default search).

    .venv/bin/python bench/figure_photo.py                        # 2,000 questions, 64 photos, 12 sheets
    .venv/bin/python bench/figure_photo.py --limit 500 --photos 16 --sheets 4 --model tiny   # a quick check
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
from realphoto import percentile, sheet_lines  # noqa: E402

FIGURE_EVERY = 5  # every fifth question of the bank has a figure


def with_figure(page, figure: bytes):  # noqa: ANN001, ANN201 - PIL images
    """``page`` with ``figure`` (a 224 px drawing, printed at 1.5x as the 2x typeset text is) below its
    text, right of centre."""
    from PIL import Image

    drawing = Image.open(io.BytesIO(figure)).convert("RGB")
    drawing = drawing.resize((336, 336), Image.BICUBIC)
    canvas = Image.new("RGB", (max(page.width, 700), page.height + drawing.height + 40), "white")
    canvas.paste(page, (0, 0))
    canvas.paste(drawing, (round(canvas.width * 0.55), page.height + 20))
    return canvas


def jpeg(image) -> bytes:  # noqa: ANN001 - a PIL image
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--limit", type=int, default=2000, help="questions of the bank imported")
    parser.add_argument("--photos", type=int, default=64, help="single-question photos (half with a figure)")
    parser.add_argument("--sheets", type=int, default=12, help="sheets of 4 questions")
    parser.add_argument("--model", default="chinese_clip", choices=["tiny", "chinese_clip"])
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from docarray import Document, DocumentArray

    from qbank.config import OcrSettings
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.demo import FIGURE_KINDS, draw_figure
    from qbank_devtools.photos import PHONE_CONDITIONS, phone_photo
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    bank = questions(Path(args.cmmlu), args.limit)
    figures = {q.id: draw_figure(FIGURE_KINDS[n % len(FIGURE_KINDS)], n) for n, q in enumerate(bank[::FIGURE_EVERY])}
    printable = [q for q in bank if len(stem_only(q)) <= 160 and "\n" not in stem_only(q)]
    rng = random.Random(args.seed)
    drawn = [q for q in printable if q.id in figures]
    plain = [q for q in printable if q.id not in figures]
    targets = [(q, True) for q in rng.sample(drawn, args.photos // 2)]
    targets += [(q, False) for q in rng.sample(plain, args.photos - args.photos // 2)]
    rng.shuffle(targets)
    sheets = [rng.sample(plain, 3) + [rng.choice(drawn)] for _ in range(args.sheets)]
    for sheet in sheets:
        rng.shuffle(sheet)
    conditions = [c for c in PHONE_CONDITIONS if c != "dim"]  # dim photos pay the second looks (their own row)
    with tempfile.TemporaryDirectory(prefix="qbank-figure-photo-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip", full_size=args.model != "tiny")
        photos, sheet_photos = [], []
        with Typesetter() as typesetter:  # before the Flow starts: Chromium would take the timed cores
            for number, (question, figured) in enumerate(targets):
                options = question.tags.get("options") or []
                page = typesetter.page([stem_only(question)] + [f"{o['label']}. {o['text']}" for o in options])
                if figured:
                    page = with_figure(page, figures[question.id])
                condition = conditions[number % len(conditions)]
                photos.append((question.id, figured, condition, jpeg(phone_photo(page, condition, seed=number))))
            for number, sheet in enumerate(sheets):
                page = typesetter.page(sheet_lines(sheet, "一、选择题"))
                drawn_one = next(q for q in sheet if q.id in figures)
                sheet_photos.append(jpeg(phone_photo(with_figure(page, figures[drawn_one.id]), "perspective", number)))
        with running_flow(model=model, data_dir=folder / "data", device="cpu") as urls:
            client = QbankClient(urls["grpc"])
            started = time.perf_counter()
            summary = import_bank(client, bank, batch_size=64, progress=False)
            items = DocumentArray(
                Document(id=f"{qid}:image:0", blob=blob, tags={"question_id": qid}) for qid, blob in figures.items()
            )
            for first in range(0, len(items), 32):
                client.post("/index", items[first : first + 32], {})
            print(
                f"{summary.imported} CMMLU questions and {len(figures)} figures imported in "
                f"{time.perf_counter() - started:.0f} s (CLIP: {args.model})",
                flush=True,
            )
            for _, _, _, photo in photos[:2]:  # warm both paths
                client.photo_search(photo, 3)
                client.photo_search(photo, 3, figures=True)
            rows: dict[tuple[bool, str], dict[str, list]] = {}
            for number, (qid, figured, _condition, photo) in enumerate(photos):
                sides = ("default", "always") if number % 2 == 0 else ("always", "default")
                for side in sides:
                    began = time.perf_counter()
                    found = client.photo_search(photo, 3, figures=True if side == "always" else None)
                    took = time.perf_counter() - began
                    row = rows.setdefault((figured, side), {"found": [], "time": [], "matched": [], "region": []})
                    row["found"].append(bool(found["questions"]) and found["questions"][0].question_id == qid)
                    row["time"].append(took)
                    row["matched"].append(found["figure_matched"])
                    row["region"].append(found["figure_region"] is not None)
            sheet_rows: dict[str, list] = {"found": [], "all": [], "time": []}
            for sheet, photo in zip(sheets, sheet_photos, strict=True):
                began = time.perf_counter()
                page = client.photo_search(photo, 1, page=True)
                sheet_rows["time"].append(time.perf_counter() - began)
                by_number = {s["number"]: s for s in page["segments"]}
                found = [
                    bool(by_number.get(str(n)) and by_number[str(n)]["questions"])
                    and by_number[str(n)]["questions"][0].question_id == q.id
                    for n, q in enumerate(sheet, 1)
                ]
                sheet_rows["found"] += found
                sheet_rows["all"].append(all(found))
    share = lambda values: sum(values) / len(values)  # noqa: E731
    below = OcrSettings.resolve().ocr_figure_search_below
    print(f"\nsingle-question photos ({', '.join(conditions)} in turn); default: figure matched under {below} letters")
    print(
        f"{'photos':<16} {'figure matched':<15} {'n':>3} {'r@1':>6} {'figure found':>12} {'matched':>8} {'p50 ms':>7} {'p90 ms':>7}"
    )
    for figured in (True, False):
        for side in ("default", "always"):
            row = rows[(figured, side)]
            print(
                f"{'with a figure' if figured else 'without':<16} {side:<15} {len(row['found']):>3} "
                f"{share(row['found']):>6.3f} {sum(row['region']):>12} {sum(row['matched']):>8} "
                f"{1000 * statistics.median(row['time']):>7.0f} {1000 * percentile(row['time'], 0.9):>7.0f}"
            )
    ratio = statistics.median(rows[(True, "default")]["time"]) / statistics.median(rows[(True, "always")]["time"])
    print(f"with a figure, p50 default / always: {ratio:.2f}")
    print(
        f"\nsheets of 4 questions (one with a figure, perspective): {len(sheets)} sheets, "
        f"questions found first in their segment {share(sheet_rows['found']):.3f}, sheets all found "
        f"{share(sheet_rows['all']):.3f}, p50 {statistics.median(sheet_rows['time']):.2f} s, "
        f"p90 {percentile(sheet_rows['time'], 0.9):.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
