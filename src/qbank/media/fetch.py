"""Reading what a URI or a path names, bounded in bytes and time: files, http(s), data URIs.

One home for every place that reads an image someone else named: the encoder and the reader (a
Document's ``uri``, under a :class:`FetchPolicy`), the search page's figure route (a stored figure
under ``QBANK_FIGURE_ROOTS``) and ``qbank import`` (a bank's figure paths and URLs, on the client).

Files are opened once and checked from the opened descriptor (regular file, size, real path), then
read from it: checking a path and opening it again let a file swapped for a symlink between the two
be served from outside a root (39 of 200 tries), ``/dev/zero`` was read until the process held 3 GB,
and a FIFO blocked the reader (on the gateway: its one event loop). http(s) reads have a deadline
for the whole download: a per-read timeout let a server sending one byte a second hold an import
past 60 s.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import socket
import ssl
import stat
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024


class FetchError(ValueError):
    """What a URI or path names cannot be read within the rules; the message says which and why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status  # the HTTP status a route answers with


def _label(ref: str | Path) -> str:
    return repr(str(ref)[:200])


def _opened_real_path(fd: int) -> Path | None:
    """The real path of the file behind ``fd`` (Linux /proc), None where the system does not say."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def read_regular_file(
    path: str | Path, max_bytes: int, roots: tuple[Path, ...] | None = None, limit_name: str = ""
) -> bytes:
    """The bytes of the regular file at ``path``: at most ``max_bytes``, known from the opened file
    before reading; with ``roots``, only when the opened file's real path lies under one of them.

    The path is resolved (``..`` and links) and the result opened without following a link at its
    last component and without blocking (a FIFO or device opens, and is then refused as not a
    regular file); the root check is made again on the opened descriptor, so swapping any part of
    the path after the check cannot reach a file outside the roots.
    """
    given = Path(path).expanduser()
    try:
        real = Path(os.path.realpath(given))
    except OSError as exc:  # a link replaced while it was being resolved
        raise FetchError(f"cannot resolve {_label(path)}: {exc.strerror or exc}", 404) from None
    if roots is not None and not any(real.is_relative_to(root) for root in roots):
        raise FetchError(f"{_label(path)} is outside the allowed folders", 403)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise FetchError(f"no file at {_label(path)}", 404) from None
    except PermissionError:
        raise FetchError(f"may not read {_label(path)}", 403) from None
    except OSError as exc:  # ELOOP: the last component became a link after it was resolved
        raise FetchError(f"cannot open {_label(path)}: {exc.strerror or exc}", 403) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise FetchError(f"{_label(path)} is {kind}", 404)
        opened = _opened_real_path(fd)
        if roots is not None and (opened is None or not any(opened.is_relative_to(root) for root in roots)):
            raise FetchError(f"{_label(path)} is outside the allowed folders", 403)
        if info.st_size > max_bytes:
            setting = f" ({limit_name})" if limit_name else ""
            raise FetchError(f"{_label(path)} is {info.st_size} bytes, over the limit of {max_bytes}{setting}", 413)
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= max_bytes and (chunk := os.read(fd, min(CHUNK, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew while being read
            raise FetchError(f"{_label(path)} is over the limit of {max_bytes} bytes", 413)
        return b"".join(chunks)
    except OSError as exc:
        raise FetchError(f"cannot read {_label(path)}: {exc.strerror or exc}", 403) from None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FetchPolicy:
    """What a URI may reach. The defaults are for a service on a network: no files, and http(s)
    only to public addresses (no loopback, private, link-local or metadata ranges). The client,
    reading its own user's bank, allows private hosts (:data:`CLIENT_POLICY`)."""

    file_roots: tuple[Path, ...] = ()
    allow_private_hosts: bool = False
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, uri_roots: str, fetch_private: bool) -> FetchPolicy:
        roots = tuple(Path(p).expanduser().resolve() for p in uri_roots.replace(",", os.pathsep).split(os.pathsep) if p)
        return cls(file_roots=roots, allow_private_hosts=fetch_private)


CLIENT_POLICY = FetchPolicy(allow_private_hosts=True)  # the client's own network; files: read_regular_file


def read_uri(uri: str, max_bytes: int, timeout: float, policy: FetchPolicy) -> bytes:
    """Bytes behind a data URI, a file path / file:// URI, or an http(s) URL: at most ``max_bytes``,
    an http(s) download within ``timeout`` seconds in all, what ``policy`` allows."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "data":
        header, _, payload = uri.partition(",")
        try:
            data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
        except ValueError as exc:
            raise FetchError(f"data URI is not valid base64: {exc}") from None
        return data
    if parsed.scheme in ("http", "https"):
        return fetch_http(uri, max_bytes, timeout, policy)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not policy.file_roots:
            raise FetchError(
                f"{uri[:200]!r}: reading files on the server is off; send the image bytes, "
                "or allow folders with QBANK_URI_ROOTS"
            )
        try:
            return read_regular_file(path, max_bytes, policy.file_roots)
        except FetchError as exc:
            raise FetchError(f"{exc} (QBANK_URI_ROOTS)" if exc.status == 403 else str(exc), exc.status) from None
    raise FetchError(f"unsupported URI scheme {parsed.scheme!r} in {uri[:80]!r}")


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int, policy: FetchPolicy) -> str:
    """The address to connect to; every address the name resolves to must be allowed (no rebinding)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    addresses = [info[4][0] for info in infos]
    if not policy.allow_private_hosts:
        blocked = [a for a in addresses if not _public(a)]
        if blocked:
            raise FetchError(
                f"host {host!r} resolves to non-public address {blocked[0]}; the server fetches only from "
                "public addresses (QBANK_FETCH_PRIVATE=true allows private networks)"
            )
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to whatever the name resolves to next."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_http(uri: str, max_bytes: int, timeout: float, policy: FetchPolicy) -> bytes:
    """GET with the policy checked on every hop (redirects too), a byte cap, and one deadline for
    the whole download: each read waits at most until the deadline and returns what has arrived
    (``read1``), so a server that trickles bytes is cut off on time."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"fetching {uri[:200]!r} timed out: it took over {timeout:g} s in all")
        return left

    url = uri
    for _ in range(policy.max_redirects + 1):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FetchError(f"{uri[:200]!r}: cannot fetch {url[:200]!r} (want an http(s) URL with a host)")
        https = parsed.scheme == "https"
        try:
            port = parsed.port or (443 if https else 80)
        except ValueError:
            raise FetchError(f"{uri[:200]!r}: invalid port") from None
        address = _resolve(parsed.hostname, port, policy)
        connection_type = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
        connection = connection_type(parsed.hostname, port, address, remaining())
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        try:
            connection.request("GET", target, headers={"User-Agent": "qbank", "Accept": "image/*"})
            sock = connection.sock  # kept: the connection lets go of it when the response closes it
            sock.settimeout(remaining())
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchError(f"cannot fetch {uri[:200]!r}: HTTP {response.status} {response.reason}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{uri[:200]!r} is {declared} bytes, over the limit of {max_bytes}")
            chunks, size = [], 0
            while True:
                sock.settimeout(remaining())
                chunk = response.read1(CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"{uri[:200]!r} is over the limit of {max_bytes} bytes")
            return b"".join(chunks)
        except TimeoutError:
            raise FetchError(f"fetching {uri[:200]!r} timed out: it took over {timeout:g} s in all") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"cannot fetch {uri[:200]!r}: {exc}") from None
        finally:
            connection.close()
    raise FetchError(f"{uri[:200]!r}: more than {policy.max_redirects} redirects")
