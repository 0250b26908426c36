"""Documents <-> rows and /delete selectors, without a Flow (qbank.service.mapping): what the indexer does
with a request short of Milvus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from docarray import Document, DocumentArray

from qbank.domain.schema import ItemError
from qbank.service.mapping import delete_expression, doc_to_row, merged_update, row_to_match, rows_from_docs
from qbank.service.params import ParameterError


def vec(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def test_a_document_becomes_a_row_with_scalar_columns_and_metadata():
    doc = Document(
        id="q1:image:0",
        uri="figures/q1.png",
        embedding=vec(1, 0, 0),
        tags={"question_id": "q1", "subject": "数学", "type": "解答题", "knowledge_points": ["三角形"]},
    )
    row = doc_to_row(doc, dim=3)
    assert row["id"] == "q1:image:0" and row["question_id"] == "q1" and row["modality"] == "image"
    assert (row["subject"], row["qtype"], row["image_uri"]) == ("数学", "解答题", "figures/q1.png")
    assert row["metadata"] == {"knowledge_points": ["三角形"]} and row["embedding"] == [1.0, 0.0, 0.0]
    text = doc_to_row(Document(id="lone", text="题", embedding=vec(0, 1, 0)), dim=None)
    assert text["modality"] == "text" and text["question_id"] == "lone"  # a lone item is its own question
    inline = doc_to_row(Document(id="d", uri="data:image/png;base64,AAAA", embedding=vec(1, 1, 0)), dim=3)
    assert inline["image_uri"] == "" and inline["modality"] == "image"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (Document(id="a'b", embedding=vec(1, 0, 0)), "single quote"),
        (Document(id="x", text="题"), "no embedding"),
        (Document(id="x", embedding=vec(1, 0)), "has 2 dimensions, the collection has 3"),
        (Document(id="x", embedding=vec(np.nan, 0, 0)), "NaN or infinite"),
        (Document(id="长" * 60, embedding=vec(1, 0, 0)), "has no tags.question_id"),
        (Document(id="x", embedding=vec(1, 0, 0), tags={"note": "注" * 30_000}), "QBANK_MAX_TAG_BYTES"),
        (Document(id="x", embedding=vec(1, 0, 0), tags={"subject": ["数学"]}), "'subject' must be a string"),
        (Document(id="x", embedding=vec(1, 0, 0), tags={"m": json.loads("[" * 34 + "]" * 34)}), "deeper than 32"),
    ],
)
def test_a_bad_document_is_refused_naming_item_and_field(doc, problem):
    with pytest.raises(ItemError, match=problem):
        doc_to_row(doc, dim=3)


def test_a_request_is_checked_whole_and_every_bad_item_named():
    docs = DocumentArray(
        [
            Document(id="good", embedding=vec(1, 0, 0)),
            Document(id="dup", embedding=vec(0, 1, 0)),
            Document(id="dup", embedding=vec(0, 0, 1)),
            Document(id="bad'", embedding=vec(0, 0, 1)),
            Document(id="short", embedding=vec(1, 0)),
        ]
    )
    with pytest.raises(ItemError) as error:
        rows_from_docs(docs, dim=None)
    message = str(error.value)
    assert message.startswith("3 of 5 items rejected, nothing written")
    assert "duplicate id" in message and "single quote" in message and "has 2 dimensions" in message
    assert "'good'" not in message
    assert [r["id"] for r in rows_from_docs(docs[:2], dim=None)] == ["good", "dup"]


def test_a_row_comes_back_as_a_match_with_the_mode_score_and_score():
    hit = {"id": "q1:text:0", "distance": 0.8, "entity": {"text": "题", "modality": "text", "question_id": "q1"}}
    dense = row_to_match(hit)
    assert dense.scores["score"].value == pytest.approx(0.8) and dense.scores["similarity"].value == pytest.approx(0.8)
    assert dense.scores["cosine"].value == pytest.approx(0.2)  # clip-as-service's distance
    assert dense.tags == {"question_id": "q1", "modality": "text"} and dense.text == "题"
    bm25 = row_to_match({**hit, "distance": 7.5}, "bm25")
    assert bm25.scores["bm25"].value == 7.5 and "cosine" not in bm25.scores


def test_an_update_merges_tags_and_keeps_or_replaces_content():
    old = {
        "id": "q1:text:0",
        "question_id": "q1",
        "modality": "text",
        "text": "旧题干",
        "image_uri": "",
        "subject": "数学",
        "grade": "初二",
        "qtype": "",
        "metadata": {"source": "2024"},
        "embedding": [1.0, 0.0, 0.0],
    }
    tags_only = merged_update(Document(id="q1:text:0", tags={"grade": "初三"}), old)
    assert tags_only.text == "旧题干" and list(tags_only.embedding) == [1.0, 0.0, 0.0]
    assert tags_only.tags == {"source": "2024", "subject": "数学", "grade": "初三", "question_id": "q1"}
    content = merged_update(Document(id="q1:text:0", text="新题干", embedding=vec(0, 1, 0)), old)
    assert content.text == "新题干" and list(content.embedding) == [0.0, 1.0, 0.0] and content.tags["grade"] == "初二"
    assert doc_to_row(tags_only, dim=3)["metadata"] == {"source": "2024"}  # nothing but the old metadata


def test_delete_selectors_are_escaped_combined_and_never_empty():
    assert delete_expression(['a"b'], [], None) == '(id in ["a\\"b"])'
    assert delete_expression([], ["12"], {"subject": "数学"}) == '(question_id in ["12"]) or (subject == "数学")'
    for empty in (([], [], None), ([], [], {})):
        with pytest.raises(ParameterError, match="refusing to delete everything"):
            delete_expression(*empty)
    with pytest.raises(ParameterError, match="/delete: question_id 'x\\\\ny' contains the control character"):
        delete_expression([], ["x\ny"], None)


def test_rerank_by_text_follows_the_order_of_the_words():
    from docarray import Document, DocumentArray

    from qbank.service.ranking import rerank_by_text

    read = "某班有男生89人,女生45人,男生人数占全班人数的几分之几?"  # as OCR returns it (half-width)
    twins = DocumentArray(
        [
            Document(id="swapped", text="某班有男生45人，女生89人，男生人数占全班人数的几分之几？"),
            Document(id="same", text="某班有男生89人，女生45人，男生人数占全班人数的几分之几？"),
        ]
    )
    ranked = rerank_by_text(twins, read)
    assert [m.id for m in ranked] == ["same", "swapped"]
    assert ranked[0].scores["score"].value == 1.0 > ranked[1].scores["text_similarity"].value
