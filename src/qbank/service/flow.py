"""Start flow.yml: working defaults for every variable it reads, supervision, and the one helper
(`running_flow`) that tests, benchmarks and the demo use to start it on free ports."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qbank.config import FLOW_ENV_DEFAULTS, ServeSettings, check_flow_topology


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open together, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, and restore what was there."""
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


# Where the gateway and each executor serve their Prometheus metrics (flow.yml: port_monitoring).
METRICS_PORTS = {
    "gateway": "QBANK_METRICS_PORT",
    "reader": "QBANK_READER_METRICS_PORT",
    "encoder": "QBANK_ENCODER_METRICS_PORT",
    "indexer": "QBANK_INDEXER_METRICS_PORT",
}


def metrics_urls() -> dict[str, str]:
    """Where the running Flow's parts serve their metrics, by part, from the environment it started in."""
    return {part: f"http://127.0.0.1:{os.environ[name]}/metrics" for part, name in METRICS_PORTS.items()}


def flow_env(**settings: object) -> dict[str, str]:
    """QBANK_* variables for a Flow on free loopback ports, one replica each, plus ``settings``
    (``model=...`` becomes QBANK_MODEL)."""
    ports = [name for name in FLOW_ENV_DEFAULTS if name.endswith("_PORT")]  # the gateway's and the metrics'
    env = {
        **{name: str(port) for name, port in zip(ports, free_ports(len(ports)), strict=True)},
        **{name: "1" for name in FLOW_ENV_DEFAULTS if name.endswith("_REPLICAS")},
    }
    env.update({f"QBANK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def running_flow(flow_file: str | Path | None = None, **settings: object) -> Iterator[dict[str, str]]:
    """Start a flow YAML (default flow.yml) on free loopback ports with QBANK_* ``settings``; yields the
    three client URLs by protocol. The one way tests, benchmarks and tools start a Flow in-process."""
    env = flow_env(**settings)
    with patched_env(env):
        with load_flow(flow_file):
            yield {
                "grpc": f"grpc://127.0.0.1:{env['QBANK_GRPC_PORT']}",
                "http": f"http://127.0.0.1:{env['QBANK_HTTP_PORT']}",
                "websocket": f"ws://127.0.0.1:{env['QBANK_WS_PORT']}",
            }


def apply_flow_defaults() -> dict[str, str]:
    """Fill in QBANK_* variables flow.yml needs, leaving any the operator set."""
    for name, value in FLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # Executors in fresh interpreters: a fork of a process holding gRPC/torch threads can deadlock.
    os.environ.setdefault("JINA_MP_START_METHOD", "spawn")
    check_flow_topology(dict(os.environ))
    return {name: os.environ[name] for name in FLOW_ENV_DEFAULTS}


def load_flow(flow_file: str | Path | None = None):
    """The Flow from flow.yml, with relative executor paths resolved against the file's folder."""
    from jina import Flow

    apply_flow_defaults()
    path = Path(flow_file or ServeSettings.resolve().flow or "flow.yml").resolve()
    if not path.is_file():
        raise FileNotFoundError(f"flow file {path} not found: run from the project folder or pass --flow / QBANK_FLOW")
    return Flow.load_config(str(path), extra_search_paths=[str(path.parent)])


logger = logging.getLogger("qbank.service.flow")
CLOSE_TIMEOUT = 15.0  # seconds the Flow gets to close before its processes are killed
WATCH_INTERVAL = 0.5


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived: unwinds whatever the main thread is doing, so the Flow closes."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PartDied(RuntimeError):
    """A process of the Flow (gateway or executor) exited while the service was up."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM (what systemd, Docker and Kubernetes send) and SIGINT both raise :class:`Stopped` in
    the main thread. Before this, SIGTERM killed qbank-serve alone and left the gateway and the
    executors running, holding the ports and the Milvus Lite lock."""

    def on_signal(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not interrupt the close
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def watch(children: list) -> None:
    """Raise PartDied as soon as one of ``children`` has exited (the main thread waits here).

    jina does not notice a dead executor: after ``kill -9`` of one, the gateway kept answering health
    checks while every request failed. Exiting non-zero instead lets a supervisor (systemd,
    Kubernetes, Docker) restart the whole service, and nothing answers health checks meanwhile.
    """
    while True:
        for child in children:
            if not child.is_alive():
                raise PartDied(f"Flow process {child.name} (pid {child.pid}) exited with code {child.exitcode}")
        time.sleep(WATCH_INTERVAL)


def release_dead_pods(flow) -> None:
    """Mark the pods whose process is gone as shut down: jina's close waits ``timeout_ctrl`` (60 s)
    for a shutdown signal that a killed process never sends (a close took 62 s after kill -9).
    Reads jina 3.34's Deployment internals (head, gateway and replica pods), which are pinned."""
    for deployment in getattr(flow, "_deployment_nodes", {}).values():
        pods = [getattr(deployment, "head_pod", None), getattr(deployment, "gateway_pod", None)]
        for replicas in (getattr(deployment, "shards", None) or {}).values():
            pods += list(getattr(replicas, "_pods", []))
        for pod in pods:
            worker = getattr(pod, "worker", None)
            if worker is not None and not worker.is_alive() and hasattr(pod, "is_shutdown"):
                pod.is_shutdown.set()


def force_close(flow, children: list) -> None:
    """The close took too long: kill what runs and let jina's close finish without waiting for them."""
    kill_leftovers(children)
    for child in children:
        child.join(timeout=5)
    release_dead_pods(flow)


def kill_leftovers(children: list) -> None:
    for child in children:
        if child.is_alive():
            logger.warning("killing %s (pid %s): it did not stop in time", child.name, child.pid)
            child.kill()


@contextlib.contextmanager
def supervised(flow) -> Iterator[list]:
    """Start ``flow``; yield its processes; close it on leaving, killing what has not stopped
    within CLOSE_TIMEOUT (a close once took 62 s after an executor was killed)."""
    timer = None
    children: list = []
    try:
        with flow:
            children = multiprocessing.active_children()
            timer = threading.Timer(CLOSE_TIMEOUT, force_close, args=(flow, children))
            timer.daemon = True
            try:
                yield children
            finally:
                timer.start()  # the deadline covers the close that follows
                release_dead_pods(flow)
    finally:
        if timer is not None:
            timer.cancel()
        kill_leftovers(children)


def run(flow, on_up: Callable[[], None] | None = None, serve: bool = True) -> int:
    """Run ``flow`` until SIGTERM/SIGINT (exit code 0) or until a part of it dies (1).

    ``on_up`` runs once it is up (the demo imports its bank there); ``serve=False`` returns after it.
    """
    code = 0
    try:
        with stop_on_signals(), supervised(flow) as children:
            if on_up:
                on_up()
            if serve:
                watch(children)
    except Stopped as stop:
        logger.info("stopped by %s", stop)
    except PartDied as exc:
        logger.error("%s: stopping the whole service (exit 1) so that a supervisor restarts it", exc)
        code = 1
    return code
