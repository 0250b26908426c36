"""OCR executor: reads the text of photographed questions, first in the Flow (gateway -> ocr ->
encoder -> indexer).

On ``/index`` and ``/update`` it reads the text inside figures (``tags["figure_text"]``, stored as
the image item's text). On ``/search`` with ``ocr: true`` each image query gets the text read from it in
``tags["ocr_text"]`` (the indexer searches stems with it; the response shows it to the user), and
the figure found outside its text lines in ``tags["figure_region"]``, with a chunk holding its crop
when it is to be matched against the bank's figures (the request's ``figures``, else when the words
read are too few to tell the question: SearchPlan.searches_figure); a photo with no readable text gets
``tags["ocr_note"]`` and is searched by its CLIP vector alone.
Every other request passes through untouched (handling every endpoint, rather than letting the
gateway skip this executor, keeps clip_client working over HTTP; see the indexer's passthrough).

Isolation: jina runs an executor's plain (sync) handlers one request at a time under one lock, so
one photo request held up every request behind it (a /count waited 64-106 s behind 20 photos).
Here every handler is async: a request with nothing to read returns at once, without the lock, and
the reading itself runs off the event loop in a pool of QBANK_OCR_CONCURRENCY threads, each with an
OCR engine of its own (several photo requests in flight per replica, served first come first
served). Each request's OCR work is bounded (QBANK_OCR_MAX_IMAGES, QBANK_OCR_MAX_REQUEST_PIXELS,
QBANK_OCR_TIMEOUT), refused naming the setting before any OCR runs where the images say their size.
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from docarray import Document, DocumentArray
from jina import requests

from qbank.config import OCR_MAX_SIDE, Limits, OcrSettings
from qbank.domain.schema import (
    FIGURE_REGION_TAG,
    FIGURE_TEXT_TAG,
    IMAGE,
    OCR_FOCUS_BOX_TAG,
    OCR_FOCUS_TAG,
    OCR_NOTE_TAG,
    OCR_SEARCH_MODE,
    OCR_TEXT_TAG,
    SEGMENT_BOX_TAG,
    SEGMENT_NUMBER_TAG,
    content_modality,
    item_errors_message,
    query_text,
)
from qbank.domain.segments import focus_segment, number_the_first, split_page
from qbank.media.images import ImageInputError, declared_pixels, document_image, image_policy, original_size
from qbank.media.regions import figure_region
from qbank.model.ocr import OcrEngine, OcrResult, ReadStopped
from qbank.service.checked import CheckedExecutor
from qbank.service.metrics import ReaderSeries, registry_of
from qbank.service.params import search_plan

NO_TEXT_NOTE = "no text could be read from this photo: it was searched by its CLIP vector alone"
# The figure crop a photo search passes on is at most this many pixels on its longest side: CLIP
# reads 224 x 224, and a full-resolution crop of a 40-megapixel photo could be larger as a PNG than
# the encoder's QBANK_MAX_IMAGE_BYTES, failing the request on an item the user never sent.
FIGURE_CROP_SIDE = 448
MAX_REPORTED_ERRORS = 20


T = TypeVar("T")


class OcrError(ValueError):
    """One or more photos of a request could not be read; the message names each."""


class OcrLimitError(ValueError):
    """A request asks for more OCR work than a QBANK_OCR_* bound allows; the message names it."""

    refusal_reason = "size"  # qbank_refusals_total (qbank.service.metrics)


class OcrTimeoutError(OcrLimitError):
    """A request was in the reader longer than QBANK_OCR_TIMEOUT (from its arrival)."""

    refusal_reason = "timeout"


class OcrBusyError(RuntimeError):
    """The reader holds as many photo searches as QBANK_OCR_MAX_QUEUE allows: retry shortly."""

    refusal_reason = "busy"


class _Abandoned(Exception):
    """The request's caller is gone (its call was cancelled): nothing more is read for it."""


def ocr_device(device: str) -> bool:
    """Whether to run on CUDA: asked for, or 'auto' and onnxruntime-gpu sees a GPU."""
    if device != "auto":
        return device == "cuda"
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class QbankReader(CheckedExecutor):
    """Reads text in figures on /index and /update, and in photos on /search (``ocr: true``);
    every other request passes through. Checks every request's size before reading anything, and
    ``ocr``; an unknown endpoint passes on to the encoder, which refuses it."""

    checked_parameters = frozenset({"ocr", "deadline", "page", "figures"})
    refuses_unknown_endpoints = False

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.OcrSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = OcrSettings.take_from(kwargs)
        super().__init__(**kwargs)
        s = self.settings
        self.limits, self.fetch_policy = image_policy(s)
        self.request_limits = Limits(max_docs=s.max_docs_per_request)
        cuda = ocr_device(s.device)
        self.readers: queue.SimpleQueue[OcrEngine] = queue.SimpleQueue()
        for _ in range(s.ocr_concurrency):  # one engine per thread: no engine is ever shared
            self.readers.put(
                OcrEngine(
                    s.ocr_det_side,
                    s.ocr_use_cls,
                    s.ocr_min_score,
                    s.ocr_threads,
                    cuda,
                    s.ocr_rec_batch,
                    engine=s.ocr_engine,
                    rec_min_width=s.ocr_rec_min_width,
                    spinning=s.ocr_spinning,
                )
            )
        self.pool = ThreadPoolExecutor(max_workers=s.ocr_concurrency, thread_name_prefix="ocr")
        self.searching: dict[object, float | None] = {}  # photo searches held: being read or waiting, by deadline
        self.series = ReaderSeries(registry_of(self))
        self.series.queue.set_function(lambda: len(self.searching))
        self.logger.info(
            f"OCR reader ready: detector side {s.ocr_det_side}, {'cuda, onnxruntime' if cuda else 'cpu, ' + s.ocr_engine}, "
            f"{s.ocr_concurrency} requests read at once"
        )

    __init__.__signature__ = OcrSettings.executor_signature()

    async def _off_loop(self, work: Callable[[OcrEngine, Callable[[], bool]], T], deadline: float | None = None) -> T:
        """``work(reader, gone)`` in the pool, with an engine no other thread holds meanwhile. When the
        caller is ``gone()`` (its ``deadline``, Unix seconds, has passed, or the call was cancelled),
        work still queued is dropped and work being read stops before its next image: 20 clients
        that gave up after 2 s kept the reader busy for 711 s, and a new search waited as long."""
        cancelled = threading.Event()

        def gone() -> bool:
            return cancelled.is_set() or (deadline is not None and time.time() > deadline)

        def run() -> T:
            if gone():
                raise _Abandoned()
            reader = self.readers.get()
            try:
                return work(reader, gone)
            finally:
                self.readers.put(reader)

        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, run)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _admit(self, deadline: float | None) -> object:
        """Take one more photo search (its token, removed from ``searching`` when it ends), or refuse
        it when the engines are busy and the queue is full; searches whose deadline has passed no
        longer count."""
        s = self.settings
        now = time.time()
        held = sum(1 for d in self.searching.values() if d is None or d > now)
        if held >= s.ocr_concurrency + s.ocr_max_queue:
            raise OcrBusyError(
                f"the reader is reading {s.ocr_concurrency} photo searches with {held - s.ocr_concurrency} "
                f"waiting, the most it holds (QBANK_OCR_CONCURRENCY + QBANK_OCR_MAX_QUEUE): retry in a few seconds"
            )
        token = object()
        self.searching[token] = deadline
        return token

    def _check_bounds(self, images: list[Any], endpoint: str) -> None:
        """Refuse, before reading anything, a request over its image count or pixel budget (as far
        as its images declare their size: tensors and blobs; URIs are held to it as they are read)."""
        s = self.settings
        if endpoint == "/search" and len(images) > s.ocr_max_images:
            raise OcrLimitError(
                f"this photo search has {len(images)} images to read, over the limit of {s.ocr_max_images} "
                "(QBANK_OCR_MAX_IMAGES): send the photos in smaller requests"
            )
        declared = sum(declared_pixels(doc) or 0 for doc in images)
        if declared > s.ocr_max_request_pixels:
            raise OcrLimitError(self._pixels_message(declared, endpoint))

    def _pixels_message(self, pixels: int, endpoint: str) -> str:
        what = "photos" if endpoint == "/search" else "figures"
        return (
            f"the {what} of this request hold {pixels:,} pixels, over the {self.settings.ocr_max_request_pixels:,} "
            f"one request may have read (QBANK_OCR_MAX_REQUEST_PIXELS): send fewer or smaller images per request"
        )

    def _read_each(
        self,
        reader: OcrEngine,
        images: list[Any],
        endpoint: str,
        read: Callable[[Any, Any, OcrResult], None],
        arrived: float,
        gone: Callable[[], bool],
    ) -> list[str]:
        """Read each image in turn under the request's pixel budget and deadline (from its
        ``arrived`` time), calling ``read(doc, image, result)``, until the caller is ``gone()``;
        returns the errors of images that could not be had."""
        s = self.settings

        def overdue() -> bool:
            return time.monotonic() - arrived > s.ocr_timeout

        def stop() -> bool:
            return gone() or overdue()

        def stopped(left: int) -> Exception:
            if gone():
                return _Abandoned()
            return OcrTimeoutError(
                f"this request has been in the reader over {s.ocr_timeout:g} s (QBANK_OCR_TIMEOUT, counted from "
                f"its arrival, waiting included) with {left} of {len(images)} images not read: "
                "send fewer or smaller images per request, or retry when the service is less busy"
            )

        pixels, errors = 0, []
        for number, doc in enumerate(images):
            if stop():
                raise stopped(len(images) - number)
            try:
                image = document_image(doc, self.limits, self.fetch_policy, OCR_MAX_SIDE)
            except ImageInputError as exc:
                errors.append(f"item {doc.id!r}: image: {exc}")
                continue
            width, height = original_size(image)
            pixels += width * height
            if pixels > s.ocr_max_request_pixels:
                raise OcrLimitError(self._pixels_message(pixels, endpoint))
            started = time.perf_counter()
            try:
                result = reader.read(image, stop)
            except ReadStopped:
                raise stopped(len(images) - number) from None
            self.series.read_seconds.observe(time.perf_counter() - started)
            read(doc, image, result)
        return errors

    def _text(self, result: OcrResult) -> str:
        return result.text[: self.settings.ocr_max_chars]

    @staticmethod
    def _add_figure(doc: Any, image: Any, result: OcrResult, matched: bool) -> None:
        """The figure found outside the photo's text lines: its region in ``tags["figure_region"]``,
        and when it is to be ``matched`` (SearchPlan.searches_figure), a chunk holding its crop (PNG, at
        most FIGURE_CROP_SIDE pixels a side), which the encoder embeds and the indexer matches against
        the bank's figures."""
        region = figure_region(image, result.text_line_boxes())
        if region is None:
            return
        scale = original_size(image)[0] / image.width  # the region in the photo's own pixels
        doc.tags[FIGURE_REGION_TAG] = [round(value * scale) for value in region]
        if not matched:
            return
        crop = image.crop(region)
        crop.thumbnail((FIGURE_CROP_SIDE, FIGURE_CROP_SIDE))  # only ever shrinks, keeps the aspect
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        doc.chunks.append(Document(blob=buffer.getvalue(), tags={FIGURE_REGION_TAG: doc.tags[FIGURE_REGION_TAG]}))

    def _add_focus(self, doc: Any, image: Any, result: OcrResult) -> None:
        """When the photo is a hurried shot (its question and part of a neighbour), the words and box
        of the question it is of (qbank.domain.segments.focus_segment), which the indexer searches
        instead of all it read."""
        focus = focus_segment(split_page(result.lines, result.boxes))
        if focus is None:
            return
        scale = original_size(image)[0] / image.width
        doc.tags[OCR_FOCUS_TAG] = focus.text[: self.settings.ocr_max_chars]
        doc.tags[OCR_FOCUS_BOX_TAG] = [round(value * scale) for value in focus.box]

    def _add_segments(self, doc: Any, image: Any, result: OcrResult) -> None:
        """The questions of a page photo (qbank.domain.segments), each a chunk with its text, number
        and box in the photo's own pixels, which the indexer searches on its own."""
        scale = original_size(image)[0] / image.width
        segments = number_the_first(split_page(result.lines, result.boxes))
        most = self.settings.ocr_max_segments
        if len(segments) > most:
            doc.tags[OCR_NOTE_TAG] = (
                f"{len(segments)} questions were found on the page; the first {most} were searched "
                f"(QBANK_OCR_MAX_SEGMENTS): photograph the rest on their own"
            )
        for segment in segments[:most]:
            tags = {
                SEGMENT_BOX_TAG: [round(value * scale) for value in segment.box],
                SEGMENT_NUMBER_TAG: segment.number or "",
            }
            doc.chunks.append(Document(text=segment.text[: self.settings.ocr_max_chars], tags=tags))

    @requests(on="/search")
    async def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray | None:
        """Read the text of each image query when the request asks for it (``ocr: true``); a text
        query is searched by its own text."""
        arrived = time.monotonic()
        photos = [doc for doc in docs if content_modality(doc) == IMAGE] if parameters.get("ocr") else []
        if not photos:
            return None
        self._check_bounds(photos, "/search")
        plan = search_plan(parameters, OCR_SEARCH_MODE)  # a photo's plan: the service's mode plays no part
        page = bool(parameters.get("page"))
        deadline = parameters.get("deadline")
        token = self._admit(deadline)  # from here on, the finally below lets it go

        def found(doc: Any, image: Any, result: OcrResult) -> None:
            text = self._text(result)
            doc.tags[OCR_TEXT_TAG] = text
            if page:
                self._add_segments(doc, image, result)
            else:
                self._add_focus(doc, image, result)
            if self.settings.ocr_figure_search:
                matched = plan.searches_figure(query_text(doc), self.settings.ocr_figure_search_below)
                self._add_figure(doc, image, result, matched)
            if not text:
                doc.tags[OCR_NOTE_TAG] = NO_TEXT_NOTE
            self.series.photos.labels("text" if text else "no_text").inc()
            if FIGURE_REGION_TAG in doc.tags:
                self.series.photos.labels("figure").inc()

        try:
            errors = await self._off_loop(
                lambda reader, gone: self._read_each(reader, photos, "/search", found, arrived, gone), deadline
            )
        except _Abandoned:
            raise OcrLimitError(
                "the caller's deadline passed before its photos were read: nothing more was read"
            ) from None
        finally:
            del self.searching[token]
        if errors:
            raise OcrError(item_errors_message(errors, len(docs), "cannot be read", MAX_REPORTED_ERRORS))
        return docs

    @requests(on=["/index", "/update"])
    async def index(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray | None:
        """Read the text inside each figure (``ocr_figures``): labels, values, axis titles and table
        cells become searchable with the figure. An image that cannot be read is left to the encoder,
        whose error names it (one home for image errors)."""
        figures = [doc for doc in docs if content_modality(doc) == IMAGE] if self.settings.ocr_figures else []
        if not figures:
            return None
        self._check_bounds(figures, "/index")

        def found(doc: Any, image: Any, result: OcrResult) -> None:
            text = self._text(result)
            if text:
                doc.tags[FIGURE_TEXT_TAG] = text

        arrived = time.monotonic()
        await self._off_loop(lambda reader, gone: self._read_each(reader, figures, "/index", found, arrived, gone))
        return docs

    @requests
    async def passthrough(self, **kwargs: Any) -> None:
        """Every other endpoint: nothing to read (the encoder checks endpoints and refuses unknown
        ones). Async, so it never waits for jina's lock behind a request being read."""
        return None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        super().close()
