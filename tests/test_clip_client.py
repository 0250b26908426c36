"""clip_client as clip-as-service users call it, against the real Flow on all three protocols, with
clip-server's own client-facing rules as the reference (profile(), text vs image, access_paths,
async calls)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from clip_client import Client
from conftest import png_bytes, running_flow
from docarray import Document, DocumentArray
from test_flow import PROTOCOLS, count, jina_client

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("clip-client-data")) as urls:
        yield urls


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_profile_prints_its_latency_tree(flow, protocol, capsys):
    """profile() posts one empty Document to / and reads the routes: gateway, then the encoder."""
    report = Client(flow[protocol]).profile()
    assert set(report) == {"Roundtrip", "Client-server network", "Server", "Gateway-CLIP network", "CLIP model"}
    assert report["Roundtrip"] > 0 and report["Server"] >= report["CLIP model"] >= 0
    printed = capsys.readouterr().out
    assert "Roundtrip" in printed and "CLIP model" in printed
    report = Client(flow[protocol]).profile(content="三角形的面积")  # with content: it is encoded
    assert report["CLIP model"] >= 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_doc_with_text_and_uri_is_a_text(flow, protocol):
    """clip-server's split_img_txt_da: text wins; the uri (here one the server could read) is not fetched."""
    client = Client(flow[protocol])
    figure = "data:image/png;base64," + base64.b64encode(png_bytes(5)).decode()
    text_only = client.encode(["已知三角形ABC的面积为6"])[0]
    image_only = client.encode([Document(uri=figure).load_uri_to_blob()])[0].embedding
    both = client.encode(DocumentArray([Document(text="已知三角形ABC的面积为6", uri=figure)]))[0].embedding
    assert cosine(both, text_only) > 0.9999
    assert cosine(both, image_only) < 0.99


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_access_paths_embed_chunks(flow, protocol):
    """'@c' embeds the chunks (jina's Client returns the whole tree; clip_client copies back only the
    top level's embeddings); '@r,c' both levels; traversal_paths is the older name for it."""
    client = jina_client(flow[protocol])

    def tree() -> DocumentArray:
        return DocumentArray(
            [
                Document(
                    id="p",
                    text="一道综合题",
                    chunks=[Document(id="c1", text="小题一"), Document(id="c2", text="小题二")],
                )
            ]
        )

    (parent,) = client.post("/encode", tree(), parameters={"access_paths": "@c"})
    assert parent.embedding is None and all(c.embedding is not None for c in parent.chunks)
    alone = client.post("/encode", DocumentArray([Document(text="小题二")]))[0].embedding
    assert cosine(parent.chunks[1].embedding, alone) > 0.9999
    (parent,) = client.post("/encode", tree(), parameters={"traversal_paths": "@r,c"})
    assert parent.embedding is not None and all(c.embedding is not None for c in parent.chunks)
    container = DocumentArray([Document(id="box", chunks=[Document(id="c", text="小题")])])  # no content itself
    (box,) = client.post("/encode", container, parameters={"access_paths": "@r,c"})
    assert box.embedding is None and box.chunks[0].embedding is not None
    with pytest.raises(Exception, match="access_paths.{0,6}: docarray cannot follow .{0,4}@x"):
        client.post("/encode", tree(), parameters={"access_paths": "@x"})
    with pytest.raises(Exception, match="access_paths.{0,6} must be a document selector starting with"):
        client.post("/encode", tree(), parameters={"access_paths": "c"})
    with pytest.raises(Exception, match="access_paths.{0,6} can only be .{0,4}@r.{0,4} here"):
        client.post("/index", tree(), parameters={"access_paths": "@c"})


def test_rank_follows_access_paths(flow):
    candidates = [Document(text="三角形的内角和"), Document(text="氯化钠的溶解度"), Document(text="电路中的电流")]
    query = Document(id="q", text="氯化钠的溶解度", matches=DocumentArray(candidates))
    (ranked,) = Client(flow["grpc"]).rank([query])
    assert ranked.matches[0].text == "氯化钠的溶解度"
    parent = Document(id="p", text="综合题", chunks=[Document(id="q", text="氯化钠的溶解度", matches=candidates)])
    (out,) = jina_client(flow["grpc"]).post("/rank", DocumentArray([parent]), parameters={"access_paths": "@c"})
    assert out.chunks[0].matches[0].text == "氯化钠的溶解度"
    assert out.chunks[0].matches[0].scores["clip_score"].value > 0.33


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_calls_keep_input_order(flow, protocol):
    client = Client(flow[protocol])
    texts = [f"第{i}题：求三角形的面积，底为{i}" for i in range(40)]
    expected = client.encode(texts, batch_size=8)

    async def both():
        return await asyncio.gather(client.aencode(texts, batch_size=8), client.aencode(texts[:5], batch_size=2))

    many, few = asyncio.run(both())
    assert many.shape == (40, expected.shape[1]) and few.shape[0] == 5
    assert all(cosine(a, b) > 0.9999 for a, b in zip(many, expected, strict=True))
    assert all(cosine(a, b) > 0.9999 for a, b in zip(few, expected[:5], strict=True))


def test_empty_inputs_and_stored_items_stay_strict(flow):
    """An empty input list returns empty without a request (as clip_client does for clip-server);
    /index keeps refusing what has no content, so profile()'s leniency never reaches the store."""
    client = Client(flow["grpc"])
    assert client.encode([]) == []
    before = count(flow["grpc"])
    with pytest.raises(Exception, match="no content"):
        jina_client(flow["grpc"]).post("/index", DocumentArray([Document(id="empty", text="")]))
    with pytest.raises(Exception, match="no content"):
        jina_client(flow["grpc"]).post("/encode", DocumentArray([Document(id="empty", text="")]))
    assert count(flow["grpc"]) == before
