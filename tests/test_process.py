"""The process contract of `qbank-serve`, tested on the real process tree: SIGTERM and SIGINT stop
everything; a dead executor stops the whole service (exit 1) so a supervisor restarts it; a dead
Milvus Lite process is restarted; a data folder that cannot be written fails the start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, flow_env
from docarray import DocumentArray
from test_contract import stem

from qbank_client import QbankClient

START_TIMEOUT = 180


class Served:
    """`python -m qbank.cli.serve` in its own session (process group), with its output collected."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.url = f"grpc://127.0.0.1:{env['QBANK_GRPC_PORT']}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qbank.cli.serve", "--flow", str(REPO / "flow.yml")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def wait_up(self) -> Served:
        deadline = time.monotonic() + START_TIMEOUT
        for line in self.process.stdout:
            self.lines.append(line)
            if "qbank flow up" in line:
                return self
            assert time.monotonic() < deadline, "qbank-serve did not start in time"
        raise AssertionError(f"qbank-serve exited with {self.process.wait()}:\n{''.join(self.lines[-30:])}")

    def wait_exit(self, within: float) -> int:
        started = time.monotonic()
        try:
            code = self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"qbank-serve still running {within} s later") from None
        self.lines += self.process.stdout.readlines()
        self.elapsed = time.monotonic() - started
        return code

    def stops_cleanly(self, signum: int) -> None:
        """``signum`` to the main process: exit 0 within 12 s (the forced close comes at 15 s) and no
        process left in the group."""
        os.kill(self.process.pid, signum)
        assert self.wait_exit(within=40) == 0
        assert self.elapsed < 12, f"shutdown took {self.elapsed:.1f} s: it was forced, not clean"
        assert "did not stop in time" not in "".join(self.lines)
        assert wait_for(lambda: not self.group_alive())

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        if self.group_alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def descendants(self) -> dict[int, str]:
        """pid -> command line of every process in its process group except itself."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.process.pid:
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ProcessLookupError):
                continue
        return found

    def loaded(self, pid: int, library: str) -> bool:
        try:
            return library in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False


def ports_free(env: dict[str, str]) -> bool:
    for name in ("QBANK_GRPC_PORT", "QBANK_HTTP_PORT", "QBANK_WS_PORT"):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", int(env[name])))
            except OSError:
                return False
    return True


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.fixture
def env(tiny_model, tmp_path):
    return dict(os.environ, **flow_env(model=tiny_model, data_dir=tmp_path / "data"))


@pytest.mark.service
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_main_process_stops_every_process_and_frees_the_ports(env, signum):
    served = Served(env).wait_up()
    try:
        QbankClient(served.url).index(DocumentArray([stem("sig")]))
        assert served.descendants(), "the Flow's processes should be in the group"
        os.kill(served.process.pid, signum)  # to the main process only, as systemd or docker stop do
        assert served.wait_exit(within=40) == 0
        assert wait_for(lambda: not served.group_alive()), f"left running: {served.descendants()}"
        assert wait_for(lambda: ports_free(env))
    finally:
        served.kill()
    again = Served(env).wait_up()  # same ports, same Milvus Lite file: nothing holds them
    try:
        assert QbankClient(again.url).count() == 1
    finally:
        os.kill(again.process.pid, signal.SIGTERM)
        again.wait_exit(within=40)
        again.kill()


@pytest.mark.service
def test_a_killed_executor_stops_the_service_with_exit_1_and_no_orphans(env):
    served = Served(env).wait_up()
    try:
        QbankClient(served.url).index(DocumentArray([stem("dead")]))
        encoders = [pid for pid in served.descendants() if served.loaded(pid, "libtorch_cpu")]
        assert len(encoders) == 1, served.descendants()
        os.kill(encoders[0], signal.SIGKILL)
        assert served.wait_exit(within=40) == 1
        output = "".join(served.lines)
        assert "exited with code -9" in output and "stopping the whole service" in output
        assert wait_for(lambda: not served.group_alive()), f"left running: {served.descendants()}"
        assert wait_for(lambda: ports_free(env))
    finally:
        served.kill()


@pytest.mark.service
def test_searches_in_flight_when_the_reader_is_killed_get_an_error_naming_it(env):
    """kill -9 of the reader under four searching threads: the calls in flight used to fail with
    "ValueError: the buffer is already decompressed" (grpc copies the gateway's empty error message
    into its exception, and jina's lazy request of b"" could not be copied); now they get the
    gateway's UNAVAILABLE naming the reader, and the service exits 1 naming it."""
    import threading

    from qbank_client.transport import error_message

    served = Served(env).wait_up()
    try:
        QbankClient(served.url).index(DocumentArray([stem(f"q{i}") for i in range(10)]))
        errors: list[str] = []
        stop = threading.Event()

        def search() -> None:
            client = QbankClient(served.url)
            while not stop.is_set():
                try:
                    client.text_to_image("三角形", 5)
                except Exception as exc:  # what a caller sees, whatever its type
                    errors.append(f"{type(exc).__name__}: {error_message(exc)}")
                    if "Connection refused" in errors[-1]:
                        return

        threads = [threading.Thread(target=search) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        readers = [
            pid
            for pid in served.descendants()
            if served.loaded(pid, "opencv") and not served.loaded(pid, "libtorch_cpu")
        ]
        assert len(readers) == 1, served.descendants()
        os.kill(readers[0], signal.SIGKILL)
        assert served.wait_exit(within=40) == 1
        stop.set()
        for thread in threads:
            thread.join(30)
        assert errors and not [e for e in errors if "already decompressed" in e], sorted(set(errors))
        assert any("deployment reader" in e for e in errors), sorted(set(errors))
        assert "reader/rep-0" in "".join(served.lines) and "exited with code -9" in "".join(served.lines)
    finally:
        served.kill()


@pytest.mark.service
def test_a_killed_milvus_lite_process_is_restarted_and_nothing_is_lost(env):
    served = Served(env).wait_up()
    try:
        client = QbankClient(served.url)
        client.index(DocumentArray([stem("lite-1"), stem("lite-2")]))
        lite = [pid for pid, cmd in served.descendants().items() if "milvus_lite" in cmd]
        assert len(lite) == 1, served.descendants()
        os.kill(lite[0], signal.SIGKILL)
        time.sleep(0.5)
        assert client.count() == 2  # the next request restarts it from the file
        client.index(DocumentArray([stem("lite-3")]))
        assert client.count() == 3
        relaunched = [pid for pid, cmd in served.descendants().items() if "milvus_lite" in cmd]
        assert len(relaunched) == 1 and relaunched != lite
        assert served.process.poll() is None
    finally:
        os.kill(served.process.pid, signal.SIGTERM)
        served.wait_exit(within=40)
        served.kill()


@pytest.mark.service
def test_a_data_folder_that_cannot_be_written_fails_the_start_with_the_reason(env, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)]).returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        served = Served(dict(env, QBANK_DATA_DIR=str(folder)))
        code = served.wait_exit(within=START_TIMEOUT)
        output = "".join(served.lines)
        assert code != 0 and "qbank flow up" not in output
        assert f"the data folder {folder} cannot be written (Read-only file system)" in output
        assert wait_for(lambda: not served.group_alive())
        served.kill()
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def nested(depth: int) -> dict:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


@pytest.mark.service
def test_malformed_http_and_websocket_input_gets_its_reason_and_never_wedges_shutdown(env):
    import asyncio
    import json
    import urllib.request

    import websockets

    served = Served(env).wait_up()
    http = f"http://127.0.0.1:{env['QBANK_HTTP_PORT']}/post"
    try:
        for depth, expected in ((30, 200), (40, 400), (60, 400)):
            doc = {"id": f"deep-{depth}", "text": "题", "tags": {"question_id": "deep", "deep": nested(depth)}}
            body = json.dumps({"data": [doc], "execEndpoint": "/index"}).encode()
            request = urllib.request.Request(http, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, text = response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                status, text = error.code, error.read().decode()
            assert status == expected, text
            if expected == 400:
                assert "nests" in text and "over the limit of 36" in text

        async def malformed_frames() -> list[str]:
            reasons = []
            for n in range(30):
                async with websockets.connect(f"ws://127.0.0.1:{env['QBANK_WS_PORT']}/") as ws:
                    await ws.send(b"\x00\xffgarbage" if n % 3 == 0 else ["not json {", "[1, 2]"][n % 3 - 1])
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    reasons.append(f"{closed.value.rcvd.code} {closed.value.rcvd.reason}")
            return reasons

        reasons = asyncio.run(malformed_frames())
        assert all(r.startswith("1007 ") for r in reasons), reasons
        assert {r.split(" ", 1)[1] for r in reasons} == {
            "send JSON text frames (or connect with the bytes subprotocol)",
            "frame is not valid JSON",
            "a request must be a JSON object",
        }
        client = QbankClient(f"ws://127.0.0.1:{env['QBANK_WS_PORT']}")
        client.index(DocumentArray([stem("after-garbage")]))
        assert client.count() == 2  # deep-30 and this one

        served.stops_cleanly(signal.SIGINT)
    finally:
        served.kill()


@pytest.mark.service
def test_malformed_grpc_messages_are_refused_by_name_and_never_wedge_shutdown(env):
    """A message that is not a jina DataRequest (here invalid UTF-8 in a string field), on the unary
    and on the streaming data RPC. jina 3.34 parsed it inside its request stream, where the failure
    left a task waiting forever: the gateway then spun at 100 % CPU when told to stop, and only the
    forced close (or SIGKILL) ended it."""
    import grpc
    from jina.types.request.data import DataRequest

    def message(text: str) -> bytes:
        request = DataRequest()
        request.header.exec_endpoint = "/index"
        request.data.docs = DocumentArray([stem(text)])
        return request.proto.SerializeToString()

    bad = message("PLACEHOLDER-XYZ").replace(b"PLACEHOLDER-XYZ", b"\xff\xfe\xfdPLACEHOLDE")
    served = Served(env).wait_up()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{env['QBANK_GRPC_PORT']}") as channel:
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as error:
                    channel.unary_unary("/jina.JinaSingleDataRequestRPC/process_single_data")(bad, timeout=30)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a valid jina request" in error.value.details()
            stream = channel.stream_stream("/jina.JinaRPC/Call")
            with pytest.raises(grpc.RpcError) as error:
                list(stream(iter([message("grpc-good"), bad, message("never-read")]), timeout=30))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "message 2 of the stream" in error.value.details()
        client = QbankClient(served.url)
        assert client.existing(["grpc-good:text:0", "never-read:text:0"]) == {"grpc-good:text:0"}
        client.index(DocumentArray([stem("after-bad-grpc")]))
        assert client.count() == 2

        served.stops_cleanly(signal.SIGTERM)
    finally:
        served.kill()


def post_json(url: str, payload: dict | bytes) -> tuple[int, str]:
    import json
    import urllib.error
    import urllib.request

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # ascii: "\\ud800" escaped
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.service
def test_lone_surrogates_oversize_messages_and_bad_stream_doc_are_refused_by_name_and_stop_stays_clean(env):
    """Lone surrogates in a text, id, tag, parameter or /questions id got a bare 500 over HTTP and a
    close without reason over WebSocket, after which SIGINT took 16-17 s; a 200 MB gRPC message was
    carried through every executor; stream_doc with invalid UTF-8 answered UNKNOWN. Now: 400 / 1007
    naming the field, every protocol refuses a message over QBANK_MAX_REQUEST_BYTES at the gateway,
    INVALID_ARGUMENT, and a clean stop."""
    import asyncio

    import grpc
    import websockets
    from jina.proto import jina_pb2

    env = dict(env, QBANK_MAX_IMAGE_BYTES=str(1024 * 1024), QBANK_MAX_REQUEST_BYTES=str(2 * 1024 * 1024))
    served = Served(env).wait_up()
    http = f"http://127.0.0.1:{env['QBANK_HTTP_PORT']}/post"
    ws_url = f"ws://127.0.0.1:{env['QBANK_WS_PORT']}/"
    lone = "\ud800"
    doc = {"id": "s-1", "text": "题", "tags": {"question_id": "s-1"}}
    cases = {
        "data[0].text": {"data": [dict(doc, text="题" + lone)], "execEndpoint": "/index"},
        "data[0].id": {"data": [dict(doc, id="s" + lone)], "execEndpoint": "/index"},
        "data[0].tags.subject": {
            "data": [dict(doc, tags={"question_id": "s-1", "subject": lone})],
            "execEndpoint": "/index",
        },
        "parameters.filter.subject": {
            "data": [{"text": "题"}],
            "parameters": {"filter": {"subject": lone}},
            "execEndpoint": "/search",
        },
        "parameters.question_ids[1]": {"parameters": {"question_ids": ["a", lone]}, "execEndpoint": "/questions"},
    }
    try:
        for field, payload in cases.items():
            status, text = post_json(http, payload)
            assert status == 400 and f"field {field} (U+D800) holds a lone surrogate" in text, (field, status, text)

        # A 3 MB body declared: refused from its Content-Length, before the body is read. Only the
        # headers are sent (sending the body raced the early answer: BrokenPipe on the client).
        from http.client import HTTPConnection
        from urllib.parse import urlsplit

        connection = HTTPConnection(urlsplit(http).netloc, timeout=60)
        connection.putrequest("POST", urlsplit(http).path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(3 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        status, text = response.status, response.read().decode()
        connection.close()
        assert status == 413 and "QBANK_MAX_REQUEST_BYTES" in text and "2097152" in text, text

        async def frames() -> list[str]:
            reasons = []
            sent = [
                '{"data": [{"text": "\\ud800"}], "execEndpoint": "/index"}',
                "x" * (3 * 1024 * 1024),  # over the limit, under the library's cap (twice the limit)
                "x" * (5 * 1024 * 1024),  # over the library's cap
            ]
            for frame in sent:
                async with websockets.connect(ws_url, max_size=None) as ws:
                    await ws.send(frame)
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 30)
                    reasons.append(f"{closed.value.rcvd.code} {closed.value.rcvd.reason}")
            return reasons

        surrogate, oversize, huge = asyncio.run(frames())
        assert surrogate.startswith("1007 ") and "data[0].text" in surrogate and "lone surrogate" in surrogate
        assert oversize.startswith("1009 ") and "QBANK_MAX_REQUEST_BYTES" in oversize
        assert huge.startswith("1009")

        with grpc.insecure_channel(
            f"127.0.0.1:{env['QBANK_GRPC_PORT']}", options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            with pytest.raises(grpc.RpcError) as error:
                channel.unary_unary("/jina.JinaSingleDataRequestRPC/process_single_data")(b"\n" * (3 << 20), timeout=30)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            single = jina_pb2.SingleDocumentRequestProto()
            single.header.exec_endpoint = "/index"
            single.document.CopyFrom(stem("PLACEHOLDER-XYZ").to_protobuf())
            bad = single.SerializeToString().replace(b"PLACEHOLDER-XYZ", b"\xff\xfe\xfdPLACEHOLDE")
            with pytest.raises(grpc.RpcError) as error:
                list(channel.unary_stream("/jina.JinaSingleDocumentRequestRPC/stream_doc")(bad, timeout=30))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
            assert "not a valid jina request" in error.value.details()

        client = QbankClient(served.url)
        client.index(DocumentArray([stem("after-surrogates")]))
        assert client.count() == 1  # nothing of the refused requests was stored

        served.stops_cleanly(signal.SIGINT)
    finally:
        served.kill()


@pytest.mark.service
def test_a_signal_during_the_start_leaves_no_process_behind(env):
    served = Served(env)  # its output is not read: the pipe holds the start's few lines
    try:
        assert wait_for(lambda: len(served.descendants()) >= 3, timeout=60), "the Flow's processes never started"
        os.kill(served.process.pid, signal.SIGTERM)  # before "qbank flow up"
        served.wait_exit(within=40)
        assert "qbank flow up" not in "".join(served.lines), "the start finished first: the test needs a slower start"
        assert wait_for(lambda: not served.group_alive()), f"left running: {served.descendants()}"
        assert wait_for(lambda: ports_free(env))
    finally:
        served.kill()


STARTS_A_SERVER = ("StandaloneMilvus(", "running_flow(", "MilvusClient(", "ItemStore(")
BENCH_SCRIPT = """
import sys, time
from pathlib import Path
from qbank_devtools.milvus_server import StandaloneMilvus
from qbank_devtools.signals import exit_on_sigterm

exit_on_sigterm()
with StandaloneMilvus(Path(sys.argv[1]), int(sys.argv[2])) as server:
    print("up", server.pid, flush=True)
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False  # reaped between the two looks


@pytest.mark.service
def test_sigterm_to_a_bench_script_stops_the_milvus_server_it_started(tmp_path):
    """A bench's main calls exit_on_sigterm(): SIGTERM unwinds its ``with`` blocks, so the standalone
    stops with it (Python's default left it running, holding its ports and the next run's start)."""
    from qbank.service.flow import free_ports

    port = free_ports(1)[0]
    script = subprocess.Popen(
        [sys.executable, "-c", BENCH_SCRIPT, str(tmp_path / "milvus"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        line = script.stdout.readline()
        assert line.startswith("up "), line + script.stdout.read()
        milvus = int(line.split()[1])
        assert alive(milvus)
        os.kill(script.pid, signal.SIGTERM)
        assert script.wait(timeout=60) == 128 + signal.SIGTERM
        assert wait_for(lambda: not alive(milvus), 15), f"Milvus pid {milvus} outlived the script"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # its port is free again
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()


def test_every_bench_that_starts_a_server_stops_it_on_sigterm():
    """The same, for each bench script: whichever starts a Milvus server, Milvus Lite or a Flow
    calls exit_on_sigterm() first thing in its main."""
    missing = []
    for path in sorted((REPO / "bench").glob("*.py")):
        source = path.read_text()
        handled = "exit_on_sigterm()" in source or "signal.signal(signal.SIGTERM" in source  # search_worker: no qbank
        if any(start in source for start in STARTS_A_SERVER) and not handled:
            missing.append(path.name)
    assert not missing, f"bench scripts that start a server without exit_on_sigterm(): {missing}"


@pytest.mark.service
def test_ready_means_an_import_sent_that_moment_succeeds_and_probes_log_no_errors(env):
    """A script polls GET / while qbank-serve starts and imports the moment it says ready: no error
    (jina's own GET / answered 200 while the encoder still loaded: 'Communication error with
    deployment encoder'). Every probe passes through the executors without an ERROR line."""
    import json
    import threading
    import urllib.error
    import urllib.request

    from docarray import Document

    served = Served(env)
    threading.Thread(target=lambda: served.lines.extend(served.process.stdout), daemon=True).start()
    base = f"http://127.0.0.1:{env['QBANK_HTTP_PORT']}"
    statuses: list[int | str] = []
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/", timeout=10) as response:
                    statuses.append(response.status)
                    assert json.loads(response.read()) == {"ready": True}
                    break
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
                assert exc.code == 503 and "ready" in json.loads(exc.read())
            except OSError:
                statuses.append("down")
            time.sleep(0.1)
        assert statuses and statuses[-1] == 200, statuses[-10:]
        client = QbankClient(served.url)
        client.index(DocumentArray([Document(id="ready:text:0", text="三角形的内角和", tags={"question_id": "ready"})]))
        assert client.count() == 1
        for path in ("/dry_run", "/", "/dry_run"):
            with urllib.request.urlopen(base + path, timeout=30) as response:
                assert response.status == 200
        time.sleep(1)
        logged = "".join(served.lines)
        assert "_jina_dry_run_" not in logged and "UnknownEndpointError" not in logged, logged[-2000:]
    finally:
        served.kill()


@pytest.mark.service
def test_a_missing_model_is_said_in_the_last_line_with_what_to_set_and_the_ready_toy(env, tmp_path):
    """No model on this machine and no hub (HF_HUB_OFFLINE): qbank-serve stops at once, and its last
    line says what to set and names the model that is ready here (the demo's toy CLIP in ./models).
    Before, it retried the hub for 45 s and ended "the service did not start: " with nothing after."""
    toy = tmp_path / "models" / "toy-chinese-clip"
    toy.mkdir(parents=True)
    (toy / "config.json").write_text("{}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "qbank.cli.serve", "--flow", str(REPO / "flow.yml")],
        env=dict(env, QBANK_MODEL="nowhere/missing-clip", HF_HUB_OFFLINE="1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert done.returncode != 0 and time.monotonic() - started < 60, last
    assert "'nowhere/missing-clip'" in last and "set QBANK_MODEL" in last, last
    assert "QBANK_MODEL=models/toy-chinese-clip (the demo's toy CLIP)" in last, last
