"""Shared fixtures: a tiny random CLIP built in the session, its ONNX export, the toy CLIP trained
here (for claims that need semantics), and real Flows.

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

# re-exported: test modules import these from conftest
from qbank.service.flow import flow_env, free_ports, patched_env  # noqa: F401
from qbank.service.flow import running_flow as serve_running_flow

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach for the hub
os.environ.setdefault("JINA_LOG_LEVEL", "WARNING")
# Executors start in fresh interpreters: forking this process, which holds gRPC, torch and Milvus
# Lite threads, can deadlock the child (seen: an indexer stuck importing pymilvus).
os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
# The variable alone is not enough here: torch or a tokenizer library asks for the start method
# before jina is imported, which fixes it to fork (jina then only warns "context has already been set").
multiprocessing.set_start_method("spawn", force=True)


FAST = False  # pytest --fast (scripts/test.sh --fast): the edit loop's tier, see pytest_collection_modifyitems


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the tests marked neither `service` nor `gpu`: no Flow, browser, Milvus server or qbank "
        "process (docs/development.md: the edit loop, under a minute on 2 cores)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global FAST
    FAST = bool(config.getoption("--fast"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not FAST:
        return
    left_out = [item for item in items if item.get_closest_marker("service") or item.get_closest_marker("gpu")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in set(left_out)]


def service_only(what: str) -> None:
    """Refuse, under --fast, to start ``what``: a test that starts one is marked `service`, so the fast
    tier stays fast and says which test broke its promise."""
    if FAST:
        pytest.fail(f"this test starts {what}: mark it @pytest.mark.service (the fast tier runs none)", pytrace=False)


@contextlib.contextmanager
def running_flow(**settings: object) -> Iterator[dict[str, str]]:
    """flow.yml of this checkout on free loopback ports (qbank.service.flow.running_flow)."""
    service_only("a Flow")
    with serve_running_flow(REPO / "flow.yml", **settings) as urls:
        yield urls


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from qbank_devtools.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-chinese-clip", "chinese_clip")


@pytest.fixture(scope="session")
def toy_model() -> Path:
    """The toy CLIP trained on drawn figures (qbank_devtools.toy_clip), where the demo finds it:
    scripts/bootstrap.sh trains it once (about 75 s on 2 cores) and every later run reads it (its
    recipe is checked). Tests whose claims need semantics use it."""
    from qbank_devtools.toy_clip import toy_clip

    service_only("the toy CLIP (trained by the bootstrap, else here: about 75 s)")
    return toy_clip(REPO / "models" / "toy-chinese-clip")  # where scripts/bootstrap.sh built it


@pytest.fixture(scope="session")
def milvus_standalone(tmp_path_factory):
    """A real Milvus server (the 2.3.5 standalone of the dev extra's ``milvus`` package) on a free
    loopback port for the whole session; tests that restart it leave it running again."""
    from qbank_devtools.milvus_server import StandaloneMilvus

    service_only("a Milvus server")
    server = StandaloneMilvus(tmp_path_factory.mktemp("milvus-standalone"), free_ports(1)[0])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    from qbank.model.clip import export_onnx

    return export_onnx(str(tiny_model), tmp_path_factory.mktemp("onnx") / "tiny-chinese-clip-onnx")


def png_bytes(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A distinct small PNG per seed (random pixels: the tiny model tells them apart)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
