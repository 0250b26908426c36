"""Flow restarts, model guard through the Flow, and the ONNX engine behind the same Flow."""

from __future__ import annotations

import numpy as np
import pytest
from clip_client import Client
from conftest import running_flow
from test_flow import count, question_items

from qbank_devtools.tiny_clip import build_tiny_clip

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process


def test_restarted_flow_finds_the_data_and_refuses_another_model(tiny_model, tmp_path):
    data_dir = tmp_path / "data"
    docs = question_items("persist", 3, "地理")
    with running_flow(model=tiny_model, data_dir=data_dir) as urls:
        Client(urls["grpc"]).index(docs)
        assert count(urls["grpc"]) == 6

    with running_flow(model=tiny_model, data_dir=data_dir) as urls:
        assert count(urls["grpc"]) == 6
        result = Client(urls["websocket"]).search([docs[2].text], limit=1)
        assert result[0].matches[0].id == docs[2].id

    other = build_tiny_clip(tmp_path / "other-clip", "clip", projection_dim=24)
    with running_flow(model=other, data_dir=data_dir) as urls:
        with pytest.raises(Exception) as error:
            Client(urls["grpc"]).index(question_items("other", 1, "地理"))
        assert "holds 16-d vectors of model" in str(error.value) and "24-d vectors of model" in str(error.value)
        with pytest.raises(Exception, match="16-d vectors"):
            Client(urls["grpc"]).search(["地理"], limit=3)
        assert count(urls["grpc"]) == 6


def test_onnx_engine_flow_with_two_replicas_gives_the_torch_embeddings(tiny_model, tiny_onnx, tmp_path):
    texts = ["三角形的面积", "电路图中电阻的阻值"]
    with running_flow(model=tiny_model, data_dir=tmp_path / "torch") as urls:
        torch_vectors = Client(urls["grpc"]).encode(texts)
    onnx = dict(model=tiny_model, engine="onnx", onnx_path=tiny_onnx, data_dir=tmp_path / "onnx", encoder_replicas=2)
    with running_flow(**onnx) as urls:
        client = Client(urls["grpc"])
        onnx_vectors = client.encode(texts)
        many = client.encode(texts * 40, batch_size=4)  # 20 requests spread over both replicas
    assert np.min(np.sum(torch_vectors * onnx_vectors, axis=1)) > 0.999
    np.testing.assert_allclose(many[::2], np.repeat(onnx_vectors[:1], 40, axis=0), atol=1e-5)


def test_flow_killed_with_sigkill_keeps_everything_acknowledged(tiny_model, tmp_path):
    """`qbank-serve` and all its executors are SIGKILLed right after acknowledged writes; a new
    Flow on the same data finds every acknowledged item (Milvus Lite persists each write)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, flow_env

    env = dict(os.environ, **flow_env(model=tiny_model, data_dir=tmp_path / "data"))
    url = f"grpc://127.0.0.1:{env['QBANK_GRPC_PORT']}"

    def serve() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "qbank.cli.serve", "--flow", str(REPO / "flow.yml")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the kill takes the executors too
        )
        deadline = time.monotonic() + 180
        for line in process.stdout:
            if "qbank flow up" in line:
                return process
            assert time.monotonic() < deadline and process.poll() is None, "qbank-serve did not start"
        raise AssertionError(f"qbank-serve exited with {process.wait()}")

    def kill(process: subprocess.Popen) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()

    process = serve()
    try:
        batches = [question_items(f"ack{n}", 2, subject) for n, subject in enumerate(["化学", "生物", "历史"])]
        for batch in batches:
            Client(url).index(batch)  # returns only once the indexer acknowledged the upsert
    finally:
        kill(process)
    process = serve()
    try:
        assert count(url) == 12
        for batch in batches:
            result = Client(url).search([batch[0].text], limit=1)
            assert result[0].matches[0].id == batch[0].id
    finally:
        kill(process)
