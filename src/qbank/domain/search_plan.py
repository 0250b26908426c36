"""How one search is run, decided in one place from the request's parameters and the service's
default mode (QBANK_SEARCH_MODE): the encoder embeds only what the plan needs, the indexer runs it.

Before, the mode was resolved in the encoder and the indexer each: with QBANK_SEARCH_MODE=bm25 and no
mode in the request, the encoder still embedded every typed query, which the indexer never used
(tests/test_executors.py); the photo candidate pool lived in the client. Pure: parameters in, a plan
out: the mode, whether query vectors are needed, how many candidates the store returns and which
ranking (qbank.service.ranking) orders them before the cut to ``limit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbank.domain.schema import OCR_SEARCH_MODE, STEM, query_text

# A typed bm25 search orders this many of BM25's best (or ``limit``, when more) by in-order coverage.
TYPED_RERANK_POOL = 30
# The rankings a plan names (qbank.service.ranking runs them): a photo's text read, by how much of
# it a candidate matches in order; typed words, by how much of them a candidate holds in order.
IN_ORDER, COVERAGE = "in order", "coverage"


class PlanError(ValueError):
    """The request's parameters ask for a search that cannot be run (named in the message)."""


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
    part: str = STEM  # what bm25 reads: the stems, or the analyses (search_in)
    figures: bool | None = None  # the request's ``figures``: match a photo's figure (None: when its words are few)

    @classmethod
    def of(cls, parameters: Mapping[str, Any], default_mode: str) -> SearchPlan:
        """The plan of a /search request whose parameters were checked (qbank.service.params): the
        request's mode, else the photo search's (bm25: the text read), else the service's default.
        PlanError when ``search_in`` is not the stems in a search that does not read words alone."""
        photo = bool(parameters.get("ocr"))
        mode = parameters.get("mode") or (OCR_SEARCH_MODE if photo else default_mode)
        part = parameters.get("search_in", STEM)
        if part != STEM and (photo or mode != "bm25"):
            raise PlanError(
                f"parameter 'search_in' {part!r} searches the analyses by their words: it needs mode 'bm25' "
                "(and no 'ocr'); the stems are what dense, hybrid and photo searches read"
            )
        figures = parameters.get("figures")
        if figures is not None and not photo:
            raise PlanError(
                f"parameter 'figures' {figures!r} matches the figure found on a photo of a question: it needs "
                "'ocr': true (a figure sent as a query is matched by its CLIP vector without it)"
            )
        return cls(mode=mode, photo=photo, part=part, figures=figures)

    @classmethod
    def page_question(cls) -> SearchPlan:
        """The plan of each question found on a page photo: its own words read, by bm25."""
        return cls(mode="bm25", photo=True)

    @property
    def ranking(self) -> str | None:
        """How the store's candidates are ordered before the cut to ``limit``: a bm25 search by the
        words in them (IN_ORDER for text read from a photo, COVERAGE for typed words); None keeps the
        store's order (dense, hybrid)."""
        if self.mode != "bm25":
            return None
        return IN_ORDER if self.photo else COVERAGE

    def needs_vector(self, query: Any) -> bool:
        """Whether ``query`` (a Document) must be embedded: every query of a dense or hybrid search;
        in a bm25 search none, except a photo with no text read (searched by its CLIP vector instead)."""
        if self.mode != "bm25":
            return True
        return self.photo and not query_text(query)

    def candidates(self, limit: int) -> int:
        """How many results to fetch for ``limit`` before the plan's ranking cuts them to it."""
        if self.ranking == IN_ORDER:
            return photo_candidates(limit)
        if self.ranking == COVERAGE:
            return max(limit, TYPED_RERANK_POOL)
        return limit

    @property
    def needs_figure_vectors(self) -> bool:
        """A photo search embeds the figure crops the reader passed on (searches_figure), matched
        against the bank's figures."""
        return self.photo

    def searches_figure(self, words_searched: str, below: int) -> bool:
        """Whether the figure found on a photo is matched against the bank's figures: when the request
        asks (``figures``), else when the words searched for the photo hold fewer than ``below``
        letters and digits (QBANK_OCR_FIGURE_SEARCH_BELOW): too few to tell its question, which its
        figure may. A photo whose words find its question is not made to wait for a figure match it
        does not need: a full-size CN-CLIP's image encode costs 250-310 ms of 2 CPU cores, about as
        long as reading the photo (docs/photo-search.md)."""
        if not self.photo:
            return False
        if self.figures is not None:
            return self.figures
        return word_characters(words_searched) < below


def word_characters(text: str) -> int:
    """Letters and digits in ``text`` (Chinese characters are letters); spaces, punctuation and
    symbols do not count: "如图，求∠1的度数。" has 7."""
    return sum(1 for character in text if character.isalnum())
