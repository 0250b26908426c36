"""Full text beside the CLIP vectors, on a real Milvus Lite file: BM25 with the Chinese analyzer,
hybrid search (RRF or weighted), filters in every mode, near-duplicate groups, the evaluation set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qbank.config import IndexerSettings
from qbank.domain.duplicates import text_similarity
from qbank.domain.filters import build_filter
from qbank.domain.schema import item_row
from qbank.store import FullTextUnavailableError, ItemStore
from qbank.store.duplicates import find_near_duplicates
from qbank_devtools.evaluate import VARIANTS, evaluate, generate_eval_set

STEMS = {
    "tri": ("数学", "如图，在等腰三角形ABC中，AB=AC，∠A=40°，求∠B的度数。"),
    "circle": ("数学", "如图，圆O的半径为3，求圆的周长和面积。"),
    "rect": ("数学", "长方形的长为8厘米，宽为5厘米，求它的周长和面积。"),
    "ohm": ("物理", "如图所示电路中，电源电压为6V，电阻R=3Ω，求通过电阻的电流。"),
    "series": ("物理", "两个电阻R1=4Ω、R2=6Ω串联，求电路的总电阻。"),
    "salt": ("化学", "将10克氯化钠溶于90克水中，求所得溶液的溶质质量分数。"),
}


def make_rows(stems: dict[str, tuple[str, str]], dim: int = 8, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for qid, (subject, text) in stems.items():
        vector = rng.normal(size=dim)
        embedding = (vector / np.linalg.norm(vector)).tolist()
        out.append(item_row(f"{qid}:text:0", embedding, question_id=qid, text=text, subject=subject))
    return out


@pytest.fixture
def store(tmp_path):
    item_store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    item_store.check_vectors("test-model", 8, create=True)
    item_store.upsert(make_rows(STEMS))
    yield item_store
    item_store.close()


def ids(hits: list[dict]) -> list[str]:
    return [h["id"].split(":")[0] for h in hits]


@pytest.mark.service
def test_chinese_analyzer_finds_a_word_inside_a_longer_stem(store):
    assert store.full_text and store.analyzer == "chinese"
    # "三角形" sits inside "等腰三角形ABC中" with no space around it: jieba must split it out.
    assert ids(store.search_text(["三角形"], 5)[0]) == ["tri"]
    assert set(ids(store.search_text(["电阻"], 5)[0])) == {"ohm", "series"}
    assert ids(store.search_text(["氯化钠溶液"], 5)[0])[0] == "salt"
    assert store.search_text(["光合作用"], 5)[0] == []  # no shared word, no match


@pytest.mark.service
def test_bm25_scores_are_positive_and_best_first(store):
    hits = store.search_text(["求圆的周长和面积"], 6)[0]
    scores = [h["distance"] for h in hits]
    assert ids(hits)[0] == "circle"
    assert all(s > 0 for s in scores) and scores == sorted(scores, reverse=True)


@pytest.mark.service
def test_hybrid_is_the_rrf_of_the_dense_and_bm25_lists(store):
    rows = make_rows(STEMS)
    query_vector = rows[3]["embedding"]  # "ohm"'s vector, with a query text that favours others
    query_text = "求长方形和圆的周长和面积"
    limit = 6
    dense = ids(store.search([query_vector], limit)[0])
    sparse = ids(store.search_text([query_text], limit)[0])
    k = 60
    expected: dict[str, float] = {}
    for ranking in (dense, sparse):
        for rank, qid in enumerate(ranking, 1):
            expected[qid] = expected.get(qid, 0.0) + 1.0 / (k + rank)
    hybrid = store.search_hybrid([query_vector], [query_text], limit, rrf_k=k)[0]
    got = {qid: h["distance"] for qid, h in zip(ids(hybrid), hybrid, strict=True)}
    assert got.keys() == expected.keys()
    for qid, score in expected.items():
        assert got[qid] == pytest.approx(score, abs=1e-6)
    assert [h["distance"] for h in hybrid] == sorted(got.values(), reverse=True)
    # Another constant changes the fused scores accordingly.
    other = store.search_hybrid([query_vector], [query_text], limit, rrf_k=1)[0]
    assert max(h["distance"] for h in other) > max(got.values())


@pytest.mark.service
def test_weighted_fusion_with_all_weight_on_one_side_follows_that_side(store):
    rows = make_rows(STEMS)
    vector, text = rows[0]["embedding"], "电阻 电流 电路"
    dense = ids(store.search([vector], 6)[0])
    only_dense = ids(store.search_hybrid([vector], [text], 6, weights=(1.0, 0.0))[0])
    assert only_dense[: len(dense)] == dense
    sparse = ids(store.search_text([text], 6)[0])
    only_sparse = ids(store.search_hybrid([vector], [text], 6, weights=(0.0, 1.0))[0])
    assert only_sparse[: len(sparse)] == sparse


@pytest.mark.service
def test_filters_apply_in_every_mode(store):
    expr = build_filter({"subject": "物理"})
    vector = make_rows(STEMS)[0]["embedding"]
    for hits in (
        store.search([vector], 6, expr)[0],
        store.search_text(["求周长和面积 电阻"], 6, expr)[0],
        store.search_hybrid([vector], ["求周长和面积 电阻"], 6, expr)[0],
    ):
        assert hits and set(ids(hits)) <= {"ohm", "series"}


def earlier_collection(tmp_path, schema_version: int, rows: list[dict] | None = None) -> None:
    """The item collection as earlier versions made it, by hand: schema 1 (no full text), schema 2
    (BM25 over `text` itself, analysed by the chinese analyzer) or schema 3 (BM25 over `search_text`,
    the folded raw text), with ``rows`` in it."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from qbank.domain.schema import ID_MAX_LENGTH, SCALAR_FIELDS, TEXT_MAX_BYTES, URI_MAX_LENGTH

    full_text = schema_version >= 2
    recorded = {"model": "test-model", "dim": 8, "schema": schema_version}
    if full_text:
        recorded["text_analyzer"] = "chinese"
    client = MilvusClient(str(tmp_path / "milvus_lite.db"))
    schema = MilvusClient.create_schema(auto_id=False, description=json.dumps(recorded))
    schema.add_field("id", DataType.VARCHAR, max_length=ID_MAX_LENGTH, is_primary=True)
    for name, length in SCALAR_FIELDS.items():
        schema.add_field(name, DataType.VARCHAR, max_length=length)
    analysed = {"enable_analyzer": True, "analyzer_params": {"type": "chinese"}} if full_text else {}
    bm25_input = "search_text" if schema_version >= 3 else "text"
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, **({} if schema_version >= 3 else analysed))
    if schema_version >= 3:
        schema.add_field("search_text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, **analysed)
    if full_text:
        schema.add_field("text_sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("image_uri", DataType.VARCHAR, max_length=URI_MAX_LENGTH)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=8)
    index = MilvusClient.prepare_index_params()
    index.add_index("embedding", index_type="AUTOINDEX", metric_type="COSINE")
    if full_text:
        schema.add_function(Function("text_bm25", FunctionType.BM25, [bm25_input], ["text_sparse"]))
        index.add_index("text_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection("qbank_items", schema=schema, index_params=index)
    if rows:
        client.insert("qbank_items", rows)
    client.close()


@pytest.mark.service
def test_a_collection_from_before_full_text_says_how_to_get_it(tmp_path):
    """Schema 1 (no analyzer, no BM25 field): dense keeps working, bm25/hybrid explain themselves."""
    earlier_collection(tmp_path, schema_version=1, rows=make_rows(STEMS))

    old = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        assert not old.full_text
        assert ids(old.search([make_rows(STEMS)[2]["embedding"]], 1)[0]) == ["rect"]
        with pytest.raises(FullTextUnavailableError, match="bm25.*new collection \\(QBANK_COLLECTION\\)"):
            old.search_text(["三角形"], 5)
        with pytest.raises(FullTextUnavailableError, match="'hybrid'"):
            old.search_hybrid([make_rows(STEMS)[0]["embedding"]], ["三角形"], 5)
    finally:
        old.close()


def test_text_similarity_ignores_punctuation_width_and_spaces():
    a = "将10克氯化钠溶于90克水中，求所得溶液的溶质质量分数。"
    assert text_similarity(a, "将１０克氯化钠溶于９０克水中, 求所得溶液的溶质质量分数.") == 1.0
    assert 0.6 < text_similarity(a, "将20克氯化钠溶于80克水中，求所得溶液的溶质质量分数。") < 1.0
    assert text_similarity(a, "两个电阻R1=4Ω、R2=6Ω串联，求电路的总电阻。") < 0.2


@pytest.mark.service
def test_near_duplicates_group_copies_and_leave_distinct_questions_alone(tmp_path):
    stems = dict(STEMS)
    stems["salt-numbers"] = ("化学", "将20克氯化钠溶于80克水中，求所得溶液的溶质质量分数。")
    stems["salt-pasted"] = ("化学", "将１０克氯化钠溶于９０克水中, 求所得溶液的溶质质量分数.")
    stems["series-copy"] = ("物理", "两个电阻R1=4Ω、R2=6Ω串联，求电路的总电阻。")
    rows = make_rows(stems)
    by_id = {r["question_id"]: r for r in rows}
    by_id["series-copy"]["embedding"] = by_id["series"]["embedding"]  # an exact copy encodes the same
    store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        store.check_vectors("test-model", 8, create=True)
        store.upsert(rows)
        found = find_near_duplicates(store, by="text", threshold=0.6)
        groups = [sorted(q["question_id"] for q in g["questions"]) for g in found["groups"]]
        assert groups == [["salt", "salt-numbers", "salt-pasted"], ["series", "series-copy"]]
        assert found["scanned"] == len(stems) and not found["truncated"]
        assert found["groups"][1]["max_similarity"] == 1.0
        # A stricter threshold keeps only the exact and the pasted copies.
        strict = find_near_duplicates(store, by="text", threshold=0.99)
        assert [sorted(q["question_id"] for q in g["questions"]) for g in strict["groups"]] == [
            ["salt", "salt-pasted"],
            ["series", "series-copy"],
        ]
        dense = find_near_duplicates(store, by="dense", threshold=0.999)
        assert [sorted(q["question_id"] for q in g["questions"]) for g in dense["groups"]] == [
            ["series", "series-copy"]
        ]
        only_physics = find_near_duplicates(store, build_filter({"subject": "物理"}), by="text", threshold=0.6)
        assert only_physics["scanned"] == 3 and len(only_physics["groups"]) == 1
        capped = find_near_duplicates(store, by="text", threshold=0.6, max_items=2)
        assert capped["scanned"] == 2 and capped["truncated"]
    finally:
        store.close()


def test_the_generated_evaluation_set_is_labelled_and_distinct():
    questions, queries = generate_eval_set(120, seed=5)
    assert len({q["text"] for q in questions}) == 120
    assert len(queries) == 4 * 120 and {q["variant"] for q in queries} == set(VARIANTS)
    texts = {q["id"]: q["text"] for q in questions}
    for query in queries:
        assert query["text"] != texts[query["target"]]  # every variant really differs from its source


@pytest.mark.service
def test_evaluation_bm25_meets_its_target_on_the_generated_set(tiny_model, tmp_path):
    from qbank.model.clip import ClipEncoder

    encoder = ClipEncoder.load(str(tiny_model), device="cpu")
    settings = IndexerSettings.resolve(data_dir=str(tmp_path), collection="qbank_eval")
    report = evaluate(encoder, settings, n_questions=120, seed=5)
    bm25 = report["modes"]["bm25"]
    assert bm25["recall@10"] >= 0.9, bm25
    assert bm25["recall@1"] <= bm25["recall@10"] and 0 < bm25["mrr"] <= 1
    assert set(report["modes"]) == {"dense", "bm25", "hybrid"}
    assert set(bm25["by_variant"]) == set(VARIANTS)


NEAR_TWINS = {  # one template, numbers changed: BM25 must find the stem a photo's reading names
    f"f{a}-{b}": ("数学", f"函数f(x)=x²-{a}x+{b}的图象与x轴交于A、B两点，求线段AB的长。")
    for a in range(20, 35)
    for b in range(90, 100)
}
OCR_READING = "函数f(x)=x2-23x+93的图象与x轴交于A、B两点,求线段AB的长。"  # what PP-OCRv6 read of f23-93


@pytest.mark.service
def test_bm25_matches_a_stem_in_the_form_ocr_reads_it(tmp_path):
    """Schema 3: BM25 reads the stem's matching form (x² and x2 meet), the display text is kept."""
    item_store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        item_store.check_vectors("test-model", 8, create=True)
        item_store.upsert(make_rows(NEAR_TWINS))
        assert item_store.describe()["text_search_form"] is True
        assert ids(item_store.search_text([OCR_READING], 3)[0])[0] == "f23-93"
        assert item_store.get(["f23-93:text:0"])[0]["text"] == NEAR_TWINS["f23-93"][1]  # stored as given
    finally:
        item_store.close()


@pytest.mark.service
def test_a_schema_2_collection_keeps_bm25_over_its_raw_text(tmp_path):
    """A collection made before the matching form (BM25 over `text` itself) is searched with the
    query as given; there, the OCR reading's x2 is not the stem's x², which is what schema 3 fixes."""
    earlier_collection(tmp_path, schema_version=2)

    old = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        assert old.full_text and old.describe()["text_search_form"] is False
        old.check_vectors("test-model", 8, create=False)
        old.upsert(make_rows({**STEMS, **NEAR_TWINS}))  # written without a search_text field
        assert ids(old.search_text(["三角形"], 5)[0]) == ["tri"]
        assert ids(old.search_text([NEAR_TWINS["f23-93"][1]], 1)[0]) == ["f23-93"]
        assert "f23-93" not in ids(old.search_text([OCR_READING], 10)[0])  # x2 is not x²: lost
    finally:
        old.close()


def many_items_per_question(questions: int = 30, items: int = 4, dim: int = 8) -> list[dict]:
    rng = np.random.default_rng(11)
    out = []
    for q in range(questions):
        base = rng.normal(size=dim)  # a question's items lie close together, as its stem and variants do
        for k in range(items):
            vector = base + 0.05 * rng.normal(size=dim)
            out.append(
                item_row(
                    f"g{q}:text:{k}",
                    (vector / np.linalg.norm(vector)).tolist(),
                    question_id=f"g{q}",
                    text=f"三角形的面积 第{q}题 第{k}种问法",
                    subject="数学",
                )
            )
    return out


@pytest.mark.service
@pytest.mark.parametrize("mode", ["dense", "bm25", "rrf", "weighted"])
def test_a_grouped_search_returns_exactly_limit_questions_in_every_mode(tmp_path, mode):
    """group_by question_id: Milvus Lite groups dense and BM25 itself (group_by_field); hybrid is
    grouped by the store (Lite 2.5.1 returned a question twice from a grouped hybrid search)."""
    item_store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        item_store.check_vectors("test-model", 8, create=True)
        rows = many_items_per_question()
        item_store.upsert(rows)
        assert item_store.groups_in_milvus()
        vector, text = rows[0]["embedding"], "三角形的面积"
        search = {
            "dense": lambda group_by: item_store.search([vector], 10, "", group_by),
            "bm25": lambda group_by: item_store.search_text([text], 10, "", group_by),
            "rrf": lambda group_by: item_store.search_hybrid([vector], [text], 10, group_by=group_by),
            "weighted": lambda group_by: item_store.search_hybrid(
                [vector], [text], 10, weights=(0.5, 0.5), group_by=group_by
            ),
        }[mode]
        grouped = [h["entity"]["question_id"] for h in search("question_id")[0]]
        assert len(grouped) == 10 and len(set(grouped)) == 10
        ungrouped = [h["entity"]["question_id"] for h in search(None)[0]]
        assert len(ungrouped) == 10 and len(set(ungrouped)) < 10  # 4 items per question: repeats
        if mode == "dense":
            assert grouped[0] == "g0"  # the best item's question first
    finally:
        item_store.close()
