"""A real question bank, as published: CMMLU's 11,917 Chinese exam questions (360 with LaTeX).

    .venv/bin/python bench/realbank.py ../shared/data/cmmlu                 # all of it, 300 photos
    .venv/bin/python bench/realbank.py ../shared/data/cmmlu --photos 0      # typed queries only
    .venv/bin/python bench/realbank.py ../shared/data/cmmlu --limit 3000 --photos 80

CMMLU is non-commercial (CC BY-NC-SA 4.0): the folder is an argument and nothing of it is copied
into the repository. Questions are read as ``qbank import`` reads them (qbank_client.bank.read_bank
with --map stem=Question --map options=A,B,C,D --map answer=Answer: the options follow the stem in
its text) and written twice through the store on Milvus Lite, side by side:

- ``now``: today's store (schema 5): BM25 over the matching form of the reading form
  (qbank.domain.reading: LaTeX and HTML read as text, powers and subscripts as a page reads them);
  typed queries ordered by in-order coverage as /search mode bm25 does
  (qbank.service.ranking.order_by_coverage);
- ``raw``: the behaviour before (schema 3): BM25 over the matching form of the raw LaTeX source,
  typed queries in BM25's order.

Typed queries (what a teacher types from the printed page): the reading form of the stem's first
40 characters, without spaces and without the ``^ _ { }`` a keyboard user leaves out. Some are held
word for word by other questions too (CMMLU repeats stems such as 下列说法正确的是 with other
options): those are counted apart (``ambiguous``), and recall is printed over all and over the rest.
Simulated reads: the reading form of the whole question with spaces and ``^ _ { }`` lost, ranked by
in-order similarity as photo search does.

Photos (``--photos``, half of them LaTeX questions): each question typeset as a printed page (KaTeX
in headless Chromium at 2x, qbank_devtools.typeset) and photographed under bench/photo.py's
distortions (qbank_devtools.photos.distort, in turn), then searched through the real Flow
(``qbank photo``'s call: OCR, BM25, in-order ranking) after the whole bank was imported through it
(``qbank import``'s code: import_bank). The raw side ranks the same text read on its own store. It
prints recall@1/@10 per class and distortion, p50/p90 per photo, and the import rates.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qbank.config import IndexerSettings
from qbank.domain.reading import reading_form
from qbank.domain.schema import item_row
from qbank.domain.search_plan import TYPED_RERANK_POOL
from qbank.domain.text import match_form, sequence_similarity
from qbank.service.mapping import row_to_match
from qbank.service.ranking import order_by_coverage
from qbank.store.items import ItemStore
from qbank_client.bank import FieldMap, Question, read_bank

KEYBOARD_DROPS = re.compile(r"[\s^_{}]")
BATCH = 500
CMMLU_FIELDS = FieldMap.parse(["stem=Question", "options=A,B,C,D", "answer=Answer"])


def questions(folder: Path, limit: int | None) -> list[Question]:
    """CMMLU's questions as ``qbank import`` reads them (bad rows, if any, are reported and left out)."""
    found, bad = [], 0
    for row in read_bank(folder, CMMLU_FIELDS):
        if isinstance(row, Question):
            found.append(row)
        else:
            bad += 1
    if bad:
        print(f"{bad} rows refused by the bank reader", file=sys.stderr)
    return found[:limit] if limit else found


def stem_only(question: Question) -> str:
    """The stem as stored, without the option lines the reader appended."""
    options = question.tags.get("options") or []
    tail = "".join(f"\n{o['label']}. {o['text']}" for o in options)
    return question.stem[: len(question.stem) - len(tail)] if tail and question.stem.endswith(tail) else question.stem


def typeset_photo(typesetter, question: Question, kind: str, seed: int) -> bytes:  # noqa: ANN001 - a Typesetter
    """A JPEG photo of ``question`` (its stem, then its options a line each) typeset as printed and
    distorted as ``kind`` (qbank_devtools.photos.DISTORTIONS)."""
    from qbank_devtools.photos import distort

    options = question.tags.get("options") or []
    page = typesetter.page([stem_only(question)] + [f"{o['label']}. {o['text']}" for o in options])
    buffer = io.BytesIO()
    distort(page, kind, seed=seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def has_latex(question: Question) -> bool:
    return "$" in question.stem


def typed_query(question: Question) -> str:
    return KEYBOARD_DROPS.sub("", reading_form(stem_only(question)))[:40]


def read_query(question: Question) -> str:
    return KEYBOARD_DROPS.sub("", reading_form(question.stem))


def build(folder: str, bank: list[Question], schema: int) -> tuple[ItemStore, float]:
    store = ItemStore(IndexerSettings.resolve(data_dir=folder, model="bench"))
    store.check_vectors("bench", 8, create=True)
    store.identity.schema = schema  # the raw side writes and searches as a schema 3 collection did
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for first in range(0, len(bank), BATCH):
        rows = [
            item_row(f"{q.id}:text:0", rng.normal(size=8).tolist(), question_id=q.id, text=q.stem)
            for q in bank[first : first + BATCH]
        ]
        store.upsert(rows)
    return store, len(bank) / (time.perf_counter() - started)


def typed_ranking(store: ItemStore, query: str, ordered: bool) -> list[str]:
    """/search mode bm25 for typed words: BM25's candidates, ordered by coverage (``ordered``)."""
    if not ordered:
        return [hit["id"].split(":")[0] for hit in store.search_text([query], 10)[0]]
    from docarray import DocumentArray

    hits = store.search_text([query], TYPED_RERANK_POOL)[0]
    matches = order_by_coverage(DocumentArray(row_to_match(hit, "bm25") for hit in hits), query)
    return [m.id.split(":")[0] for m in matches[:10]]


def read_ranking(store: ItemStore, read: str, pool: int = 40) -> list[str]:
    """What photo search does with the text read: BM25's candidates by in-order similarity."""
    hits = store.search_text([read], pool)[0] if read.strip() else []
    hits.sort(key=lambda hit: sequence_similarity(read, hit["entity"].get("text", "")), reverse=True)
    return [hit["id"].split(":")[0] for hit in hits[:10]]


def rank_of(found: list[str], qid: str) -> int:
    return found.index(qid) if qid in found else 99


def recall(ranks: list[int], within: int) -> float:
    return sum(r < within for r in ranks) / len(ranks) if ranks else float("nan")


def ambiguous_ids(group: list[Question], bank: list[Question]) -> set[str]:
    """Questions whose typed query other questions hold word for word too (in their matching form)."""
    forms = [(q.id, match_form(q.stem)) for q in bank]
    found = set()
    for question in group:
        typed = match_form(typed_query(question))
        if sum(1 for qid, form in forms if typed in form and qid != question.id):
            found.add(question.id)
    return found


def typed_section(bank: list[Question], latex: list[Question], plain: list[Question], root: Path) -> dict:
    """Typed and simulated-read recall on both stores; the stores stay open for the photo section."""
    stores = {}
    results: dict[tuple[str, str, str], list[int]] = {}
    for side, schema in (("now", 5), ("raw", 3)):
        store, rate = build(str(root / side), bank, schema)
        stores[side] = store
        print(f"{side:>4}: {rate:,.0f} questions/s written through the store (BM25 field included)", flush=True)
        for label, group in (("latex", latex), ("plain", plain)):
            results[(side, label, "typed")] = [
                rank_of(typed_ranking(store, typed_query(q), ordered=side == "now"), q.id) for q in group
            ]
            results[(side, label, "read")] = [rank_of(read_ranking(store, read_query(q)), q.id) for q in group]
    print(f"\n{'class':<6} {'query':<6} {'n':>5} {'now r@1':>8} {'r@10':>6} {'raw r@1':>8} {'r@10':>6}")
    for label, group in (("latex", latex), ("plain", plain)):
        ambiguous = ambiguous_ids(group, bank)
        for kind in ("typed", "read"):
            rows = [("all", list(range(len(group))))]
            if kind == "typed":
                rows.append(("unambiguous", [i for i, q in enumerate(group) if q.id not in ambiguous]))
            for name, picked in rows:
                cells = []
                for side in ("now", "raw"):
                    ranks = [results[(side, label, kind)][i] for i in picked]
                    cells += [recall(ranks, 1), recall(ranks, 10)]
                what = f"{kind} ({name})" if kind == "typed" else kind
                print(
                    f"{label:<6} {what:<20} {len(picked):>5} {cells[0]:>8.3f} {cells[1]:>6.3f} {cells[2]:>8.3f} {cells[3]:>6.3f}"
                )
        print(f"{'':<6} ambiguous typed queries (held word for word by another question): {len(ambiguous)}")
    return stores


def photo_section(bank: list[Question], latex: list[Question], plain: list[Question], stores: dict, args) -> None:
    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_client.importer import import_bank
    from qbank_devtools.photos import DISTORTIONS
    from qbank_devtools.tiny_clip import build_tiny_clip
    from qbank_devtools.typeset import Typesetter

    rng = random.Random(7)
    half = args.photos // 2
    sample = [(q, "latex") for q in rng.sample(latex, min(half, len(latex)))]
    sample += [(q, "plain") for q in rng.sample(plain, min(args.photos - len(sample), len(plain)))]
    with tempfile.TemporaryDirectory(prefix="qbank-realbank-flow-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip")
        # rendered before the Flow starts, as bench/reader_flow.py does: Chromium typesetting the
        # next page between searches took the cores the searches were timed on
        kinds = [DISTORTIONS[number % len(DISTORTIONS)] for number in range(len(sample))]
        with Typesetter() as typesetter:
            photos = [
                typeset_photo(typesetter, question, kind, number)
                for number, ((question, _), kind) in enumerate(zip(sample, kinds, strict=True))
            ]
        with running_flow(model=model, data_dir=folder / "data", device="cpu") as urls:
            client = QbankClient(urls["grpc"])
            began = time.perf_counter()
            summary = import_bank(client, bank, batch_size=64, progress=False)
            rate = summary.imported / (time.perf_counter() - began)
            print(
                f"\nimported {summary.imported} questions through the Flow (tiny CLIP, qbank import's code): "
                f"{rate:,.0f} questions/s, {len(summary.failed)} failed",
                flush=True,
            )
            ranks: dict[tuple[str, str, str], list[int]] = {}
            latency: dict[str, list[float]] = {"latex": [], "plain": []}
            false_figures = {"latex": 0, "plain": 0}  # CMMLU has no figures: each one found costs a CLIP encode
            client.photo_search(photos[0], 10)  # warm: the first call pays for lazy set-up
            for number, ((question, label), kind, photo) in enumerate(zip(sample, kinds, photos, strict=True)):
                started = time.perf_counter()
                answer = client.photo_search(photo, 10)
                latency[label].append(time.perf_counter() - started)
                false_figures[label] += answer["figure_region"] is not None
                found = {
                    "now": [hit.question_id for hit in answer["questions"]],
                    "raw": read_ranking(stores["raw"], answer["text"]),
                }
                for side, ids in found.items():
                    for key in (kind, "every photo"):
                        ranks.setdefault((side, label, key), []).append(rank_of(ids, question.id))
                if (number + 1) % 50 == 0:
                    print(f"  {number + 1}/{len(sample)} photos", flush=True)
            client.close()
    print(f"\nphotos of typeset pages ({len(sample)}: {sum(lbl == 'latex' for _, lbl in sample)} with LaTeX)")
    print(f"{'class':<6} {'distortion':<12} {'n':>4} {'now r@1':>8} {'r@10':>6} {'raw r@1':>8} {'r@10':>6}")
    for label in ("latex", "plain"):
        for key in (*DISTORTIONS, "every photo"):
            now, raw = ranks.get(("now", label, key), []), ranks.get(("raw", label, key), [])
            if now:
                print(
                    f"{label:<6} {key:<12} {len(now):>4} {recall(now, 1):>8.3f} {recall(now, 10):>6.3f} "
                    f"{recall(raw, 1):>8.3f} {recall(raw, 10):>6.3f}"
                )
    for label, times in (*latency.items(), ("all", latency["latex"] + latency["plain"])):
        times.sort()
        if times:
            print(
                f"photo search through the Flow, {label} photos: p50 {statistics.median(times) * 1000:.0f} ms, "
                f"p90 {times[int(0.9 * (len(times) - 1))] * 1000:.0f} ms per photo"
                + (f", a figure found on {false_figures[label]} (none there)" if label in false_figures else "")
            )


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cmmlu", type=Path, help="the CMMLU data folder (dev/ and test/ of CSV files)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--queries", type=int, default=600, help="plain questions to query (every LaTeX one is)")
    parser.add_argument("--photos", type=int, default=300, help="typeset photos through the Flow (0: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bank = questions(args.cmmlu, args.limit)
    if not bank:
        print(f"no CMMLU questions under {args.cmmlu}", file=sys.stderr)
        return 2
    latex = [q for q in bank if has_latex(q)]
    others = [q for q in bank if not has_latex(q)]
    plain = others[:: max(1, len(others) // args.queries)]
    print(f"{len(bank)} questions ({len(latex)} with LaTeX); querying {len(latex)} LaTeX and {len(plain)} plain")
    with tempfile.TemporaryDirectory(prefix="qbank-realbank-") as root:
        stores = typed_section(bank, latex, plain, Path(root))
        if args.photos:
            photo_section(bank, latex, others, stores, args)
        for store in stores.values():
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
