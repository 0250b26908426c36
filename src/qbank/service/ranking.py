"""The rankings a search plan names (qbank.domain.search_plan: IN_ORDER, COVERAGE), run over the
store's candidates: each match scored by how the words compared appear in it, in order, then cut to
the request's limit. The comparisons themselves are qbank.domain.text's (form_similarity,
form_coverage)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from docarray import Document, DocumentArray

from qbank.domain.schema import ANALYSIS
from qbank.domain.search_plan import COVERAGE, IN_ORDER, SearchPlan
from qbank.domain.text import form_coverage, form_similarity, match_form

# Coverage reads a typed query's first this many characters: a typed query is a fragment of a page
# (bench/realbank.py types 40); the cap bounds the in-order comparison's cost per candidate.
TYPED_QUERY_CHARS = 64


def ranked(
    plan: SearchPlan, matches: DocumentArray, text: str, forms: Mapping[str, str] | None, limit: int
) -> DocumentArray:
    """``matches`` (the store's candidates for ``text``) in the plan's order, at most ``limit``."""
    if plan.ranking == IN_ORDER:
        matches = rerank_by_text(matches, text, forms)
    elif plan.ranking == COVERAGE:
        matches = order_by_coverage(matches, text, analysis_text if plan.part == ANALYSIS else stem_text, forms)
    return matches[:limit]


def rerank_by_text(matches: DocumentArray, text: str, forms: Mapping[str, str] | None = None) -> DocumentArray:
    """A photo's BM25 candidates ordered by how much of the text read they match in order
    (``sequence_similarity``, punctuation and width ignored): ``scores['text_similarity']``, which
    becomes ``scores['score']``; the BM25 score stays in ``scores['bm25']``. Measured on
    bench/photo.py: every photo BM25 did not rank first was a tie with a twin whose two numbers are
    swapped (the same bag of words; the same character-bigram set too), the text read right.
    ``forms``: the matches' match forms by id, as the store keeps them (``ItemStore.search_text``'s
    ``match_forms``); a match without one is formed here."""
    query = match_form(text)
    for match in matches:
        similarity = form_similarity(query, _form_of(match, stem_text, forms))
        match.scores["text_similarity"].value = similarity
        match.scores["score"].value = similarity
    return DocumentArray(sorted(matches, key=lambda m: m.scores["text_similarity"].value, reverse=True))


def stem_text(match: Document) -> str:
    """A match's stored text (a stem with its options), what a typed search is compared with."""
    return match.text or ""


def analysis_text(match: Document) -> str:
    """A match's analysis (worked solution), kept in its tags, for ordering a search in the analyses."""
    return str(match.tags.get("analysis") or "")


def _form_of(match: Document, text_of: Callable[[Document], str], forms: Mapping[str, str] | None) -> str:
    stored = forms.get(match.id) if forms else None
    return stored if stored is not None else match_form(text_of(match))


def order_by_coverage(
    matches: DocumentArray,
    text: str,
    text_of: Callable[[Document], str] = stem_text,
    forms: Mapping[str, str] | None = None,
) -> DocumentArray:
    """A typed query's BM25 candidates ordered by how much of the query they hold in order, then
    how tightly (``text_coverage``: ``scores['text_coverage']``, which becomes ``scores['score']``;
    equal ones keep BM25's order, its score stays in ``scores['bm25']``). Measured on CMMLU
    (bench/realbank.py): typed recall@1 on LaTeX questions 0.883 by BM25 alone, 0.955 so ordered;
    every miss left was a query that other questions also hold word for word. ``text_of``: the text each match is
    compared with (its stem, or its analysis for a search in the analyses); ``forms`` as in
    :func:`rerank_by_text`, of that same text."""
    query = match_form(text[:TYPED_QUERY_CHARS])
    keys = {}
    for match in matches:
        coverage, density = form_coverage(query, _form_of(match, text_of, forms))
        keys[match.id] = (round(coverage, 2), round(density, 2))
        match.scores["text_coverage"].value = coverage
        match.scores["score"].value = coverage
    return DocumentArray(sorted(matches, key=lambda m: keys[m.id], reverse=True))
