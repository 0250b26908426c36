"""End to end through the real Flow (gateway on gRPC + HTTP + WebSocket, encoder, Milvus Lite).

clip_client is used unchanged; the indexer's own endpoints (/count, /delete, /update) are called
with jina's Client, as any service would.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlparse

import numpy as np
import pytest
from clip_client import Client
from conftest import png_bytes, running_flow
from docarray import Document, DocumentArray

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process

PROTOCOLS = ["grpc", "http", "websocket"]


def jina_client(url: str):
    from jina import Client as JinaClient

    parsed = urlparse(url)
    protocol = {"ws": "websocket"}.get(parsed.scheme, parsed.scheme)
    return JinaClient(host=parsed.hostname, port=parsed.port, protocol=protocol)


def call(url: str, endpoint: str, docs=None, parameters=None) -> dict:
    """Post to an endpoint and return what the indexer put in the response's results."""
    responses = jina_client(url).post(
        endpoint, inputs=docs or DocumentArray(), parameters=parameters or {}, return_responses=True
    )
    merged: dict = {}
    for response in responses:
        for result in response.parameters.get("__results__", {}).values():
            merged.update(result)
    return merged


def count(url: str, **filters) -> int:
    return int(call(url, "/count", parameters={"filter": filters} if filters else {})["count"])


def question_items(prefix: str, n: int, subject: str) -> DocumentArray:
    """n questions, each a stem text item and one figure item sharing question_id."""
    docs = DocumentArray()
    for i in range(n):
        qid = f"{prefix}-{i}"
        tags = {
            "question_id": qid,
            "subject": subject,
            "grade": "初二",
            "type": "选择题",
            "knowledge_points": ["三角形"],
        }
        docs.append(
            Document(id=f"{qid}:text:0", text=f"{subject}题{i}：已知三角形ABC的面积为{i + 3}，求边长", tags=tags)
        )
        docs.append(Document(id=f"{qid}:image:0", blob=png_bytes(hash(qid) % 10_000), mime_type="image/png", tags=tags))
    return docs


@pytest.fixture(scope="module")
def uri_root(tmp_path_factory):
    """The one folder this module's Flow may read image paths from."""
    return tmp_path_factory.mktemp("uri-root")


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory, uri_root):
    data_dir = tmp_path_factory.mktemp("flow-data")
    with running_flow(model=tiny_model, data_dir=data_dir, uri_roots=uri_root, fetch_private="true") as urls:
        yield urls


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_clip_client_encodes_text_and_images_on_every_protocol(flow, protocol):
    client = Client(flow[protocol])
    texts = client.encode(["三角形的面积是多少", "已知圆的半径为2"])
    assert texts.shape == (2, 16)
    # gRPC and WebSocket carry float32 protobuf; HTTP carries JSON numbers, read back as float64.
    assert texts.dtype == (np.float64 if protocol == "http" else np.float32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes(2)).decode()
    mixed = client.encode(
        DocumentArray(
            [
                Document(text="三角形的面积是多少"),
                Document(blob=png_bytes(1), mime_type="image/png"),
                Document(uri=data_uri),
                Document(tensor=np.full((20, 30, 3), 128, dtype=np.uint8)),
            ]
        )
    )
    vectors = mixed.embeddings
    assert vectors.shape == (4, 16)
    np.testing.assert_allclose(vectors[0], texts[0], atol=1e-5)  # same text, same vector, one space
    assert all(abs(np.dot(vectors[0], v)) < 0.9999 for v in vectors[1:])  # the images differ from the text


def test_all_protocols_give_the_same_embedding(flow):
    vectors = [Client(flow[p]).encode(["同一道题"])[0] for p in PROTOCOLS]
    for other in vectors[1:]:
        np.testing.assert_allclose(vectors[0], other, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_index_then_search_finds_each_item_first_with_filters(flow, protocol):
    client = Client(flow[protocol])
    subject = f"数学-{protocol}"
    docs = question_items(f"q-{protocol}", 4, subject)
    indexed = client.index(docs)
    assert len(indexed) == 8 and indexed.embeddings.shape == (8, 16)
    assert count(flow[protocol], subject=subject) == 8

    query_texts = [d.text for d in docs if d.text]
    results = client.search(query_texts, limit=3, parameters={"filter": {"subject": subject}})
    for query, result in zip(query_texts, results, strict=True):
        best = result.matches[0]
        assert best.text == query
        assert best.tags["subject"] == subject and best.tags["grade"] == "初二" and best.tags["type"] == "选择题"
        assert best.tags["knowledge_points"] == ["三角形"]
        assert best.scores["similarity"].value == pytest.approx(1.0, abs=1e-4)
        assert best.scores["cosine"].value == pytest.approx(0.0, abs=1e-4)
        assert all(m.tags["subject"] == subject for m in result.matches)

    image_query = DocumentArray([Document(blob=docs[1].blob, mime_type="image/png")])
    found = client.search(image_query, limit=2, parameters={"filter": {"subject": subject}, "modality": "image"})
    assert found[0].matches[0].id == docs[1].id
    assert all(m.modality == "image" for m in found[0].matches)

    other = client.search(query_texts[:1], limit=5, parameters={"filter": {"subject": "不存在的学科"}})
    assert len(other[0].matches) == 0


def test_indexing_twice_upserts_instead_of_duplicating(flow):
    client = Client(flow["grpc"])
    docs = question_items("dup", 3, "物理-dup")
    client.index(docs)
    client.index(docs)
    client.index(docs[:2])
    assert count(flow["grpc"], subject="物理-dup") == 6


def test_delete_by_ids_and_by_question(flow):
    client = Client(flow["http"])
    docs = question_items("del", 3, "化学-del")
    client.index(docs)
    assert call(flow["http"], "/delete", parameters={"ids": [docs[0].id]})["deleted"] == 1
    assert call(flow["grpc"], "/delete", parameters={"question_ids": ["del-1"]})["deleted"] == 2
    assert count(flow["grpc"], subject="化学-del") == 3
    results = client.search([docs[0].text], limit=10, parameters={"filter": {"subject": "化学-del"}})
    assert docs[0].id not in [m.id for m in results[0].matches]
    with pytest.raises(Exception, match="refusing to delete everything"):
        call(flow["grpc"], "/delete")
    assert count(flow["grpc"], subject="化学-del") == 3


def test_update_merges_tags_and_keeps_the_vector(flow):
    client = Client(flow["grpc"])
    docs = question_items("upd", 1, "生物-upd")
    client.index(docs)
    call(
        flow["grpc"],
        "/update",
        docs=DocumentArray([Document(id=docs[0].id, tags={"grade": "高一", "source": "2024期末"})]),
    )
    hit = client.search([docs[0].text], limit=1, parameters={"filter": {"subject": "生物-upd"}})[0].matches[0]
    assert hit.id == docs[0].id and hit.tags["grade"] == "高一" and hit.tags["source"] == "2024期末"
    assert hit.tags["type"] == "选择题"  # untouched fields stay
    assert hit.scores["similarity"].value == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(Exception, match="do not exist"):
        call(flow["grpc"], "/update", docs=DocumentArray([Document(id="no-such-item", tags={"grade": "x"})]))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rank_reorders_matches_by_clip_score(flow, protocol):
    query = Document(
        text="已知圆的半径为2，求面积",
        matches=[Document(text=t) for t in ["无关的文字", "已知圆的半径为2，求面积", "another"]],
    )
    ranked = Client(flow[protocol]).rank([query])[0]
    assert ranked.matches[0].text == "已知圆的半径为2，求面积"
    scores = [m.scores["clip_score"].value for m in ranked.matches]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert ranked.matches[0].scores["clip_score_cosine"].value == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bad_item_fails_the_request_and_stores_nothing(flow, protocol):
    before = count(flow["grpc"])
    docs = DocumentArray(
        [Document(text="好的题目"), Document(id="broken-figure", blob=b"not an image", mime_type="image/png")]
    )
    with pytest.raises(Exception) as error:
        Client(flow[protocol]).index(docs)
    if protocol != "http":  # jina's HTTP client reports only that the server failed
        assert "broken-figure" in str(error.value)
    assert count(flow["grpc"]) == before


def test_bad_filter_is_refused_with_the_field_named(flow):
    client = Client(flow["grpc"])
    with pytest.raises(Exception, match=r"unknown filter field .{0,8}answer"):
        client.search(["题"], parameters={"filter": {"answer": "A"}})
    injected = client.search(["题"], limit=50, parameters={"filter": {"subject": '数学" or subject != "'}})
    assert len(injected[0].matches) == 0


def test_server_reads_uris_from_allowed_files_and_http(flow, uri_root, tmp_path):
    """Docs that carry only a URI (as services send them, not clip_client) are fetched server-side,
    here from the allowed folder and (QBANK_FETCH_PRIVATE=true) from a loopback web server."""
    import functools
    import http.server
    import threading

    (uri_root / "fig.png").write_bytes(png_bytes(42))
    (tmp_path / "outside.png").write_bytes(png_bytes(42))
    (uri_root / "link.png").symlink_to(tmp_path / "outside.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(uri_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        docs = DocumentArray(
            [
                Document(id="from-file", uri=str(uri_root / "fig.png")),
                Document(id="from-file-uri", uri=(uri_root / "fig.png").as_uri()),
                Document(id="from-http", uri=f"http://127.0.0.1:{server.server_port}/fig.png"),
                Document(id="from-blob", blob=png_bytes(42), mime_type="image/png"),
            ]
        )
        encoded = jina_client(flow["grpc"]).post("/encode", inputs=docs)
    finally:
        server.shutdown()
    vectors = {d.id: d.embedding for d in encoded}
    for name in ("from-file", "from-file-uri", "from-http"):
        np.testing.assert_allclose(vectors[name], vectors["from-blob"], atol=1e-5)
    assert all(d.modality == "image" for d in encoded)
    refused = {
        "gone": (str(uri_root / "missing.png"), "no file at"),
        "dotdot": (str(uri_root / ".." / tmp_path.name / "outside.png"), "outside the allowed folders"),
        "symlink": (str(uri_root / "link.png"), "outside the allowed folders"),
        "passwd": ("file:///etc/passwd", "outside the allowed folders"),
    }
    for doc_id, (uri, reason) in refused.items():
        with pytest.raises(Exception, match=f"item .{{0,4}}{doc_id}.*{reason}"):
            jina_client(flow["grpc"]).post("/encode", inputs=DocumentArray([Document(id=doc_id, uri=uri)]))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_clip_client_selects_bm25_and_hybrid_with_parameters(flow, protocol):
    client = Client(flow[protocol])
    subject = f"全文-{protocol}"
    stems = ["如图，在等腰三角形ABC中，求∠B的度数。", "两个电阻串联，求电路的总电阻。", "圆的半径为3，求圆的面积。"]
    docs = DocumentArray(
        Document(id=f"ft-{protocol}-{i}", text=text, tags={"subject": subject}) for i, text in enumerate(stems)
    )
    client.index(docs)
    only_subject = {"filter": {"subject": subject}}
    found = client.search(["三角形"], limit=3, parameters={"mode": "bm25", **only_subject})
    best = found[0].matches[0]
    assert best.id == f"ft-{protocol}-0" and len(found[0].matches) == 1  # only one stem has the word
    # Typed words: BM25's candidates ordered by how much of the query they hold in order.
    assert best.scores["bm25"].value > 0 and best.scores["score"].value == best.scores["text_coverage"].value == 1.0
    fused = client.search(["电阻"], limit=3, parameters={"mode": "hybrid", "rrf_k": 60, **only_subject})
    assert fused[0].matches[0].id == f"ft-{protocol}-1"
    assert all(m.tags["subject"] == subject for m in fused[0].matches)
    weighted = client.search(["电阻"], limit=3, parameters={"mode": "hybrid", "weights": [0.0, 1.0], **only_subject})
    assert weighted[0].matches[0].id == f"ft-{protocol}-1" and "weighted" in weighted[0].matches[0].scores
    # Bad options fail on every protocol; jina's HTTP client hides the server's message.
    mode_message, weights_message = ("parameter .{0,8}mode.{0,8} must be one of", "weights.{0,8} must be two numbers")
    if protocol == "http":
        mode_message = weights_message = ""
    with pytest.raises(Exception, match=mode_message):
        client.search(["电阻"], parameters={"mode": "fuzzy"})
    with pytest.raises(Exception, match=weights_message):
        client.search(["电阻"], parameters={"mode": "hybrid", "weights": [2, 1]})


@pytest.mark.service
def test_by_default_no_web_page_of_another_origin_may_call_and_the_api_page_names_the_service(flow):
    """CORS is off unless QBANK_CORS_ORIGINS names origins (jina's `cors: true` allowed every
    website): a preflight from another origin gets no allow header. The OpenAPI page carries the
    service's title and its endpoints, not jina's placeholder."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        flow["http"] + "/post",
        method="OPTIONS",
        headers={"Origin": "https://exams.example.com", "Access-Control-Request-Method": "POST"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            allowed = response.headers.get("access-control-allow-origin")
    except urllib.error.HTTPError as error:
        allowed = error.headers.get("access-control-allow-origin")
    assert allowed is None
    with urllib.request.urlopen(flow["http"] + "/openapi.json", timeout=5) as response:
        info = json.loads(response.read())["info"]
    assert info["title"].startswith("qbank") and "/near_duplicates" in info["description"]
    assert "awesome" not in info["description"]
