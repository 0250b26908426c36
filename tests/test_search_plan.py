"""One search plan (qbank.domain.search_plan), without a Flow: the same parameters give the same
mode, pool and ranking wherever they are read (the encoder, the indexer), and the rankings it names
(qbank.service.ranking) order candidates by the words compared."""

from __future__ import annotations

import pytest
from docarray import Document, DocumentArray

from qbank.domain.search_plan import (
    COVERAGE,
    IN_ORDER,
    MAX_PHOTO_CANDIDATES,
    TYPED_RERANK_POOL,
    PlanError,
    SearchPlan,
    word_characters,
)
from qbank.service.ranking import ranked


@pytest.mark.parametrize(
    ("parameters", "default", "mode", "ranking", "pool_of_10"),
    [
        ({}, "dense", "dense", None, 10),
        ({}, "bm25", "bm25", COVERAGE, TYPED_RERANK_POOL),
        ({"mode": "hybrid"}, "bm25", "hybrid", None, 10),
        ({"ocr": True}, "dense", "bm25", IN_ORDER, 40),  # a photo is searched by the text read
        ({"ocr": True, "mode": "hybrid"}, "dense", "hybrid", None, 10),
        ({"mode": "bm25", "search_in": "analysis"}, "dense", "bm25", COVERAGE, TYPED_RERANK_POOL),
    ],
)
def test_the_plan_of_a_request_decides_mode_ranking_and_candidate_pool(parameters, default, mode, ranking, pool_of_10):
    plan = SearchPlan.of(parameters, default)
    assert (plan.mode, plan.ranking, plan.candidates(10)) == (mode, ranking, pool_of_10)


def test_pools_are_never_smaller_than_the_limit_and_a_photos_is_bounded():
    typed, photo = SearchPlan.of({}, "bm25"), SearchPlan.of({"ocr": True}, "dense")
    assert typed.candidates(100) == 100 and photo.candidates(1000) == 1000
    assert photo.candidates(400) == MAX_PHOTO_CANDIDATES and SearchPlan.page_question().candidates(3) == 12


def test_a_bm25_plan_embeds_no_typed_query_and_only_a_photo_with_no_text_read():
    typed = SearchPlan.of({}, "bm25")
    assert not typed.needs_vector(Document(text="三角形"))
    photo = SearchPlan.of({"ocr": True}, "dense")
    assert not photo.needs_vector(Document(tags={"ocr_text": "三角形的内角和"}))
    assert photo.needs_vector(Document(tags={"ocr_text": ""})) and photo.needs_figure_vectors
    assert SearchPlan.of({}, "dense").needs_vector(Document(text="三角形"))


def test_a_photos_figure_is_matched_when_asked_or_when_its_words_are_too_few_to_tell_its_question():
    photo = SearchPlan.of({"ocr": True}, "bm25")
    assert word_characters("如图，求∠1的度数。") == 7  # letters and digits: no punctuation, no symbols
    assert photo.searches_figure("如图，求∠1的度数。", 24)
    assert not photo.searches_figure("已知等腰三角形的两边长分别为3和7，求这个三角形的周长。", 24)
    assert not photo.searches_figure("", 0)  # 0: only when asked
    assert SearchPlan.of({"ocr": True, "figures": True}, "bm25").searches_figure("一段很长的题干" * 10, 24)
    assert not SearchPlan.of({"ocr": True, "figures": False}, "bm25").searches_figure("如图", 24)
    assert not SearchPlan.of({}, "bm25").searches_figure("如图", 24)  # a typed search has no photo
    with pytest.raises(PlanError, match="'figures'.*'ocr'"):
        SearchPlan.of({"figures": True}, "bm25")


@pytest.mark.parametrize("parameters", [{"search_in": "analysis"}, {"search_in": "analysis", "ocr": True}])
def test_searching_the_analyses_needs_a_bm25_search_of_typed_words(parameters):
    with pytest.raises(PlanError, match="search_in"):
        SearchPlan.of(parameters, "dense")


def test_the_rankings_order_by_the_words_in_order_and_cut_to_the_limit():
    candidates = DocumentArray(
        [
            Document(id="swapped", text="已知 a=3, b=5, 求 a+b 的值"),
            Document(id="same", text="已知 a=5, b=3, 求 a+b 的值"),
            Document(id="other", text="求三角形的周长"),
        ]
    )
    read = "已知a=5,b=3,求a+b的值"
    by_photo = ranked(SearchPlan.of({"ocr": True}, "dense"), candidates, read, None, 2)
    assert [m.id for m in by_photo] == ["same", "swapped"]
    typed = ranked(SearchPlan.of({}, "bm25"), candidates, "三角形的周长", None, 1)
    assert [m.id for m in typed] == ["other"]
    dense = SearchPlan.of({}, "dense")
    assert [m.id for m in ranked(dense, candidates, read, None, 2)] == ["swapped", "same"]  # the store's order
