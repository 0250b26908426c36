"""Bad input through the real Flow: each gets an error naming the item and the problem, and
nothing is stored. Requests are all-or-nothing: one bad item fails the whole request (the good
items beside it are not written either), so a caller can fix the item and resend the request.
"""

from __future__ import annotations

import struct
import urllib.request
import zlib

import grpc
import numpy as np
import pytest
from clip_client import Client
from conftest import png_bytes, running_flow
from docarray import Document, DocumentArray
from test_flow import count, jina_client, question_items

from qbank_client import QbankClient


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("bad-input")) as urls:
        Client(urls["grpc"]).index(question_items("kept", 2, "数学"))  # what must survive every bad request
        assert count(urls["grpc"]) == 4
        yield urls


def bomb_png(side: int = 60_000) -> bytes:
    """A valid PNG header declaring side x side pixels, with one tiny compressed row: ~100 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def corrupt_png() -> bytes:
    data = bytearray(png_bytes(3))
    data[60:] = b"\x00garbage" * 20
    return bytes(data)


def good(i: int) -> Document:
    return Document(id=f"good-{i}", text=f"一道好题 {i}", tags={"question_id": f"good-{i}"})


BAD_ITEMS = {
    "empty text": (Document(id="bad", text=""), "no content"),
    "blank text": (Document(id="bad", text="  \n "), "text is blank"),
    "chunks": (Document(id="bad", text="题干", chunks=[Document(text="小题一")]), "has 1 chunks.*document of its own"),
    "100k characters": (Document(id="bad", text="题" * 100_000), "100000 characters, over the limit of 20000"),
    "zero-byte image": (Document(id="bad", blob=b"", mime_type="image/png"), "image is empty"),
    "empty data URI": (Document(id="bad", uri="data:image/png;base64,"), "image is empty"),
    "corrupt image": (Document(id="bad", blob=corrupt_png(), mime_type="image/png"), "not a readable image"),
    "not an image": (Document(id="bad", blob=b"%PDF-1.4 not a picture", mime_type="image/png"), "not a readable image"),
    "decompression bomb": (Document(id="bad", blob=bomb_png()), "decompression bomb"),
    "1-d tensor": (Document(id="bad", tensor=np.zeros(5, dtype=np.uint8)), "is not an image"),
    "bool tensor": (Document(id="bad", tensor=np.zeros((4, 4, 3), dtype=bool)), "not an image dtype"),
    "NaN tensor": (Document(id="bad", tensor=np.full((4, 4, 3), np.nan, dtype=np.float32)), "NaN"),
    "wrong dimension": (Document(id="bad", embedding=np.ones(7, dtype=np.float32)), "has 7 dimensions"),
    "NaN vector": (Document(id="bad", embedding=np.full(16, np.nan, dtype=np.float32)), "NaN or infinite"),
}


@pytest.mark.service
@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_a_bad_item_is_named_and_nothing_of_its_request_is_stored(flow, case):
    bad, reason = BAD_ITEMS[case]
    request = DocumentArray([good(1), bad, good(2)])
    with pytest.raises(Exception, match=f"item .{{0,4}}bad.*{reason}") as error:
        jina_client(flow["grpc"]).post("/index", inputs=request)
    assert "good-1" not in str(error.value)  # only the bad item is blamed
    assert count(flow["grpc"]) == 4


@pytest.mark.service
def test_clip_client_gets_the_same_errors_for_what_it_sends(flow):
    """clip_client itself refuses content-less Documents (TypeError inside its request generator,
    on which jina 3.34's gRPC client then waits forever), so only items it forwards are tried here."""
    for case in ("100k characters", "corrupt image", "not an image", "decompression bomb", "1-d tensor"):
        bad, reason = BAD_ITEMS[case]
        with pytest.raises(Exception, match=f"bad.*{reason}"):
            Client(flow["grpc"]).index(DocumentArray([good(1), bad]))
    assert count(flow["grpc"]) == 4


@pytest.mark.service
def test_the_project_client_gets_the_same_errors(flow):
    client = QbankClient(flow["http"])
    for case in ("corrupt image", "wrong dimension", "100k characters"):
        bad, reason = BAD_ITEMS[case]
        with pytest.raises(Exception, match=f"bad.*{reason}"):
            client.index(DocumentArray([good(1), bad]))
    with pytest.raises(ValueError, match="item 'bad': field 'text' is not valid Unicode"):
        client.index(DocumentArray([Document(id="bad", text="坏\udcff")]))  # refused before sending
    assert client.count() == 4


@pytest.mark.service
def test_duplicate_ids_in_one_request_are_refused(flow):
    with pytest.raises(Exception, match="dup.*duplicate id in one request"):
        Client(flow["grpc"]).index(DocumentArray([Document(id="dup", text="一"), Document(id="dup", text="二")]))
    assert count(flow["grpc"]) == 4


@pytest.mark.service
def test_invalid_utf8_on_the_wire_is_refused_by_the_gateway(flow):
    from jina.types.request.data import DataRequest

    request = DataRequest()
    request.header.exec_endpoint = "/index"
    request.data.docs = DocumentArray([Document(id="bad-utf8", text="PLACEHOLDER-XYZ")])
    raw = request.proto.SerializeToString().replace(b"PLACEHOLDER-XYZ", b"\xff\xfe\xfdPLACEHOLDE")
    with grpc.insecure_channel(flow["grpc"].removeprefix("grpc://")) as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary("/jina.JinaSingleDataRequestRPC/process_single_data")(raw, timeout=30)
    assert "Error parsing message" in error.value.details()
    body = b'{"data": [{"id": "bad-http", "text": "\xff\xfe"}], "execEndpoint": "/index"}'
    http_request = urllib.request.Request(
        flow["http"] + "/post", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(http_request, timeout=30)
    assert http_error.value.code == 400
    assert count(flow["grpc"]) == 4


@pytest.mark.service
@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({"filter": {"answer": "A"}}, "unknown filter field"),
        ({"filter": "subject == '数学'"}, "filter.{0,4} must be an object"),
        ({"filter": {"subject": {"$ne": "数学"}}}, "values must be strings or numbers"),
        ({"filter": {"grade": []}}, "list of values is empty"),
        ({"filter": {"modality": "video"}}, "must be one of"),
        ({"limit": 0}, "limit.{0,4} must be an integer"),
        ({"limit": "10; drop"}, "limit.{0,4} must be an integer"),
    ],
)
def test_malformed_search_parameters_are_refused(flow, parameters, reason):
    query = DocumentArray([Document(text="题")])
    with pytest.raises(Exception, match=reason):
        jina_client(flow["grpc"]).post("/search", inputs=query, parameters=parameters)


@pytest.mark.service
def test_filter_values_cannot_inject_into_the_expression(flow):
    crafted = ['数学" or subject != "', "数学' or 1==1 or '", '\\" or question_id != \\"', '数学" || true || "']
    client = Client(flow["grpc"])
    for value in crafted:
        result = client.search(["题"], limit=50, parameters={"filter": {"subject": value}})
        assert len(result[0].matches) == 0
    qbank = QbankClient(flow["grpc"])
    assert qbank.similar_questions("题", subject=crafted[0]) == []
    for value in crafted:  # a crafted delete deletes nothing
        assert qbank.post("/delete", parameters={"filter": {"subject": value}})[1]["deleted"] == 0
    assert count(flow["grpc"]) == 4
    with pytest.raises(Exception, match="control characters"):
        client.search(["题"], parameters={"filter": {"subject": "数学\n or 1"}})


def test_png_helper_really_is_a_bomb():
    data = bomb_png()
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (60_000, 60_000) and len(data) < 200
