"""The data contract through the real Flow: wrong types, hostile ids, limits, deletes, endpoints,
and a disk that fills up during an import.

Each test sends what an adversarial or careless user would, and checks both the answer (an error
naming the parameter, item or limit) and the store (nothing of a refused request is there).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import running_flow
from docarray import Document, DocumentArray
from test_params import ACCEPTS, HOSTILE_IDS, SAMPLES

from qbank.config import Limits
from qbank.service.params import KNOWN_ENDPOINTS, endpoint_parameters
from qbank_client import QbankClient, read_bank
from qbank_client.importer import import_bank
from qbank_client.transport import ServerError

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process

KEPT = ["1", "2", "12", "13"]  # question ids whose stems must survive every refused request


def stem(qid: str, subject: str = "数学") -> Document:
    return Document(
        id=f"{qid}:text:0", text=f"第{qid}题：求三角形的面积", tags={"question_id": qid, "subject": subject}
    )


def vector_item(item_id: str, seed: int, **tags) -> Document:
    """An item that carries its own vector (the encoder passes it through): distinct per seed."""
    rng = np.random.default_rng(seed)
    return Document(id=item_id, embedding=rng.normal(size=16).astype(np.float32), tags=tags)


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    settings = dict(model=tiny_model, data_dir=tmp_path_factory.mktemp("contract"), max_delete=5)
    with running_flow(**settings, max_image_pixels=10_000) as urls:
        QbankClient(urls["grpc"]).index(DocumentArray(stem(q) for q in KEPT))
        yield urls


def kept_intact(url: str) -> None:
    client = QbankClient(url)
    assert client.count() == len(KEPT)
    assert client.existing([f"{q}:text:0" for q in KEPT]) == {f"{q}:text:0" for q in KEPT}


def wrong_values() -> list[tuple[str, str, object]]:
    """Every declared parameter of every endpoint, each with a wrong value (kinds rotate)."""
    cases, kinds = [], list(SAMPLES)
    for endpoint in KNOWN_ENDPOINTS:
        for n, name in enumerate(sorted(endpoint_parameters(endpoint, Limits()))):
            wrong = [k for k in kinds if k not in ACCEPTS[name]]
            cases.append((endpoint, name, SAMPLES[wrong[n % len(wrong)]]))
    return cases


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_parameter_with_a_wrong_type_is_refused_and_changes_nothing(flow, protocol):
    client = QbankClient(flow[protocol])
    cases = wrong_values()
    assert len(cases) > 40
    for endpoint, name, value in cases:
        docs = DocumentArray([stem("99")]) if endpoint in ("/encode", "/index", "/update", "/search") else None
        with pytest.raises(ServerError, match=f"parameter '{name}'"):
            client.post(endpoint, docs, {name: value})
    kept_intact(flow["grpc"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_string_where_a_list_belongs_deletes_nothing(flow, protocol):
    client = QbankClient(flow[protocol])
    with pytest.raises(ServerError, match="parameter 'question_ids' must be a list of strings, got the string '12'"):
        client.post("/delete", parameters={"question_ids": "12"})
    with pytest.raises(ServerError, match="parameter 'ids' must be a list of strings"):
        client.post("/delete", parameters={"ids": "13:text:0"})
    with pytest.raises(ServerError, match="parameter 'ids' must be a list of strings"):
        client.post("/exists", parameters={"ids": "1:text:0"})
    kept_intact(flow["grpc"])
    assert client.post("/delete", parameters={"question_ids": ["12"]})[1] == {"deleted": 1}
    assert client.existing([f"{q}:text:0" for q in KEPT]) == {"1:text:0", "2:text:0", "13:text:0"}
    client.index(DocumentArray([stem("12")]))
    kept_intact(flow["grpc"])


def test_hostile_ids_round_trip_through_index_search_exists_update_and_delete(flow):
    client = QbankClient(flow["grpc"])
    http = QbankClient(flow["http"])
    question = {v: (v if len(v.encode()) <= 128 and v not in KEPT else f"h-{n}") for n, v in enumerate(HOSTILE_IDS)}
    docs = DocumentArray(vector_item(v, n, question_id=question[v], subject="物理") for n, v in enumerate(HOSTILE_IDS))
    client.index(docs)
    assert client.count() == len(KEPT) + len(HOSTILE_IDS)
    assert http.existing(list(HOSTILE_IDS) + ["zz' or '1'='1", "missing"]) == set(HOSTILE_IDS)

    for n, value in enumerate(HOSTILE_IDS):  # its own vector finds it; its question_id filters to it alone
        query = DocumentArray([vector_item("query", n)])
        found, _ = client.post("/search", query, {"limit": 1, "filter": {"subject": "物理"}})
        assert found[0].matches[0].id == value
        only, _ = client.post("/search", query, {"limit": 5, "filter": {"question_id": question[value]}})
        assert [m.id for m in only[0].matches] == [value]

    updates = DocumentArray(Document(id=v, tags={"grade": "高一", "note": v}) for v in HOSTILE_IDS)
    http.post("/update", updates)
    assert client.count(grade="高一") == len(HOSTILE_IDS)
    found, _ = client.post("/search", DocumentArray([vector_item("q", 0)]), {"limit": 1, "filter": {"grade": "高一"}})
    assert found[0].matches[0].tags["note"] == HOSTILE_IDS[0]

    deleted = http.post("/delete", parameters={"ids": list(HOSTILE_IDS), "allow_many": True})[1]
    assert deleted == {"deleted": len(HOSTILE_IDS)}
    assert client.existing(list(HOSTILE_IDS)) == set()
    kept_intact(flow["grpc"])


@pytest.mark.parametrize(
    ("bad_id", "rule"),
    [
        ("a'b", "single quote"),
        ("zz'] or id != 'zz' or id in ['zz", "single quote"),
        ("line\nbreak", "control character"),
        ("x" * 257, "is 257 bytes"),
    ],
)
def test_ids_that_cannot_round_trip_are_refused_up_front_and_nothing_is_written(flow, bad_id, rule):
    docs = DocumentArray([vector_item("fine-1", 1, question_id="fine"), vector_item(bad_id, 2, question_id="bad")])
    with pytest.raises(ServerError, match=f"item id .*{rule}"):
        QbankClient(flow["grpc"]).index(docs)
    kept_intact(flow["grpc"])


def test_an_item_without_question_id_needs_an_id_that_can_stand_for_one(flow):
    client = QbankClient(flow["grpc"])
    long_id = "长" * 60  # 180 bytes: a valid item id, too long for a question id
    with pytest.raises(ServerError, match="has no tags.question_id, and its id .180 bytes. cannot stand for one"):
        client.index(DocumentArray([vector_item(long_id, 3)]))
    client.index(DocumentArray([vector_item(long_id, 3, question_id="short")]))
    http = QbankClient(flow["http"])
    http.post("/update", DocumentArray([Document(id=long_id, tags={"subject": "化学"})]))
    assert client.count(subject="化学") == 1
    assert client.post("/delete", parameters={"ids": [long_id]})[1] == {"deleted": 1}
    kept_intact(flow["grpc"])


def test_every_size_has_a_named_limit(flow):
    client = QbankClient(flow["grpc"])
    with pytest.raises(
        ServerError, match=r"tags are \d+ bytes as JSON, over the limit of 65536 \(QBANK_MAX_TAG_BYTES\)"
    ):
        client.index(DocumentArray([vector_item("big-tags", 4, question_id="big", note="注" * 30_000)]))
    many = DocumentArray(Document(id=f"many-{i}", text=f"题{i}") for i in range(1001))
    with pytest.raises(ServerError, match="1001 documents, over the limit of 1000 .*QBANK_MAX_DOCS_PER_REQUEST"):
        client.index(many)
    queries = DocumentArray(vector_item(f"q{i}", i) for i in range(11))
    with pytest.raises(ServerError, match="11 queries x limit 1000 = 11000.*QBANK_MAX_RESULTS_PER_REQUEST"):
        client.post("/search", queries, {"limit": 1000})
    tensor = Document(id="big-tensor", tensor=np.zeros((200, 200, 3), dtype=np.uint8))
    with pytest.raises(ServerError, match="200x200 pixels is over the limit of 10000 pixels .QBANK_MAX_IMAGE_PIXELS"):
        client.index(DocumentArray([tensor]))
    with pytest.raises(ServerError, match="over the limit of 10000 .QBANK_MAX_IDS_PER_REQUEST"):
        client.post("/exists", parameters={"ids": ["x"] * 10_001})
    kept_intact(flow["grpc"])


def test_deletes_need_a_selector_and_a_flag_above_the_limit(flow):
    client = QbankClient(flow["grpc"])
    for selector, reason in (
        ({}, "needs docs, 'ids', 'question_ids' or a non-empty 'filter'"),
        ({"filter": {}}, "needs docs, 'ids', 'question_ids' or a non-empty 'filter'"),
        ({"filter": []}, "parameter 'filter' must be an object"),
        ({"ids": []}, "needs docs"),
    ):
        with pytest.raises(ServerError, match=reason):
            client.post("/delete", parameters=selector)
    client.index(DocumentArray(stem(f"chem-{i}", "化学") for i in range(8)))
    with pytest.raises(ServerError, match="would remove 8 items, more than QBANK_MAX_DELETE=5: nothing deleted"):
        client.post("/delete", parameters={"filter": {"subject": "化学"}})
    assert client.count(subject="化学") == 8
    assert client.post("/delete", parameters={"filter": {"subject": "化学"}, "allow_many": True})[1] == {"deleted": 8}
    kept_intact(flow["grpc"])


@pytest.mark.parametrize("protocol", ["grpc", "http", "websocket"])
def test_a_misspelt_endpoint_is_an_error_and_root_encodes(flow, protocol):
    client = QbankClient(flow[protocol])
    for endpoint in ("/Index", "indexx", "/delete_all"):
        with pytest.raises(ServerError, match="unknown endpoint: this service serves /encode, /rank, /index"):
            client.post(endpoint, DocumentArray([stem("77")]))
    docs, _ = client.post("/", DocumentArray([Document(text="三角形")]))
    assert docs[0].embedding is not None and len(docs[0].embedding) == 16
    kept_intact(flow["grpc"])


# -- a disk that fills up ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs (root only: CI and these machines run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def write_bank(path: Path, n: int, chars: int) -> Path:
    """n questions with distinct stems of ``chars`` characters (about 3 bytes each in UTF-8)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            text = f"第{i}题：" + "".join(chr(0x4E00 + (i * 7 + k) % 20000) for k in range(chars))
            out.write(json.dumps({"id": f"disk-{i}", "stem": text, "subject": "数学"}, ensure_ascii=False) + "\n")
    return path


def test_a_full_disk_refuses_writes_before_milvus_lite_loses_them_and_a_restart_keeps_every_acknowledged_item(
    tiny_model, small_disk, tmp_path
):
    """Requests of realistic size (500 stems of about 2.6 KB) into a data folder on a 32 MiB disk.
    Milvus Lite 2.5.1 acknowledges writes it cannot store once the disk is full (36,000 of 40,000
    acknowledged items were gone after a restart): the store refuses a write that would leave less
    than QBANK_MIN_FREE_DISK_BYTES free, so every acknowledged item is there after a restart."""
    total = 2000
    bank = write_bank(tmp_path / "bank.jsonl", total, 860)
    ids = [f"disk-{i}:text:0" for i in range(total)]
    settings = dict(model=tiny_model, data_dir=small_disk / "data", min_free_disk_bytes=4 * 1024 * 1024)
    with running_flow(**settings) as urls:
        client = QbankClient(urls["grpc"])
        first = import_bank(client, read_bank(bank), batch_size=500, concurrency=1, progress=False)
        assert first.imported >= 500 and first.failed, "the disk should take a few requests, then refuse"
        refusal = first.failed[0]
        assert "nothing of this request was stored" in refusal and "QBANK_MIN_FREE_DISK_BYTES" in refusal
        assert str(small_disk / "data") in refusal
        assert client.count() == first.imported  # what failed is not visible
        acknowledged = client.existing(ids)
        assert len(acknowledged) == first.imported
    with running_flow(**settings) as urls:  # a restart keeps every acknowledged item, and nothing else
        client = QbankClient(urls["grpc"])
        assert client.count() == first.imported
        assert client.existing(ids) == acknowledged
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
        second = import_bank(client, read_bank(bank), batch_size=500, concurrency=1, progress=False)
        assert second.failed == []
        assert second.items_sent == total - first.imported and second.items_skipped == first.imported
    with running_flow(**settings) as urls:
        assert QbankClient(urls["grpc"]).count() == total
