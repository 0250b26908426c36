"""Turn what clients send (bytes, data URI, file path, http(s) URL, array) into a PIL image.

Limits are checked before a full decode: byte size of the payload, and the declared pixel count
(a decompression bomb declares a huge size in a tiny file). URIs are read on the server
through :mod:`qbank.media.fetch`, whose :class:`FetchPolicy` decides what they may reach: files only
under configured folders, and http(s) only to public addresses, checked on every redirect and
pinned against DNS rebinding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from qbank.domain.schema import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from qbank.media.fetch import FetchError, FetchPolicy
from qbank.media.fetch import read_uri as read_bounded

ORIGINAL_SIZE = "qbank_original_size"  # Image.info key: the size sent, when decoding shrank it


class ImageInputError(ValueError):
    """An image input cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    fetch_timeout: float = 10.0


def decode_image(data: bytes, limits: ImageLimits, max_side: int | None = None) -> Image.Image:
    """Decode image bytes to RGB, refusing empty, oversized, corrupt and bomb inputs. With
    ``max_side``, the image comes back at most that long on its longest side, and a JPEG is decoded
    at the smallest of its DCT scales (1/2, 1/4, 1/8) that still covers it: a 40-megapixel photo
    never exists at full size in memory."""
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
        if max_side and max(width, height) > max_side:
            image.draft("RGB", (max_side, max_side))  # JPEG only; a no-op for other formats
        image.load()
        within(image, max_side)
    except Image.DecompressionBombError as exc:  # Pillow's own guard, also before decoding
        raise ImageInputError(f"refused as a decompression bomb before decoding: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageInputError(f"not a readable image: {exc}") from None
    rgb = image.convert("RGB")
    rgb.info[ORIGINAL_SIZE] = (width, height)
    return rgb


def within(image: Image.Image, max_side: int | None) -> None:
    """Shrink ``image`` in place to at most ``max_side`` on its longest side (None: as it is)."""
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.BILINEAR)


def original_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as it was sent, before :func:`decode_image` shrank it."""
    return tuple(image.info.get(ORIGINAL_SIZE, image.size))


def declared_pixels(doc: Any) -> int | None:
    """The pixels a Document's image holds, from its tensor's shape or its blob's header (nothing is
    decoded); None for an image behind a URI (known once read) or bytes that are no image (the
    decode that follows names the problem)."""
    if doc.tensor is not None and not doc.blob:
        shape = np.shape(doc.tensor)
        return int(shape[0] * shape[1]) if len(shape) >= 2 else None
    if not doc.blob:
        return None
    try:
        with Image.open(io.BytesIO(doc.blob)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, ValueError):
        return None
    return width * height


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


def read_uri(uri: str, limits: ImageLimits, policy: FetchPolicy) -> bytes:
    """Bytes behind a data URI, a file path / file:// URI, or an http(s) URL, within limits and
    policy (:mod:`qbank.media.fetch`)."""
    try:
        return read_bounded(uri, limits.max_bytes, limits.fetch_timeout, policy)
    except FetchError as exc:
        raise ImageInputError(str(exc)) from None


def document_image(doc: Any, limits: ImageLimits, policy: FetchPolicy, max_side: int | None = None) -> Image.Image:
    """The image a Document carries: its tensor, else its blob, else what its uri points at (read
    under ``policy``), decoded under ``limits`` (at most ``max_side`` long, see :func:`decode_image`).
    (Any object with ``tensor``, ``blob``, ``uri``.)"""
    if doc.tensor is not None and not doc.blob:
        image = image_from_array(np.asarray(doc.tensor), limits)
        image.info[ORIGINAL_SIZE] = image.size
        within(image, max_side)
        return image
    data = doc.blob if doc.blob else read_uri(doc.uri, limits, policy)
    return decode_image(data, limits, max_side)


def image_policy(settings: Any) -> tuple[ImageLimits, FetchPolicy]:
    """The limits and the fetch policy an executor's image settings name
    (``qbank.config.ImageInputSettings``: the encoder's and the OCR reader's)."""
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels, settings.fetch_timeout)
    return limits, FetchPolicy.from_settings(settings.uri_roots, settings.fetch_private)
