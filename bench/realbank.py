"""A real question bank, as published: CMMLU's 11,917 Chinese exam questions (360 with LaTeX).

    .venv/bin/python bench/realbank.py ../shared/data/cmmlu            # all of it
    .venv/bin/python bench/realbank.py ../shared/data/cmmlu --limit 3000

CMMLU is non-commercial (CC BY-NC-SA 4.0): the folder is an argument and nothing of it is copied
into the repository. Each question (stem and its options A-D, as stored) is written twice through
the store on Milvus Lite, side by side:

- ``reading``: today's store (schema 4): BM25 over the matching form of the reading form
  (qbank.domain.reading: LaTeX and HTML read as text);
- ``raw``: the earlier behaviour (schema 3): BM25 over the matching form of the raw LaTeX source.

Queries, each searched by BM25 (top 10); a reading of the whole page is then ranked by in-order
similarity as photo search does (qbank.service.mapping.rerank_by_text):

- ``typed``: what a teacher types from the printed page: the reading form of the stem's first 40
  characters, without spaces and without the ``^ _ { }`` a keyboard user leaves out;
- ``read``: what OCR returns for a typeset page, simulated from the reading form of the whole stem
  with its options (spaces, ``^ _ { }`` and the stacking of fractions lost: ``x^2`` -> ``x2``,
  ``{a_n}`` -> ``an``). Photos typeset with KaTeX in Chromium are the next step (not here yet).

It prints recall@1 and @10 per class (LaTeX / plain) and query kind for both sides, and the import
rate (questions/s) of each side.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qbank.config import IndexerSettings
from qbank.domain.reading import reading_form
from qbank.domain.schema import item_row
from qbank.domain.text import sequence_similarity
from qbank.store.items import ItemStore

KEYBOARD_DROPS = re.compile(r"[\s^_{}]")
BATCH = 500


def questions(folder: Path, limit: int | None) -> list[dict]:
    """CMMLU's questions as stored: id, stem, options, subject, whether the stem holds LaTeX."""
    found = []
    for path in sorted(folder.glob("*/*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                stem = (row.get("Question") or "").strip()
                if not stem:
                    continue
                options = [row.get(key) or "" for key in "ABCD"]
                qid = f"{path.parent.name}-{path.stem}-{row.get('') or len(found)}"
                found.append({"id": qid, "stem": stem, "options": options, "latex": "$" in stem})
    return found[:limit] if limit else found


def stored_text(question: dict) -> str:
    """The stem and its options, the way a bank stores a question's searchable text."""
    return question["stem"] + "\n" + "\n".join(f"{k}. {o}" for k, o in zip("ABCD", question["options"], strict=True))


def typed_query(question: dict) -> str:
    return KEYBOARD_DROPS.sub("", reading_form(question["stem"]))[:40]


def read_query(question: dict) -> str:
    return KEYBOARD_DROPS.sub("", reading_form(stored_text(question)))


def build(folder: str, bank: list[dict], schema: int) -> tuple[ItemStore, float]:
    store = ItemStore(IndexerSettings.resolve(data_dir=folder, model="bench"))
    store.check_vectors("bench", 8, create=True)
    store.identity.schema = schema  # the raw side writes and searches as a schema 3 collection did
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for first in range(0, len(bank), BATCH):
        rows = [
            item_row(f"{q['id']}:text:0", rng.normal(size=8).tolist(), question_id=q["id"], text=stored_text(q))
            for q in bank[first : first + BATCH]
        ]
        store.upsert(rows)
    return store, len(bank) / (time.perf_counter() - started)


def ranked(store: ItemStore, query: str, in_order: bool) -> list[str]:
    """BM25's top 10 (a typed query: what /search mode bm25 returns), reordered by in-order
    similarity for a reading of the whole page (what photo search does)."""
    hits = store.search_text([query], 10)[0]
    if in_order:
        hits.sort(key=lambda hit: sequence_similarity(query, hit["entity"].get("text", "")), reverse=True)
    return [hit["id"].split(":")[0] for hit in hits]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cmmlu", type=Path, help="the CMMLU data folder (dev/ and test/ of CSV files)")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--queries", type=int, default=600, help="plain questions to query (every LaTeX one is)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bank = questions(args.cmmlu, args.limit)
    if not bank:
        print(f"no CMMLU questions under {args.cmmlu}", file=sys.stderr)
        return 2
    latex = [q for q in bank if q["latex"]]
    plain = [q for q in bank if not q["latex"]][:: max(1, (len(bank) - len(latex)) // args.queries)]
    print(f"{len(bank)} questions ({len(latex)} with LaTeX); querying {len(latex)} LaTeX and {len(plain)} plain")
    results: dict[tuple[str, str, str], list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="qbank-realbank-") as root:
        for side, schema in (("reading", 4), ("raw", 3)):
            store, rate = build(str(Path(root) / side), bank, schema)
            print(f"{side:>8}: imported {rate:,.0f} questions/s through the store (BM25 field included)")
            for label, group in (("latex", latex), ("plain", plain)):
                for kind, make in (("typed", typed_query), ("read", read_query)):
                    ranks = []
                    for question in group:
                        found = ranked(store, make(question), in_order=kind == "read")
                        ranks.append(found.index(question["id"]) if question["id"] in found else 99)
                    results[(side, label, kind)] = ranks
            store.close()
    print(f"\n{'class':<6} {'query':<6} {'reading r@1':>12} {'r@10':>6} {'raw r@1':>9} {'r@10':>6}")
    for label in ("latex", "plain"):
        for kind in ("typed", "read"):
            cells = []
            for side in ("reading", "raw"):
                ranks = results[(side, label, kind)]
                cells += [sum(r == 0 for r in ranks) / len(ranks), sum(r < 10 for r in ranks) / len(ranks)]
            print(f"{label:<6} {kind:<6} {cells[0]:>12.3f} {cells[1]:>6.3f} {cells[2]:>9.3f} {cells[3]:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
