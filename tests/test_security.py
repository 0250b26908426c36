"""Security: what server-side URI reading may reach, and the gateway's token on every protocol.

Each refusal is proven against a real loopback web server; the token is checked through a real
Flow with clip_client and qbank_client on gRPC, HTTP and WebSocket.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request

import pytest
from clip_client import Client
from conftest import patched_env, png_bytes, running_flow
from docarray import Document, DocumentArray
from test_flow import question_items

from qbank.media import fetch
from qbank.media.images import FetchPolicy, ImageInputError, ImageLimits, read_uri
from qbank_client import QbankClient

PNG = png_bytes(7)
TOKEN = "s3cret-token"
REFUSED = "(?i)unauthenticated|401|403|missing or wrong token"


class Handler(http.server.BaseHTTPRequestHandler):
    """/fig.png, /big (no Content-Length), /slow, /loop (redirects to itself), /hop (to 127.0.0.2)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/fig.png":
            self._send(200, PNG, length=True)
        elif self.path == "/big":
            self._send(200, b"x" * 50_000, length=False)
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, PNG, length=True)
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/hop":
            self._redirect(f"http://127.0.0.2:{port}/fig.png")
        else:
            self._send(404, b"", length=True)

    def _send(self, status: int, body: bytes, length: bool) -> None:
        self.send_response(status)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


LIMITS = ImageLimits(max_bytes=20_000, fetch_timeout=1.0)
PRIVATE_OK = FetchPolicy(allow_private_hosts=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://{web}/fig.png",
        "http://localhost:{port}/fig.png",
        "http://[::1]:{port}/fig.png",
        "http://2130706433:{port}/fig.png",  # 127.0.0.1 written as a number
        "http://[::ffff:127.0.0.1]:{port}/fig.png",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.1.2.3/fig.png",
        "http://192.168.0.1/fig.png",
        "http://0.0.0.0:{port}/fig.png",
    ],
)
def test_default_policy_fetches_only_from_public_addresses(web, url):
    url = url.format(web=web, port=web.split(":")[1])
    with pytest.raises(ImageInputError, match="non-public address|cannot resolve"):
        read_uri(url, LIMITS, FetchPolicy())


def test_with_private_allowed_fetches_are_still_capped(web):
    assert read_uri(f"http://{web}/fig.png", LIMITS, PRIVATE_OK) == PNG
    with pytest.raises(ImageInputError, match="over the limit of 20000 bytes"):
        read_uri(f"http://{web}/big", LIMITS, PRIVATE_OK)  # no Content-Length: counted while reading
    started = time.monotonic()
    with pytest.raises(ImageInputError, match="timed out"):
        read_uri(f"http://{web}/slow", LIMITS, PRIVATE_OK)
    assert time.monotonic() - started < 2.5
    with pytest.raises(ImageInputError, match="more than 3 redirects"):
        read_uri(f"http://{web}/loop", LIMITS, PRIVATE_OK)
    with pytest.raises(ImageInputError, match="HTTP 404"):
        read_uri(f"http://{web}/missing", LIMITS, PRIVATE_OK)


def test_every_redirect_hop_is_checked(web, monkeypatch):
    """A public URL that redirects inwards is refused at the hop (here 127.0.0.1 plays 'public')."""
    monkeypatch.setattr(fetch, "_public", lambda address: address == "127.0.0.1")
    assert read_uri(f"http://{web}/fig.png", LIMITS, FetchPolicy()) == PNG
    with pytest.raises(ImageInputError, match="non-public address 127.0.0.2"):
        read_uri(f"http://{web}/hop", LIMITS, FetchPolicy())


def test_files_are_off_by_default_and_confined_to_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "fig.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(PNG)
    (root / "link.png").symlink_to(outside / "secret.png")
    with pytest.raises(ImageInputError, match="reading files on the server is off"):
        read_uri(str(root / "fig.png"), LIMITS, FetchPolicy())
    policy = FetchPolicy.from_settings(str(root), fetch_private=False)
    assert read_uri(str(root / "fig.png"), LIMITS, policy) == PNG
    assert read_uri((root / "fig.png").as_uri(), LIMITS, policy) == PNG
    for uri in (str(root / ".." / "outside" / "secret.png"), str(root / "link.png"), "file:///etc/passwd"):
        with pytest.raises(ImageInputError, match="outside the allowed folders"):
            read_uri(uri, LIMITS, policy)
    with pytest.raises(ImageInputError, match="unsupported URI scheme 'ftp'"):
        read_uri("ftp://example.com/fig.png", LIMITS, policy)


# -- through the Flow: token on every protocol, default fetch policy -----------------------------
@pytest.fixture(scope="module")
def guarded(tiny_model, tmp_path_factory):
    with patched_env({"QBANK_AUTH_TOKEN": TOKEN, "QBANK_CORS_ORIGINS": ALLOWED_ORIGIN}):
        with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("guarded")) as urls:
            yield urls


ALLOWED_ORIGIN = "https://exams.example.com"


def preflight(url: str, origin: str) -> tuple[int, str | None]:
    """A browser's CORS preflight for a POST with a token from a page of ``origin``."""
    request = urllib.request.Request(
        url,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("access-control-allow-origin")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("access-control-allow-origin")


@pytest.mark.service
def test_only_the_allowed_origins_may_call_from_a_browser_and_still_need_the_token(guarded):
    """QBANK_CORS_ORIGINS lists the pages of other origins that may call the HTTP API: their preflight
    is answered (it carries no token), another origin's is not, and the call itself still needs the
    token. With the setting unset no CORS header is sent (test_flow.py)."""
    assert preflight(guarded["http"] + "/post", ALLOWED_ORIGIN) == (200, ALLOWED_ORIGIN)
    status, allowed = preflight(guarded["http"] + "/post", "https://evil.example.net")
    assert status == 400 and allowed is None
    body = json.dumps({"execEndpoint": "/count", "data": [], "parameters": {}}).encode()
    request = urllib.request.Request(
        guarded["http"] + "/post", body, {"Origin": ALLOWED_ORIGIN, "Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401


@pytest.mark.service
def test_clip_client_needs_the_token_on_grpc_and_http(guarded):
    for protocol in ("grpc", "http"):
        url = guarded[protocol]
        assert len(Client(url, credential={"Authorization": TOKEN}).encode(["有令牌"])[0]) == 16
        with pytest.raises(Exception, match=REFUSED):
            Client(url).encode(["没有令牌"])
        with pytest.raises(Exception, match=REFUSED):
            Client(url, credential={"Authorization": "wrong"}).encode(["错误令牌"])
    with patched_env({"CLIP_AUTH_TOKEN": TOKEN}):  # clip_client's environment variable
        assert len(Client(guarded["grpc"]).encode(["环境变量"])[0]) == 16
        assert len(Client(guarded["http"]).encode(["环境变量"])[0]) == 16


@pytest.mark.service
def test_qbank_client_sends_the_token_on_every_protocol(guarded):
    docs = question_items("guard", 1, "数学")
    for url in guarded.values():
        QbankClient(url, token=TOKEN).index(docs)
        assert QbankClient(url, token=f"Bearer {TOKEN}").count() == 2
        with pytest.raises(Exception, match=REFUSED):
            QbankClient(url, token="").count()
        with pytest.raises(Exception, match=REFUSED):
            QbankClient(url, token="wrong").index(question_items("intruder", 1, "数学"))
    assert QbankClient(guarded["grpc"], token=TOKEN).count() == 2  # nothing written without the token


@pytest.mark.service
def test_cli_says_the_token_is_wrong(guarded, capsys):
    from qbank_client.cli import main

    for url in guarded.values():
        assert main(["--url", url, "--token", "wrong", "stats"]) == 1
        assert "token" in capsys.readouterr().err
        assert main(["--url", url, "--token", TOKEN, "--json", "stats"]) == 0


@pytest.mark.service
def test_health_probes_stay_open_and_everything_else_is_closed(guarded):
    http_base = guarded["http"]
    with urllib.request.urlopen(http_base + "/", timeout=5) as response:
        assert response.status == 200
    for path in ("/status", "/docs", "/post"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(http_base + path, timeout=5)
        assert error.value.code == 401
    with urllib.request.urlopen(http_base + "/dry_run", timeout=30) as response:  # `jina ping` over HTTP
        assert response.status == 200 and json.loads(response.read())["code"] == 0
    from jina import Client as JinaClient

    for protocol in ("grpc", "http", "websocket"):  # jina ping / is_flow_ready on every protocol, no token
        host, port = guarded[protocol].split("://")[1].split(":")
        assert JinaClient(host=host, port=int(port), protocol=protocol).is_flow_ready(timeout=5), protocol


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP (address, port) pairs process ``pid`` listens on, from /proc (no ss needed)."""
    import ipaddress
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                raw, port = fields[1].split(":")
                packed = bytes.fromhex(raw)
                # /proc writes each 32-bit word of the address in host (little-endian) order
                packed = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
                address = ipaddress.ip_address(packed)
                if getattr(address, "ipv4_mapped", None):
                    address = address.ipv4_mapped
                found.append((str(address), int(port, 16)))
    return found


def executor_ports() -> dict[str, list[tuple[str, int]]]:
    """The addresses each executor process of this test's Flow listens on."""
    import multiprocessing

    listening: dict[str, list[tuple[str, int]]] = {}
    for child in multiprocessing.active_children():
        name = child.name.split("/")[0]
        if name in ("reader", "encoder", "indexer"):
            listening.setdefault(name, []).extend(listening_sockets(child.pid))
    return listening


def outside_address() -> str | None:
    """An address of this machine that is not loopback (how another machine would come in)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.service
def test_the_executors_take_nothing_but_the_gateway(guarded):
    """With a token on the gateway, /count and /delete sent straight to an executor's own port (the
    indexer answered {'count': 1004.0} from anywhere before) are refused: the executors listen on
    loopback only."""
    import os
    import urllib.error

    import grpc
    from jina import Client as JinaClient

    QbankClient(guarded["grpc"], token=TOKEN).index(question_items("door", 1, "数学"))
    listening = executor_ports()
    assert sorted(listening) == ["encoder", "indexer", "reader"], listening
    # Each executor's Prometheus port (jina binds it on every interface) serves counters only: a
    # request to it reads metrics and reaches no endpoint (docs/operations.md).
    metrics = {int(os.environ[f"QBANK_{part.upper()}_METRICS_PORT"]) for part in listening}
    ports = {part: [(a, p) for a, p in found if p not in metrics] for part, found in listening.items()}
    assert all(address == "127.0.0.1" for found in ports.values() for address, _ in found), listening
    for port in metrics:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"qbank_refusals_total" in response.read()
        body = json.dumps({"execEndpoint": "/delete", "parameters": {"question_ids": ["door"]}}).encode()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/post", body), timeout=5
            ) as answer:
                assert b"deleted" not in answer.read()
        except urllib.error.HTTPError as refused:
            assert refused.code in (404, 405, 501)
    outside = outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback to come in from")
    for found in ports.values():
        for _, port in found:
            for endpoint in ("/count", "/delete"):
                client = JinaClient(host=outside, port=port, protocol="grpc")
                with pytest.raises(
                    (ConnectionError, grpc.RpcError, Exception), match="(?i)unavailable|connect|refused"
                ):
                    client.post(endpoint, parameters={"question_ids": ["door"]}, timeout=5)
    assert QbankClient(guarded["grpc"], token=TOKEN).count() >= 2  # nothing was deleted


@pytest.mark.service
def test_readiness_means_every_executor_answers_and_probes_log_no_errors(guarded, capfd):
    http_base = guarded["http"]
    for _ in range(3):
        with urllib.request.urlopen(http_base + "/dry_run", timeout=30) as response:
            assert json.loads(response.read())["code"] == 0
        with urllib.request.urlopen(http_base + "/", timeout=10) as response:
            assert json.loads(response.read()) == {"ready": True}
    time.sleep(0.5)
    logged = capfd.readouterr()
    assert "_jina_dry_run_" not in logged.out + logged.err  # 42 ERROR lines a probe before


@pytest.mark.service
def test_served_flow_refuses_loopback_urls_and_files_by_default(guarded, web, tmp_path):
    (tmp_path / "fig.png").write_bytes(PNG)
    client = QbankClient(guarded["grpc"], token=TOKEN)
    for doc_id, uri, reason in (
        ("loopback", f"http://{web}/fig.png", "non-public address 127.0.0.1"),
        ("metadata", "http://169.254.169.254/latest/meta-data/", "non-public address 169.254.169.254"),
        ("file", str(tmp_path / "fig.png"), "reading files on the server is off"),
    ):
        with pytest.raises(Exception, match=f"{doc_id}.*{reason}"):
            client.post("/encode", DocumentArray([Document(id=doc_id, uri=uri)]))
