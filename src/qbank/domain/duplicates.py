"""Near-duplicate questions: groups of stems above a similarity threshold (cleaning a bank).

Two ways to call two stems near-duplicates, both recalled through Milvus and checked pairwise:
``text`` recalls candidates with BM25 and keeps pairs whose character-bigram Jaccard similarity
(punctuation, spaces and width ignored) reaches the threshold: it catches copies with changed
numbers or punctuation and needs no trained model. ``dense`` keeps pairs whose CLIP cosine
similarity reaches the threshold: paraphrases too, with a real model.

Pure: :class:`NearDuplicates` groups what it is given; the scan that feeds it each stored stem and
its nearest neighbours drives the store (:mod:`qbank.store.duplicates`).
"""

from __future__ import annotations

import functools
from typing import Any

from qbank.domain.reading import reading_form
from qbank.domain.schema import DUPLICATE_MEASURES
from qbank.domain.text import normalise

BY = DUPLICATE_MEASURES


@functools.lru_cache(maxsize=4096)
def bigrams(text: str) -> frozenset[str]:
    """The character bigrams of a stem as it reads; cached, so a stem compared with each of its
    neighbours, and they with theirs, is read once (a hostile stem read per pair took 30-55 s)."""
    clean = normalise(reading_form(text))  # LaTeX and HTML as they read
    return frozenset({clean[i : i + 2] for i in range(len(clean) - 1)} or ({clean} if clean else set()))


def text_similarity(a: str, b: str) -> float:
    """Jaccard similarity of character bigrams, in [0, 1]."""
    first, second = bigrams(a), bigrams(b)
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)


class _Groups:
    """Union-find over question ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


class NearDuplicates:
    """Groups of near-duplicate questions, built from each scanned stem's neighbours: a pair that
    reaches ``threshold`` joins the two questions' groups."""

    def __init__(self, by: str = "text", threshold: float = 0.8):
        if by not in BY:
            raise ValueError(f"'by' must be one of {BY}, got {by!r}")
        self.by, self.threshold = by, threshold
        self._groups = _Groups()
        self._edges: dict[tuple[str, str], float] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def add(self, row: dict[str, Any], hits: list[dict[str, Any]]) -> None:
        """One stored stem (``row``: question_id, text, subject, grade, qtype) and its nearest
        neighbours as the store returns them (``distance`` the cosine for ``dense``)."""
        self._info[row["question_id"]] = row
        for hit in hits:
            entity = hit.get("entity", hit)
            other = entity.get("question_id") or hit["id"]
            if other == row["question_id"]:
                continue
            if self.by == "dense":
                score = float(hit["distance"])
            else:
                score = text_similarity(row["text"], entity.get("text", ""))
            if score >= self.threshold:
                self._groups.union(row["question_id"], other)
                self._info.setdefault(other, entity)
                pair = (row["question_id"], other) if row["question_id"] < other else (other, row["question_id"])
                self._edges[pair] = max(self._edges.get(pair, 0.0), score)

    def result(self, scanned: int, truncated: bool) -> dict[str, Any]:
        """The groups, largest first: each group's questions and its highest and lowest similarity."""
        by_root: dict[str, tuple[set[str], list[float]]] = {}
        for (a, b), score in self._edges.items():
            qids, scores = by_root.setdefault(self._groups.find(a), (set(), []))
            qids.update((a, b))
            scores.append(score)
        groups = [
            {
                "questions": [self._question(qid) for qid in sorted(qids)],
                "max_similarity": round(max(scores), 4),
                "min_similarity": round(min(scores), 4),
            }
            for qids, scores in by_root.values()
        ]
        groups.sort(key=lambda g: (-len(g["questions"]), -g["max_similarity"], g["questions"][0]["question_id"]))
        return {
            "by": self.by,
            "threshold": self.threshold,
            "scanned": scanned,
            "truncated": truncated,
            "groups": groups,
        }

    def _question(self, qid: str) -> dict[str, Any]:
        info = self._info[qid]
        return {
            "question_id": qid,
            "text": info.get("text", ""),
            "subject": info.get("subject", ""),
            "grade": info.get("grade", ""),
            "type": info.get("qtype", ""),
        }
