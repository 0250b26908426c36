"""OCR executor: reads the text of photographed questions, first in the Flow (gateway -> ocr ->
encoder -> indexer).

On ``/index`` and ``/update`` it reads the text inside figures (``tags["figure_text"]``, stored as
the image item's text). On ``/search`` with ``ocr: true`` each image query gets the text read from it in
``tags["ocr_text"]`` (the indexer searches stems with it; the response shows it to the user), and
the figure found outside its text lines as a chunk holding its crop (``tags["figure_region"]``; the
indexer matches it against the bank's figures); a photo with no readable text gets
``tags["ocr_note"]`` and is searched by its CLIP vector alone.
Every other request passes through untouched (handling every endpoint, rather than letting the
gateway skip this executor, keeps clip_client working over HTTP; see the indexer's passthrough).
"""

from __future__ import annotations

import io
from typing import Any

from docarray import Document, DocumentArray
from jina import requests

from qbank.config import OcrSettings
from qbank.domain.schema import (
    FIGURE_REGION_TAG,
    FIGURE_TEXT_TAG,
    IMAGE,
    OCR_NOTE_TAG,
    OCR_TEXT_TAG,
    content_modality,
    item_errors_message,
)
from qbank.media.images import ImageInputError, document_image, image_policy
from qbank.media.regions import figure_region
from qbank.model.ocr import OcrReader, OcrResult
from qbank.service.checked import CheckedExecutor
from qbank.service.params import Limits

NO_TEXT_NOTE = "no text could be read from this photo: it was searched by its CLIP vector alone"
# The figure crop a photo search passes on is at most this many pixels on its longest side: CLIP
# reads 224 x 224, and a full-resolution crop of a 40-megapixel photo could be larger as a PNG than
# the encoder's QBANK_MAX_IMAGE_BYTES, failing the request on an item the user never sent.
FIGURE_CROP_SIDE = 448
MAX_REPORTED_ERRORS = 20


class OcrError(ValueError):
    """One or more photos of a request could not be read; the message names each."""


def ocr_device(device: str) -> bool:
    """Whether to run on CUDA: asked for, or 'auto' and onnxruntime-gpu sees a GPU."""
    if device != "auto":
        return device == "cuda"
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class QbankOcrReader(CheckedExecutor):
    """Reads text in figures on /index and /update, and in photos on /search (``ocr: true``);
    every other request passes through. Checks every request's size before reading anything, and
    ``ocr``; an unknown endpoint passes on to the encoder, which refuses it."""

    checked_parameters = frozenset({"ocr"})
    refuses_unknown_endpoints = False

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.OcrSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = OcrSettings.take_from(kwargs)
        super().__init__(**kwargs)
        s = self.settings
        self.limits, self.fetch_policy = image_policy(s)
        self.request_limits = Limits(max_docs=s.max_docs_per_request)
        cuda = ocr_device(s.device)
        self.reader = OcrReader(s.ocr_det_side, s.ocr_use_cls, s.ocr_min_score, s.ocr_threads, cuda)
        self.logger.info(f"OCR reader ready: detector side {s.ocr_det_side}, {'cuda' if cuda else 'cpu'}")

    __init__.__signature__ = OcrSettings.executor_signature()

    def _read(self, doc: Any) -> tuple[Any, OcrResult]:
        """A Document's image (its blob, tensor or uri, under the image limits) and what was read in
        it; ImageInputError when the image cannot be had."""
        image = document_image(doc, self.limits, self.fetch_policy)
        return image, self.reader.read(image)

    def _text(self, result: OcrResult) -> str:
        return result.text[: self.settings.ocr_max_chars]

    @staticmethod
    def _add_figure(doc: Any, image: Any, result: OcrResult) -> None:
        """The figure found outside the photo's text lines, as a chunk holding its crop (PNG, at most
        FIGURE_CROP_SIDE pixels a side), which the encoder embeds and the indexer matches against the
        bank's figures."""
        region = figure_region(image, result.text_line_boxes())
        if region is None:
            return
        crop = image.crop(region)
        crop.thumbnail((FIGURE_CROP_SIDE, FIGURE_CROP_SIDE))  # only ever shrinks, keeps the aspect
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        doc.tags[FIGURE_REGION_TAG] = list(region)
        doc.chunks = DocumentArray([Document(blob=buffer.getvalue(), tags={FIGURE_REGION_TAG: list(region)})])

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray | None:
        """Read the text of each image query when the request asks for it (``ocr: true``)."""
        if not parameters.get("ocr"):
            return None
        errors: list[str] = []
        for doc in docs:
            if content_modality(doc) != IMAGE:
                continue  # a text query is searched by its own text
            try:
                image, result = self._read(doc)
            except ImageInputError as exc:
                errors.append(f"item {doc.id!r}: image: {exc}")
                continue
            text = self._text(result)
            doc.tags[OCR_TEXT_TAG] = text
            if self.settings.ocr_figure_search:
                self._add_figure(doc, image, result)
            if not text:
                doc.tags[OCR_NOTE_TAG] = NO_TEXT_NOTE
        if errors:
            raise OcrError(item_errors_message(errors, len(docs), "cannot be read", MAX_REPORTED_ERRORS))
        return docs

    @requests(on=["/index", "/update"])
    def index(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray | None:
        """Read the text inside each figure (``ocr_figures``): labels, values, axis titles and table
        cells become searchable with the figure. An image that cannot be read is left to the encoder,
        whose error names it (one home for image errors)."""
        if not self.settings.ocr_figures or not docs:
            return None
        for doc in docs:
            if content_modality(doc) != IMAGE:
                continue
            try:
                text = self._text(self._read(doc)[1])
            except ImageInputError:
                continue
            if text:
                doc.tags[FIGURE_TEXT_TAG] = text
        return docs

    @requests
    def passthrough(self, **kwargs: Any) -> None:
        """Every other endpoint: nothing to read (the encoder checks endpoints and refuses unknown ones)."""
        return None
