"""Near-duplicate questions: groups of stems above a similarity threshold (cleaning a bank).

Two ways to call two stems near-duplicates, both recalled through Milvus and checked pairwise:
``text`` recalls candidates with BM25 and keeps pairs whose character-bigram Jaccard similarity
(punctuation, spaces and width ignored) reaches the threshold: it catches copies with changed
numbers or punctuation and needs no trained model. ``dense`` keeps pairs whose CLIP cosine
similarity reaches the threshold: paraphrases too, with a real model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from qbank.domain.reading import reading_form
from qbank.domain.schema import DUPLICATE_MEASURES, TEXT
from qbank.domain.text import normalise

if TYPE_CHECKING:
    from qbank.store import ItemStore

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


def find_near_duplicates(
    store: ItemStore,
    expr: str = "",
    by: str = "text",
    threshold: float = 0.8,
    neighbours: int = 10,
    max_items: int = 100_000,
) -> dict[str, Any]:
    """Scan the text items matching ``expr`` (at most ``max_items``) and group near-duplicates.

    Each item's ``neighbours`` nearest stems (same filter) are the candidates; a candidate pair
    that reaches ``threshold`` joins the two questions' groups.
    """
    if by not in BY:
        raise ValueError(f"'by' must be one of {BY}, got {by!r}")
    text_expr = f'modality == "{TEXT}"' + (f" and ({expr})" if expr else "")
    fields = ["id", "question_id", "text", "subject", "grade", "qtype"] + (["embedding"] if by == "dense" else [])
    groups, edges, info = _Groups(), {}, {}
    scanned, truncated = 0, False
    for batch in store.iterate(text_expr, fields):
        if scanned + len(batch) > max_items:
            batch, truncated = batch[: max_items - scanned], True
        for row in batch:
            info[row["question_id"]] = row
        if by == "dense":
            results = store.search([row["embedding"] for row in batch], neighbours + 1, text_expr)
        else:
            results = store.search_text([row["text"] or " " for row in batch], neighbours + 1, text_expr)
        for row, hits in zip(batch, results, strict=True):
            for hit in hits:
                entity = hit.get("entity", hit)
                other = entity.get("question_id") or hit["id"]
                if other == row["question_id"]:
                    continue
                score = (
                    float(hit["distance"]) if by == "dense" else text_similarity(row["text"], entity.get("text", ""))
                )
                if score >= threshold:
                    groups.union(row["question_id"], other)
                    info.setdefault(other, entity)
                    pair = tuple(sorted((row["question_id"], other)))
                    edges[pair] = max(edges.get(pair, 0.0), score)
        scanned += len(batch)
        if truncated:
            break
    # One pass over the kept pairs: each group's questions and similarities, by union-find root.
    by_root: dict[str, tuple[set[str], list[float]]] = {}
    for (a, b), score in edges.items():
        qids, scores = by_root.setdefault(groups.find(a), (set(), []))
        qids.update((a, b))
        scores.append(score)
    result = []
    for qids, scores in by_root.values():
        result.append(
            {
                "questions": [
                    {
                        "question_id": qid,
                        "text": info[qid].get("text", ""),
                        "subject": info[qid].get("subject", ""),
                        "grade": info[qid].get("grade", ""),
                        "type": info[qid].get("qtype", ""),
                    }
                    for qid in sorted(qids)
                ],
                "max_similarity": round(max(scores), 4),
                "min_similarity": round(min(scores), 4),
            }
        )
    result.sort(key=lambda g: (-len(g["questions"]), -g["max_similarity"], g["questions"][0]["question_id"]))
    return {"by": by, "threshold": threshold, "scanned": scanned, "truncated": truncated, "groups": result}
