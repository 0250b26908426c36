"""How many letters and digits must a photo's text read hold for photo search to find its question
first? The measured reason for QBANK_OCR_FIGURE_SEARCH_BELOW: under it, a photo's figure is matched
too (its words may not tell the question); over it, the words alone find it and the figure's CLIP
encode is left out.

Perfect reads of CMMLU questions (the reading form of stem and options, as bench/realbank.py
simulates them) cut to a window of N letters and digits from a random start (what a photo of part of
a question, or a short stem, gives), searched as photo search does (BM25 candidates ranked by
in-order similarity, realbank.read_ranking) among all 11,917 questions on Milvus Lite.

    .venv/bin/python bench/words_needed.py ../shared/data/cmmlu --questions 400
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from realbank import build, questions, rank_of, read_query, read_ranking  # noqa: E402


def window(read: str, letters: int, rng: random.Random) -> str:
    """``letters`` letters and digits of ``read`` (with what lies between them) from a random start."""
    positions = [i for i, character in enumerate(read) if character.isalnum()]
    if len(positions) <= letters:
        return read
    start = rng.randrange(0, len(positions) - letters)
    return read[positions[start] : positions[start + letters - 1] + 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(HERE.parent.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--questions", type=int, default=400, help="questions sampled as photos")
    parser.add_argument("--lengths", default="6,10,16,24,32,48", help="letters and digits read")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    bank = questions(Path(args.cmmlu), None)
    rng = random.Random(args.seed)
    sample = rng.sample(bank, args.questions)
    with tempfile.TemporaryDirectory(prefix="qbank-words-") as tmp:
        store, _ = build(str(Path(tmp) / "bank"), bank, 5)
        print(f"{len(sample)} CMMLU questions among {len(bank)}, a random window of their perfect read each")
        for letters in (int(n) for n in args.lengths.split(",")):
            ranks = [rank_of(read_ranking(store, window(read_query(q), letters, rng)), q.id) for q in sample]
            first = sum(r < 1 for r in ranks) / len(ranks)
            top10 = sum(r < 10 for r in ranks) / len(ranks)
            print(
                f"{letters:>3} letters and digits read: found first {first:.3f}, in the top 10 {top10:.3f}", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
