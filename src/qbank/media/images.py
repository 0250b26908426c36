"""Turn what clients send (bytes, data URI, file path, http(s) URL, array) into a PIL image.

Limits are checked before a full decode: byte size of the payload, and the declared pixel count
(a decompression bomb declares a huge size in a tiny file). URIs are read on the server, so a
:class:`FetchPolicy` decides what they may reach: files only under configured folders, and http(s)
only to public addresses, checked on every redirect and pinned against DNS rebinding.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import os
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageInputError(ValueError):
    """An image input cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    fetch_timeout: float = 10.0


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode image bytes to RGB, refusing empty, oversized, corrupt and bomb inputs."""
    if not data:
        raise ImageInputError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageInputError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageInputError(
                f"image declares {width}x{height} pixels, over the limit of {limits.max_pixels} (QBANK_MAX_IMAGE_PIXELS)"
            )
        image.load()
    except Image.DecompressionBombError as exc:  # Pillow's own guard, also before decoding
        raise ImageInputError(f"refused as a decompression bomb before decoding: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageInputError(f"not a readable image: {exc}") from None
    return image.convert("RGB")


def image_from_array(array: np.ndarray, limits: ImageLimits | None = None) -> Image.Image:
    """An HxWx{1,3,4} or HxW array (uint8, ints in 0..255, or floats in [0, 1]) as sent in ``.tensor``,
    held to the same pixel limit as encoded images (a 49-megapixel tensor was once encoded while the
    same image as PNG was refused)."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # CxHxW -> HxWxC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageInputError(f"tensor of shape {tuple(array.shape)} is not an image (want HxWx3)")
    if min(array.shape[:2]) < 1:
        raise ImageInputError(f"tensor of shape {tuple(array.shape)} is empty")
    max_pixels = (limits or ImageLimits()).max_pixels
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageInputError(
            f"tensor of {array.shape[0]}x{array.shape[1]} pixels is over the limit of {max_pixels} pixels "
            "(QBANK_MAX_IMAGE_PIXELS)"
        )
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.integer):  # HTTP/JSON turns uint8 pixels into int64
        if array.min() < 0 or array.max() > 255:
            raise ImageInputError(f"integer tensor values must be 0..255, got {array.min()}..{array.max()}")
        pixels = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageInputError("tensor holds NaN or infinite values")
        pixels = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    else:
        raise ImageInputError(f"tensor dtype {array.dtype} is not an image dtype (want uint8, 0..255 ints or float)")
    return Image.fromarray(pixels).convert("RGB")


@dataclass(frozen=True)
class FetchPolicy:
    """What a server-side URI may reach. The defaults are for a service on a network: no files,
    and http(s) only to public addresses (no loopback, private, link-local or metadata ranges)."""

    file_roots: tuple[Path, ...] = ()
    allow_private_hosts: bool = False
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, uri_roots: str, fetch_private: bool) -> FetchPolicy:
        roots = tuple(Path(p).expanduser().resolve() for p in uri_roots.replace(",", os.pathsep).split(os.pathsep) if p)
        return cls(file_roots=roots, allow_private_hosts=fetch_private)


def read_uri(uri: str, limits: ImageLimits, policy: FetchPolicy) -> bytes:
    """Bytes behind a data URI, a file path / file:// URI, or an http(s) URL, within limits and policy."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "data":
        header, _, payload = uri.partition(",")
        try:
            data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
        except ValueError as exc:
            raise ImageInputError(f"data URI is not valid base64: {exc}") from None
        return data
    if parsed.scheme in ("http", "https"):
        return _fetch_http(uri, limits, policy)
    if parsed.scheme in ("", "file"):
        return _read_file(
            Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri), uri, limits, policy
        )
    raise ImageInputError(f"unsupported URI scheme {parsed.scheme!r} in {uri[:80]!r}")


def _read_file(path: Path, uri: str, limits: ImageLimits, policy: FetchPolicy) -> bytes:
    if not policy.file_roots:
        raise ImageInputError(
            f"{uri[:200]!r}: reading files on the server is off; send the image bytes, "
            "or allow folders with QBANK_URI_ROOTS"
        )
    real = path.expanduser().resolve()  # follows symlinks and '..': the real file must be under a root
    if not any(real.is_relative_to(root) for root in policy.file_roots):
        raise ImageInputError(f"{uri[:200]!r} is outside the allowed folders (QBANK_URI_ROOTS)")
    try:
        size = real.stat().st_size
        if size > limits.max_bytes:
            raise ImageInputError(f"{uri[:200]!r} is {size} bytes, over the limit of {limits.max_bytes}")
        return real.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"cannot read {uri[:200]!r}: {exc.strerror or exc}") from None


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
        raise ImageInputError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    addresses = [info[4][0] for info in infos]
    if not policy.allow_private_hosts:
        blocked = [a for a in addresses if not _public(a)]
        if blocked:
            raise ImageInputError(
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


def _fetch_http(uri: str, limits: ImageLimits, policy: FetchPolicy) -> bytes:
    """GET with the policy checked on every hop (redirects too), a byte cap and an overall deadline."""
    deadline = time.monotonic() + limits.fetch_timeout
    url = uri
    for _ in range(policy.max_redirects + 1):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ImageInputError(f"{uri[:200]!r}: cannot fetch {url[:200]!r} (want an http(s) URL with a host)")
        https = parsed.scheme == "https"
        try:
            port = parsed.port or (443 if https else 80)
        except ValueError:
            raise ImageInputError(f"{uri[:200]!r}: invalid port") from None
        address = _resolve(parsed.hostname, port, policy)
        connection_type = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
        connection = connection_type(parsed.hostname, port, address, max(0.1, deadline - time.monotonic()))
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        try:
            connection.request("GET", target, headers={"User-Agent": "qbank-encoder", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ImageInputError(f"cannot fetch {uri[:200]!r}: HTTP {response.status} {response.reason}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise ImageInputError(f"{uri[:200]!r} is {declared} bytes, over the limit of {limits.max_bytes}")
            chunks, size = [], 0
            while chunk := response.read(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > limits.max_bytes:
                    raise ImageInputError(f"{uri[:200]!r} is over the limit of {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ImageInputError(f"fetching {uri[:200]!r} took over {limits.fetch_timeout} s")
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            raise ImageInputError(f"cannot fetch {uri[:200]!r}: {exc}") from None
        finally:
            connection.close()
    raise ImageInputError(f"{uri[:200]!r}: more than {policy.max_redirects} redirects")


def document_image(doc: Any, limits: ImageLimits, policy: FetchPolicy) -> Image.Image:
    """The image a Document carries: its tensor, else its blob, else what its uri points at (read
    under ``policy``), decoded under ``limits``. (Any object with ``tensor``, ``blob``, ``uri``.)"""
    if doc.tensor is not None and not doc.blob:
        return image_from_array(np.asarray(doc.tensor), limits)
    data = doc.blob if doc.blob else read_uri(doc.uri, limits, policy)
    return decode_image(data, limits)


def image_policy(settings: Any) -> tuple[ImageLimits, FetchPolicy]:
    """The limits and the fetch policy an executor's image settings name
    (``qbank.config.ImageInputSettings``: the encoder's and the OCR reader's)."""
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.fetch_timeout)
    return limits, FetchPolicy.from_settings(settings.uri_roots, settings.fetch_private)
