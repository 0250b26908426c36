"""Shared fixtures: a tiny random CLIP built in the session, its ONNX export, and real Flows.

Nothing here downloads anything: the tiny model is saved like a hub folder and loaded through the
same code path as a real one. Flows run on free loopback ports with a Milvus Lite file in tmp.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qbank.serve import free_ports  # re-exported: test modules import it from conftest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach for the hub
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")
# Executors start in fresh interpreters: forking this process, which holds gRPC, torch and Milvus
# Lite threads, can deadlock the child (seen: an indexer stuck importing pymilvus).
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
# The variable alone is not enough here: torch or a tokenizer library asks for the start method
# before jina is imported, which fixes it to fork (jina then only warns "context has already been set").
multiprocessing.set_start_method("spawn", force=True)


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def flow_env(**settings: object) -> dict[str, str]:
    """QBANK_* variables for a Flow on free loopback ports, plus the given settings."""
    grpc, http, ws = free_ports(3)
    env = {
        "QBANK_GRPC_PORT": str(grpc),
        "QBANK_HTTP_PORT": str(http),
        "QBANK_WS_PORT": str(ws),
        "QBANK_ENCODER_REPLICAS": "1",
        "QBANK_INDEXER_REPLICAS": "1",
    }
    env.update({f"QBANK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def running_flow(**settings: str) -> Iterator[dict[str, str]]:
    """Start flow.yml with QBANK_* settings; yields the three client URLs by protocol."""
    from qbank.serve import load_flow

    env = flow_env(**settings)
    grpc, http, ws = env["QBANK_GRPC_PORT"], env["QBANK_HTTP_PORT"], env["QBANK_WS_PORT"]
    with patched_env(env):
        flow = load_flow(REPO / "flow.yml")
        with flow:
            yield {
                "grpc": f"grpc://127.0.0.1:{grpc}",
                "http": f"http://127.0.0.1:{http}",
                "websocket": f"ws://127.0.0.1:{ws}",
            }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from qbank.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-chinese-clip", "chinese_clip")


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    from qbank.clip_model import export_onnx

    return export_onnx(str(tiny_model), tmp_path_factory.mktemp("onnx") / "tiny-chinese-clip-onnx")


def png_bytes(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A distinct small PNG per seed (random pixels: the tiny model tells them apart)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
