"""The store's server path against a real Milvus server: the Milvus 2.3.5 standalone (knowhere,
AUTOINDEX, real index builds), not Milvus Lite. What 2.3 lacks (full text, INVERTED scalar indexes)
is left out of new collections and refused by name; writes are read back at once and survive a crash."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import pytest
from clip_client import Client
from conftest import running_flow
from pymilvus import MilvusClient
from test_faults import eventually, fails_fast
from test_flow import call, count, question_items
from test_fulltext import many_items_per_question

from qbank.config import IndexerSettings
from qbank.domain.schema import item_row
from qbank.store import FullTextUnavailableError, ItemStore

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process


def rows(n: int, dim: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        vector = np.zeros(dim)
        vector[i % dim], vector[(i + 1) % dim] = 1.0, 0.1 * (i // dim)
        out.append(
            item_row(
                f"s{i}:text:0",
                (vector / np.linalg.norm(vector)).tolist(),
                question_id=f"s{i}",
                text=f"第{i}题",
                subject="数学" if i % 2 else "物理",
            )
        )
    return out


@pytest.fixture
def store(milvus_standalone):
    settings = IndexerSettings.resolve(milvus_uri=milvus_standalone.uri, collection=f"t_{uuid.uuid4().hex[:12]}")
    item_store = ItemStore(settings)
    yield item_store
    item_store.connection.call(MilvusClient.drop_collection, settings.collection)
    item_store.close()


def test_the_store_reads_the_servers_version_and_leaves_out_what_it_lacks(store, caplog):
    assert store.capabilities.version == "v2.3.5-lite"
    assert not store.capabilities.full_text and not store.capabilities.inverted_index
    with caplog.at_level(logging.WARNING, logger="qbank.store"):
        store.check_vectors("test-model", 8, create=True)
    assert "has no full-text search (it needs Milvus >= 2.5)" in caplog.text
    fields = {f["name"] for f in store.connection.call(MilvusClient.describe_collection, store.collection)["fields"]}
    assert "text_sparse" not in fields and "search_text" not in fields  # never a schema that does nothing
    described = store.describe()
    assert described["full_text"] is False and described["milvus_version"] == "v2.3.5-lite"
    assert described["index_type"] == "HNSW"


def index_params(store: ItemStore) -> dict:
    described = store.connection.call(MilvusClient.describe_index, store.collection, "embedding")
    params = described.get("params") or described
    return {"index_type": described["index_type"], **{k: str(v) for k, v in params.items()}}


def indexed(store: ItemStore) -> None:
    """Flush and wait until the server has indexed every row (below ~1,000 rows a segment is not indexed)."""
    store.connection.call(MilvusClient.flush, store.collection)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = store.connection.call(MilvusClient.describe_index, store.collection, "embedding")
        if described["pending_index_rows"] == 0 and described["indexed_rows"] >= described["total_rows"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"not indexed after 60 s: {described}")


def test_a_server_collection_gets_hnsw_with_the_chosen_parameters_and_ef_follows_the_limit(store):
    """HNSW M 16, efConstruction 200, searched at ef 32 (bench/server.py). Milvus refuses ef below
    the number of results on newer servers ("ef should be larger than k"; the 2.3.5 standalone
    widens it itself), so the store raises ef to each search's limit: 200 results from an index."""
    store.check_vectors("test-model", 8, create=True)
    assert index_params(store) | {"index_type": "HNSW", "M": "16", "efConstruction": "200"} == index_params(store)
    data = rows(1500)
    store.upsert(data)
    indexed(store)
    hits = store.search([data[0]["embedding"]], 200)[0]
    assert len(hits) == 200 and hits[0]["id"] == "s0:text:0"
    assert store._dense_params(200)["params"] == {"ef": 200} and store._dense_params(10)["params"] == {"ef": 32}


def test_index_and_search_parameters_come_from_the_settings(milvus_standalone):
    """QBANK_INDEX_TYPE/QBANK_INDEX_PARAMS/QBANK_SEARCH_PARAMS: IVF_FLAT with 4 lists searched with
    all 4 is exact, so every query finds numpy's top 10."""
    settings = IndexerSettings.resolve(
        milvus_uri=milvus_standalone.uri,
        collection=f"t_{uuid.uuid4().hex[:12]}",
        index_type="IVF_FLAT",
        index_params='{"nlist": 4}',
        search_params='{"nprobe": 4}',
    )
    store = ItemStore(settings)
    try:
        rng = np.random.default_rng(3)
        vectors = rng.standard_normal((2000, 16)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.check_vectors("test-model", 16, create=True)
        store.upsert([item_row(f"v{i}:text:0", v.tolist(), question_id=f"v{i}") for i, v in enumerate(vectors)])
        indexed(store)
        assert index_params(store) | {"index_type": "IVF_FLAT", "nlist": "4"} == index_params(store)
        queries = vectors[:20]
        truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
        found = store.search(queries.tolist(), 10)
        for hits, expected in zip(found, truth, strict=True):
            assert [h["id"] for h in hits] == [f"v{i}:text:0" for i in expected]
    finally:
        store.connection.call(MilvusClient.drop_collection, settings.collection)
        store.close()


def test_writes_are_read_back_at_once_filtered_updated_and_deleted(store):
    """Consistency Strong (QBANK_CONSISTENCY_LEVEL): with the server's default (Bounded) a count right
    after an upsert said 0."""
    store.check_vectors("test-model", 8, create=True)
    assert store.upsert(rows(20)) == 20
    assert store.count() == 20 and store.count('subject == "数学"') == 10
    hits = store.search([rows(20)[3]["embedding"]], 3, 'subject == "数学"')[0]
    assert hits[0]["id"] == "s3:text:0" and all(h["entity"]["subject"] == "数学" for h in hits)
    changed = dict(rows(20)[3], text="第3题（改）")
    store.upsert([changed])
    assert store.get(["s3:text:0"])[0]["text"] == "第3题（改）" and store.count() == 20
    assert store.delete('question_id in ["s3", "s4"]') == 2 and store.count() == 18
    assert [r["id"] for r in store.get(["s3:text:0", "s5:text:0"])] == ["s5:text:0"]


def test_full_text_requests_are_refused_naming_the_server_version(store):
    store.check_vectors("test-model", 8, create=True)
    store.upsert(rows(4))
    for search in (
        lambda: store.search_text(["第1题"], 3),
        lambda: store.search_hybrid([rows(4)[1]["embedding"]], ["第1题"], 3),
    ):
        with pytest.raises(FullTextUnavailableError, match=r"needs Milvus >= 2\.5, and this Milvus is v2\.3\.5-lite"):
            search()


def test_a_flow_on_the_server_indexes_searches_and_survives_a_crash_of_milvus(tiny_model, milvus_standalone):
    """The whole Flow on the server path: what /index acknowledged is counted and found at once, and
    survives SIGKILL of the server; the same Flow reconnects without a restart."""
    collection = f"flow_{uuid.uuid4().hex[:12]}"
    docs = question_items("srv", 4, "化学")
    with running_flow(model=tiny_model, milvus_uri=milvus_standalone.uri, collection=collection) as urls:
        client = Client(urls["grpc"])
        client.index(docs)
        assert count(urls["grpc"]) == 8  # read back at once
        found = client.search([docs[2].text], limit=1)[0].matches[0]
        assert found.id == docs[2].id
        assert call(urls["http"], "/exists", parameters={"ids": [docs[0].id, "nope"]})["existing"] == [docs[0].id]
        refused = call_error(urls["grpc"], {"mode": "bm25"}, docs[2].text)
        assert "needs Milvus >= 2.5, and this Milvus is v2.3.5-lite" in refused

        milvus_standalone.kill()
        message = fails_fast(lambda: count(urls["grpc"]), within=30)
        assert "Milvus at " + milvus_standalone.uri in message or "cannot connect to Milvus" in message
        milvus_standalone.start()
        assert eventually(lambda: count(urls["grpc"])) == 8  # acknowledged before the crash: all there
        assert client.search([docs[2].text], limit=1)[0].matches[0].id == docs[2].id
        client.index(question_items("srv-after", 1, "化学"))
        assert count(urls["grpc"]) == 10
        call(urls["grpc"], "/delete", parameters={"question_ids": [f"srv-{i}" for i in range(4)]})
        assert count(urls["grpc"]) == 2


def call_error(url: str, parameters: dict, text: str) -> str:
    from docarray import Document, DocumentArray
    from test_flow import jina_client

    started = time.monotonic()
    with pytest.raises(Exception) as error:
        jina_client(url).post("/search", DocumentArray([Document(text=text)]), parameters=parameters)
    assert time.monotonic() - started < 30
    return str(error.value)


def test_a_grouped_search_on_the_server_is_grouped_by_the_store(store):
    """The 2.3.5 server accepts group_by_field and ignores it (a question came back twice), so the
    store groups there: exactly ``limit`` distinct questions."""
    store.check_vectors("test-model", 8, create=True)
    rows_ = many_items_per_question()  # 4 close items per question
    store.upsert(rows_)
    assert not store.groups_in_milvus()
    native = store.connection.call(
        MilvusClient.search,
        store.collection,
        data=[rows_[0]["embedding"]],
        anns_field="embedding",
        limit=10,
        group_by_field="question_id",
        output_fields=["question_id"],
        consistency_level="Strong",
    )[0]
    assert len({h["entity"]["question_id"] for h in native}) < 10  # why the server is not trusted to group
    grouped = [h["entity"]["question_id"] for h in store.search([rows_[0]["embedding"]], 10, "", "question_id")[0]]
    assert len(grouped) == 10 and len(set(grouped)) == 10
