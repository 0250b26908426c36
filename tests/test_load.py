"""The short load test (the long one is `bench/load.py`): concurrent clients on every protocol,
zero errors, latency measured, and the Flow's memory does not keep growing."""

from __future__ import annotations

import pytest
from conftest import running_flow
from test_flow import question_items

from qbank_client import QbankClient
from qbank_devtools.loadtest import process_tree_rss_mb, run_load

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process


@pytest.fixture(scope="module")
def loaded(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("load")) as urls:
        QbankClient(urls["grpc"]).index(question_items("load", 20, "数学"))
        yield urls


@pytest.mark.parametrize("protocol", ["grpc", "http", "websocket"])
def test_concurrent_clients_see_no_errors(loaded, protocol):
    report = run_load(loaded[protocol], clients=4, seconds=4)
    assert report.errors == []
    assert report.requests >= 8 and report.percentile(0.99) >= report.percentile(0.5) > 0


def test_memory_does_not_keep_growing(loaded):
    assert process_tree_rss_mb() > 100  # it sees the Flow's processes
    run_load(loaded["grpc"], clients=4, seconds=4)  # warm-up: caches, arenas, thread pools
    rounds = [run_load(loaded["grpc"], clients=4, seconds=4) for _ in range(2)]
    assert all(r.errors == [] for r in rounds)
    growth = rounds[-1].rss_after_mb - rounds[0].rss_before_mb
    assert growth < 0.1 * rounds[0].rss_before_mb, [r.summary() for r in rounds]
