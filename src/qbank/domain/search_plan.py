"""How one search is run, decided in one place from the request's parameters and the service's
default mode (QBANK_SEARCH_MODE): the encoder embeds only what the plan needs, the indexer runs it.

Before, the mode was resolved in the encoder and the indexer each: with QBANK_SEARCH_MODE=bm25 and no
mode in the request, the encoder still embedded every typed query, which the indexer never used
(tests/test_executors.py). Pure: parameters in, a plan out. A first step of issue 46: the typed
candidate pool, the rerank and the grouping are still decided where they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbank.domain.schema import OCR_SEARCH_MODE, query_text

# A photo's bm25 search fetches this many times the questions it returns: the candidates its
# in-order text ranking (rerank_by_text) chooses from. It lived in the client, so the search page,
# which sends a plain limit, ranked the same photo from 4x fewer candidates than the CLI.
PHOTO_CANDIDATES = 4
MAX_PHOTO_CANDIDATES = 1000  # as the client capped it: a search of 1,000 fetches no more


def photo_candidates(limit: int) -> int:
    """How many bm25 results a photo's text search (a photo's or each question's on a page) fetches
    for ``limit`` before its in-order text ranking cuts them to it."""
    return max(limit, min(limit * PHOTO_CANDIDATES, MAX_PHOTO_CANDIDATES))


@dataclass(frozen=True)
class SearchPlan:
    """``mode``: dense, bm25 or hybrid; ``photo``: image queries are photos of questions, searched
    by the text read from them (``ocr``)."""

    mode: str
    photo: bool = False

    @classmethod
    def of(cls, parameters: Mapping[str, Any], default_mode: str) -> SearchPlan:
        """The plan of a /search request whose parameters were checked (qbank.service.params): the
        request's mode, else the photo search's (bm25: the text read), else the service's default."""
        photo = bool(parameters.get("ocr"))
        mode = parameters.get("mode") or (OCR_SEARCH_MODE if photo else default_mode)
        return cls(mode=mode, photo=photo)

    def needs_vector(self, query: Any) -> bool:
        """Whether ``query`` (a Document) must be embedded: every query of a dense or hybrid search;
        in a bm25 search none, except a photo with no text read (searched by its CLIP vector instead)."""
        if self.mode != "bm25":
            return True
        return self.photo and not query_text(query)

    def candidates(self, limit: int) -> int:
        """How many results to fetch for ``limit`` before the photo's text ranking cuts them to it."""
        return photo_candidates(limit) if self.photo and self.mode == "bm25" else limit

    @property
    def needs_figure_vectors(self) -> bool:
        """A photo search embeds the figure crop the reader found, matched against the bank's figures."""
        return self.photo
