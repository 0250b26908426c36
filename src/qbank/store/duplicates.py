"""The near-duplicate scan: every stored stem matching a filter, with its nearest neighbours from the
store, fed to the pure grouping (:class:`qbank.domain.duplicates.NearDuplicates`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qbank.domain.duplicates import NearDuplicates
from qbank.domain.schema import TEXT

if TYPE_CHECKING:
    from qbank.store.items import ItemStore


def find_near_duplicates(
    store: ItemStore,
    expr: str = "",
    by: str = "text",
    threshold: float = 0.8,
    neighbours: int = 10,
    max_items: int = 100_000,
) -> dict[str, Any]:
    """Scan the text items matching ``expr`` (at most ``max_items``) and group near-duplicates.

    Each item's ``neighbours`` nearest stems (same filter) are the candidates: BM25 for ``text``,
    the CLIP vectors for ``dense``.
    """
    grouping = NearDuplicates(by, threshold)
    text_expr = f'modality == "{TEXT}"' + (f" and ({expr})" if expr else "")
    fields = ["id", "question_id", "text", "subject", "grade", "qtype"] + (["embedding"] if by == "dense" else [])
    scanned, truncated = 0, False
    for batch in store.iterate(text_expr, fields):
        if scanned + len(batch) > max_items:
            batch, truncated = batch[: max_items - scanned], True
        if by == "dense":
            results = store.search([row["embedding"] for row in batch], neighbours + 1, text_expr)
        else:
            results = store.search_text([row["text"] or " " for row in batch], neighbours + 1, text_expr)
        for row, hits in zip(batch, results, strict=True):
            grouping.add(row, hits)
        scanned += len(batch)
        if truncated:
            break
    return grouping.result(scanned, truncated)
