"""Turn what clients send (bytes, data URI, file path, http(s) URL, array) into a PIL image.

Limits are checked before a full decode: byte size of the payload, and the declared pixel count
(a decompression bomb declares a huge size in a tiny file).
"""

from __future__ import annotations

import base64
import io
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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
            raise ImageInputError(f"image declares {width}x{height} pixels, over the limit of {limits.max_pixels}")
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"not a readable image: {exc}") from None
    return image.convert("RGB")


def image_from_array(array: np.ndarray) -> Image.Image:
    """An HxWx{1,3,4} or HxW array (uint8, ints in 0..255, or floats in [0, 1]) as sent in ``.tensor``."""
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # CxHxW -> HxWxC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageInputError(f"tensor of shape {tuple(array.shape)} is not an image (want HxWx3)")
    if min(array.shape[:2]) < 1:
        raise ImageInputError(f"tensor of shape {tuple(array.shape)} is empty")
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


def read_uri(uri: str, limits: ImageLimits) -> bytes:
    """Bytes behind a data URI, a file path / file:// URI, or an http(s) URL, within the limits."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "data":
        header, _, payload = uri.partition(",")
        try:
            data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
        except ValueError as exc:
            raise ImageInputError(f"data URI is not valid base64: {exc}") from None
        return data
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri, timeout=limits.fetch_timeout) as response:
                data = response.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ImageInputError(f"cannot fetch {uri}: {exc}") from None
        if len(data) > limits.max_bytes:
            raise ImageInputError(f"{uri} is over the limit of {limits.max_bytes} bytes")
        return data
    if parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri)
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise ImageInputError(f"{uri} is {size} bytes, over the limit of {limits.max_bytes}")
            return path.read_bytes()
        except OSError as exc:
            raise ImageInputError(f"cannot read {uri}: {exc.strerror or exc}") from None
    raise ImageInputError(f"unsupported URI scheme {parsed.scheme!r} in {uri[:80]!r}")
