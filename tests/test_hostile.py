"""Hostile content through a real Flow (issue 44): stems and queries made to stall a parser never
stall the service, and `/count` keeps answering while they are read."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import running_flow
from docarray import Document, DocumentArray

from qbank.domain.reading import brace_depth, latex_reading, reading_form
from qbank_client import QbankClient
from qbank_client.transport import ServerError

# Python's html.parser is quadratic on this (19 KB: 11-29 s per item before), in the client, the
# encoder and the indexer alike.
HOSTILE_STEM = "<p>" + "<a " * 6665
HOSTILE_ANALYSIS = "勾股定理的逆定理 <div>" + "<a " * 9985  # 30,000 characters
MATH_BOMBS = {
    "frac": "$" + "\\frac{1}{" * 1900 + "x" + "}" * 1900 + "$",
    "sqrt": "$" + "\\sqrt{" * 2800 + "x" + "}" * 2800 + "$",
    "power": "$" + "x^{" * 3000 + "2" + "}" * 3000 + "$",
    "spans": "$x$ " * 4999,
}


def test_reading_a_hostile_stem_is_linear():
    started = time.perf_counter()
    for text in (HOSTILE_STEM, HOSTILE_ANALYSIS, *MATH_BOMBS.values()):
        reading_form(text)
    assert time.perf_counter() - started < 2.0  # 11-29 s for the first alone before
    # deep formulas are read as given without the parser's recursion (which ran the stack out)
    assert all(latex_reading(bomb) == bomb for bomb in MATH_BOMBS.values() if "{" in bomb)
    assert brace_depth("$\\{" + "{" * 41 + "}" * 41 + "$", 40) == 41 and brace_depth("$\\frac{a}{b}$", 40) == 1
    assert reading_form("<p>若a&lt;b，则<sup>2</sup></p><script>x</script>") == "若a<b，则2"


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("hostile"), search_mode="hybrid") as urls:
        yield urls


def timed_count(client: QbankClient, until: threading.Event, ready: threading.Event) -> list[float]:
    """The latencies of /count called in a loop until ``until`` is set."""
    latencies: list[float] = []
    client.count()  # the channel opened and the first call made before timing
    ready.set()
    while not until.is_set():
        started = time.perf_counter()
        client.count()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    return latencies


@pytest.mark.service
def test_hostile_stems_index_and_search_within_a_second_each_while_count_answers(flow):
    client = QbankClient(flow["grpc"])
    docs = [
        Document(id="hostile:text:0", text=HOSTILE_STEM, tags={"question_id": "hostile", "analysis": HOSTILE_ANALYSIS})
    ]
    docs += [Document(id=f"{name}:text:0", text=text, tags={"question_id": name}) for name, text in MATH_BOMBS.items()]
    docs += [
        Document(id=f"plain{i}:text:0", text=f"第{i}题 已知三角形的面积为{i}", tags={"question_id": f"plain{i}"})
        for i in range(8)
    ]
    done, ready, latencies = threading.Event(), threading.Event(), []
    # the collection exists before timing (its creation, once, holds Milvus Lite for seconds)
    client.index(DocumentArray([Document(id="first:text:0", text="第一题", tags={"question_id": "first"})]))
    watcher = threading.Thread(target=lambda: latencies.extend(timed_count(QbankClient(flow["grpc"]), done, ready)))
    watcher.start()
    ready.wait(30)
    try:
        started = time.perf_counter()
        client.index(DocumentArray(docs))
        indexed = time.perf_counter() - started
        started = time.perf_counter()
        for doc in docs[:5]:
            client.similar_questions(doc.text[:2000], limit=3, mode="bm25")
        searched = time.perf_counter() - started
        started = time.perf_counter()
        found = client.near_duplicates("text", 0.8, 10, 1000)
        grouped = time.perf_counter() - started
        started = time.perf_counter()
        analysis = client.similar_questions(HOSTILE_ANALYSIS[:19_000], limit=3, mode="bm25", search_in="analysis")
        in_analysis = time.perf_counter() - started
    finally:
        done.set()
        watcher.join()
    assert client.count() == len(docs) + 1 and found["scanned"] == len(docs) + 1
    assert analysis and analysis[0].question_id == "hostile"
    assert indexed < len(docs) * 1.0 and searched < 5 * 1.0 and grouped < 5.0 and in_analysis < 1.0, (
        indexed,
        searched,
        grouped,
        in_analysis,
    )
    assert latencies and max(latencies) < 1.0, latencies


@pytest.mark.service
def test_a_bm25_query_over_the_text_limit_is_refused_by_name_at_once(flow):
    client = QbankClient(flow["grpc"])
    for mode in ("bm25", "hybrid"):
        started = time.perf_counter()
        with pytest.raises(ServerError, match="QBANK_MAX_TEXT_CHARS"):
            client.similar_questions("长" * 40_000, limit=3, mode=mode)
        assert time.perf_counter() - started < 2.0  # 21-45 s before
