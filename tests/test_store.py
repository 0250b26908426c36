"""Store layer on a real Milvus Lite file: schema, upsert, filters (injection-safe), guard, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from qbank.config import IndexerSettings
from qbank.domain.filters import FilterError, build_filter, ids_filter
from qbank.domain.schema import item_row
from qbank.store import ItemStore, ModelMismatchError


def rows(n: int, dim: int = 8, subject: str = "数学", seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        item_row(
            f"q{i}:text:0",
            vectors[i].tolist(),
            question_id=f"q{i}",
            text=f"题{i}",
            subject=subject if i % 2 == 0 else '物"理',
            grade="初二",
            qtype="选择题",
            metadata={"n": i},
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path):
    item_store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    yield item_store
    item_store.close()


def test_filters_are_built_from_escaped_literals_only():
    assert (
        build_filter({"subject": "数学", "grade": ["初二", "初三"]})
        == 'subject == "数学" and grade in ["初二", "初三"]'
    )
    assert build_filter({"type": "选择题"}) == 'qtype == "选择题"'
    assert build_filter({"subject": 'a" or id != "'}) == 'subject == "a\\" or id != \\""'
    assert ids_filter(['x"y']) == 'id in ["x\\"y"]'
    for bad, message in [
        ({"answer": "A"}, "unknown filter field"),
        ({"subject": {"$ne": 1}}, "strings or numbers"),
        ({"subject": []}, "empty"),
        ({"modality": "video"}, "modality"),
        ({"subject": "a\nb"}, "control characters"),
        ("subject == 1", "must be an object"),
    ]:
        with pytest.raises(FilterError, match=message):
            build_filter(bad)


@pytest.mark.service
def test_upsert_search_filter_delete_on_milvus_lite(store):
    assert store.count() == 0 and store.search([[0.0] * 8], 5) == [[]]  # nothing yet, no collection
    data = rows(10)
    assert store.check_vectors("m", 8, create=True)
    assert store.upsert(data) == 10
    assert store.upsert(data[:4]) == 4
    assert store.count() == 10  # upsert by id: no duplicates
    hits = store.search([data[2]["embedding"]], 3, build_filter({"subject": "数学"}))[0]
    assert hits[0]["id"] == "q2:text:0" and hits[0]["distance"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["entity"]["metadata"] == {"n": 2}
    assert all(h["entity"]["subject"] == "数学" for h in hits)
    quoted = store.search([data[1]["embedding"]], 10, build_filter({"subject": '物"理'}))[0]
    assert len(quoted) == 5 and quoted[0]["id"] == "q1:text:0"
    injected = store.search([data[1]["embedding"]], 10, build_filter({"subject": '数学" or subject != "'}))[0]
    assert injected == []
    assert store.delete(ids_filter(["q0:text:0", "q1:text:0", "missing"])) == 2
    assert store.count() == 8 and store.count(build_filter({"subject": "数学"})) == 4


@pytest.mark.service
def test_a_failed_write_reloads_milvus_lite_and_keeps_what_is_on_disk(store):
    """Both writes (upsert and delete) go through one failure path: Milvus Lite is restarted, so
    what requests see afterwards is what is in the file."""
    from qbank.store import StoreError

    store.check_vectors("m", 8, create=True)
    store.upsert(rows(4))
    with pytest.raises(StoreError, match="nothing was deleted: Milvus delete failed"):
        store.delete("id in [")  # an expression Milvus refuses: a delete that fails
    assert store.lite.restarts == 1 and store.count() == 4
    # A refused upsert of a stored id: Lite deletes before it inserts, so the stored version is put back.
    bad = rows(1)[0] | {"embedding": [0.0] * 7, "text": "新"}  # Milvus refuses a 7-d vector in an 8-d field
    with pytest.raises(StoreError, match="nothing of this request was stored: Milvus upsert failed"):
        store.upsert([bad])
    assert store.lite.restarts == 2 and store.count() == 4
    (kept,) = store.get(["q0:text:0"], with_vectors=True)
    assert kept["text"] == "题0" and kept["metadata"] == {"n": 0}
    assert kept["embedding"] == pytest.approx(rows(1)[0]["embedding"], abs=1e-6)
    store.close()  # and so it is in the file
    reopened = ItemStore(IndexerSettings.resolve(data_dir=str(store.lite.db_file.parent)))
    assert reopened.count() == 4 and reopened.get(["q0:text:0"])[0]["text"] == "题0"
    reopened.close()


@pytest.mark.service
def test_vectors_of_another_model_or_dimension_are_refused(store):
    store.check_vectors("model-a", 8, create=True)
    store.upsert(rows(3))
    with pytest.raises(ModelMismatchError, match="8-d vectors of model 'model-a'.*16-d vectors of model 'model-a'"):
        store.check_vectors("model-a", 16, create=True)
    with pytest.raises(ModelMismatchError, match="model 'model-b'"):
        store.check_vectors("model-b", 8, create=True)
    assert store.count() == 3


@pytest.mark.service
def test_data_and_model_identity_survive_reopening(tmp_path):
    settings = IndexerSettings.resolve(data_dir=str(tmp_path))
    first = ItemStore(settings)
    first.check_vectors("model-a", 8, create=True)
    first.upsert(rows(6))
    first.close()
    second = ItemStore(settings)
    try:
        assert (second.model, second.dim, second.count()) == ("model-a", 8, 6)
        with pytest.raises(ModelMismatchError):
            second.check_vectors("model-b", 8, create=False)
        assert second.describe()["count"] == 6
    finally:
        second.close()


@pytest.mark.service
def test_default_index_is_exact_on_milvus_lite_and_hnsw_on_a_server(tmp_path):
    """Lite 2.5 never builds IVF/AUTOINDEX over inserted rows (recall@10 0.10 measured on random
    vectors), so a Lite collection gets FLAT: every query finds exactly numpy's top 10."""
    assert IndexerSettings.resolve(milvus_uri="http://milvus:19530").vector_index == "HNSW"
    assert IndexerSettings.resolve(milvus_uri="http://milvus:19530", index_type="IVF_SQ8").vector_index == "IVF_SQ8"
    store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        data = rows(3000, dim=64, seed=5)
        store.check_vectors("test-model", 64, create=True)
        store.upsert(data)
        assert store.describe()["index_type"] == "FLAT"
        vectors = np.array([r["embedding"] for r in data], dtype=np.float32)
        queries = np.random.default_rng(9).normal(size=(20, 64)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        found = store.search(queries.tolist(), 10)
        for hits, truth in zip(found, exact, strict=True):
            assert [h["id"] for h in hits] == [data[i]["id"] for i in truth]
    finally:
        store.close()
    reopened = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        assert reopened.describe()["index_type"] == "FLAT"  # read back from Milvus, not from settings
    finally:
        reopened.close()
