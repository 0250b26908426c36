"""CLIP encoder executor: fills ``.embedding`` of text and image Documents; reorders matches on /rank.

It only batches Documents and calls the model layer (``qbank.model.clip``); decoding and limits
live in ``qbank.media.images``. A request is all-or-nothing: if any item cannot be encoded, the request
fails with one error naming every bad item, and nothing goes on to the indexer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from docarray import Document, DocumentArray
from jina import requests

from qbank.config import EncoderSettings, Limits
from qbank.domain.reading import reading_form
from qbank.domain.schema import (
    IMAGE,
    TEXT,
    content_modality,
    figure_chunks,
    item_errors_message,
)
from qbank.media.images import ImageInputError, document_image, image_policy
from qbank.model.clip import ClipEncoder
from qbank.service.checked import CheckedExecutor
from qbank.service.mapping import chunks_problem
from qbank.service.metrics import EncoderSeries, registry_of
from qbank.service.params import (
    CLIP_CLIENT_PARAMETERS,
    UNKNOWN_ENDPOINT,
    ParameterError,
    UnknownEndpointError,
    search_plan,
)

MAX_REPORTED_ERRORS = 20
# Images are decoded at most this long on their longest side: CLIP reads 224 x 224 (its processor
# brings the shortest side to 224), and a 40-megapixel photo held at full size, then as float32 by
# the processor, took the encoder past 3.6 GB for five of them. 2048 keeps the shortest side of
# anything up to 9:1 above 224, so what CLIP sees is unchanged.
ENCODER_MAX_SIDE = 2048
ENCODER_PARAMETERS = frozenset({*CLIP_CLIENT_PARAMETERS, "mode", "ocr"})


class EncodeError(ValueError):
    """One or more items of a request could not be encoded; the message lists them."""


class QbankClipEncoder(CheckedExecutor):
    """Encodes on /encode, /index, /search, /update and the default endpoint; ranks on /rank.

    Checks the parameters it reads; the store's own are checked by the indexer, which holds their limits."""

    checked_parameters = ENCODER_PARAMETERS

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.EncoderSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = EncoderSettings.take_from(kwargs)
        super().__init__(**kwargs)
        s = self.settings
        self.limits, self.fetch_policy = image_policy(s)
        self.request_limits = Limits(max_docs=s.max_docs_per_request)
        self.model = ClipEncoder.load(s.model, s.engine, s.device, s.onnx_path, s.fp16, s.num_threads)
        self.series = EncoderSeries(registry_of(self))
        self.logger.info(
            f"encoder ready: model={self.model.name} engine={s.engine} device={self.model.engine.device} "
            f"dim={self.model.dim} minibatch={s.minibatch_size} "
            f"uri_roots={[str(r) for r in self.fetch_policy.file_roots] or 'none'} fetch_private={s.fetch_private}"
        )

    __init__.__signature__ = EncoderSettings.executor_signature()

    # -- helpers ------------------------------------------------------------------------------
    def _encode_docs(
        self,
        docs: DocumentArray,
        drop_image_content: bool,
        *,
        storing: bool = False,
        metadata_only_ok: bool = False,
        containers_ok: bool = False,
        skip_empty: bool = False,
    ) -> None:
        """Embed ``docs`` (clip-server's rule decides text or image), all or none: one error names
        every item that cannot be encoded. ``storing`` (/index, /update): blank texts and chunks are
        refused too; ``metadata_only_ok``: docs bringing only tags pass (/update); ``containers_ok``:
        a doc without content that holds chunks passes (a selector such as '@r,c' reached it);
        ``skip_empty``: docs without content pass unembedded (clip-server's default endpoint)."""
        texts: list[tuple[Document, str]] = []
        images: list[tuple[Document, Any]] = []
        errors: list[str] = []
        for doc in docs:
            kind = content_modality(doc)
            if storing and (problem := chunks_problem(doc)):
                errors.append(problem)
            elif kind == IMAGE:
                try:
                    images.append((doc, document_image(doc, self.limits, self.fetch_policy, ENCODER_MAX_SIDE)))
                except ImageInputError as exc:
                    errors.append(f"item {doc.id!r}: image: {exc}")
            elif kind == TEXT:
                if len(doc.text) > self.settings.max_text_chars:
                    errors.append(
                        f"item {doc.id!r}: text is {len(doc.text)} characters, over the limit of "
                        f"{self.settings.max_text_chars} (QBANK_MAX_TEXT_CHARS)"
                    )
                elif storing and not doc.text.strip():
                    errors.append(f"item {doc.id!r}: text is blank (only whitespace): nothing to store")
                else:
                    texts.append((doc, reading_form(doc.text)))  # CLIP reads the text, not its LaTeX
            elif (doc.mime_type or "").startswith("image/"):
                errors.append(f"item {doc.id!r}: image: image is empty (0 bytes)")
            elif not (
                skip_empty
                or doc.embedding is not None
                or (metadata_only_ok and doc.tags)
                or (containers_ok and len(doc.chunks))
            ):
                errors.append(f"item {doc.id!r}: no content (empty text, no blob, uri or tensor)")
        if errors:
            raise EncodeError(item_errors_message(errors, len(docs), "cannot be encoded", MAX_REPORTED_ERRORS))
        batch = self.settings.minibatch_size
        if texts:
            vectors = self.model.encode_texts([t for _, t in texts], batch)
            for (doc, _), vector in zip(texts, vectors, strict=True):
                doc.embedding, doc.modality = vector, TEXT
            self.series.embedded.labels(TEXT).inc(len(texts))
        if images:
            vectors = self.model.encode_images([im for _, im in images], batch)
            for (doc, _), vector in zip(images, vectors, strict=True):
                doc.embedding, doc.modality = vector, IMAGE
                if drop_image_content:
                    doc.blob, doc.tensor = b"", None
            self.series.embedded.labels(IMAGE).inc(len(images))

    @staticmethod
    def _selected(docs: DocumentArray, parameters: dict | None) -> tuple[DocumentArray, bool]:
        """The documents clip-server's ``access_paths`` (or the older ``traversal_paths``, which wins
        when both are sent, as there) selects, and whether the selection goes below the top level."""
        parameters = parameters or {}
        path = parameters.get("traversal_paths") or parameters.get("access_paths") or "@r"
        if path == "@r":
            return docs, False
        try:
            return docs[path], True
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            name = "traversal_paths" if parameters.get("traversal_paths") else "access_paths"
            raise ParameterError(f"parameter {name!r}: docarray cannot follow {path!r} ({exc})") from None

    def _drop(self, parameters: dict | None) -> bool:
        value = (parameters or {}).get("drop_image_content", self.settings.drop_image_content)
        return bool(value)

    # -- endpoints ----------------------------------------------------------------------------
    @requests(on="/encode")
    def encode(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Embed the documents ``access_paths`` selects (default: those sent); each must have content,
        except a container reached by a selector such as '@r,c'."""
        targets, nested = self._selected(docs, parameters)
        self._encode_docs(targets, self._drop(parameters), containers_ok=nested)
        return docs

    @requests(on="/")
    def encode_default(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """clip-server's default endpoint, which clip_client's ``profile()`` probes with one empty
        Document: as there, a document without content passes through without an embedding."""
        targets, _ = self._selected(docs, parameters)
        self._encode_docs(targets, self._drop(parameters), skip_empty=True)
        return docs

    @requests(on="/index")
    def index(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Embed what will be stored: every doc has content (a blank text or chunks are refused),
        or already has its vector."""
        self._encode_docs(docs, self._drop(parameters), storing=True)
        return docs

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Embed what the search's plan needs (qbank.domain.search_plan): no query of a bm25 search
        (the request's mode or the service's), but a photo with no text read; in a photo search, also
        the crop of each figure the OCR reader found."""
        parameters = parameters or {}
        plan = search_plan(parameters, self.settings.search_mode)  # refused here, before any embedding
        targets = DocumentArray(d for d in docs if plan.needs_vector(d))
        if plan.needs_figure_vectors:
            targets.extend(c for d in docs for c in figure_chunks(d))
        self._encode_docs(targets, self._drop(parameters))  # one batch: queries and figure crops
        return docs

    @requests(on="/update")
    def update(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Re-embed docs with new content; docs carrying only tags (a metadata update) pass through."""
        self._encode_docs(docs, self._drop(parameters), storing=True, metadata_only_ok=True)
        return docs

    @requests
    def unknown(self, **kwargs: Any) -> None:
        """Takes every endpoint not declared here, so that none is skipped silently: refused in
        ``__acall__`` (here too, for a caller that goes through jina's synchronous ``__call__``)."""
        raise UnknownEndpointError(UNKNOWN_ENDPOINT)

    @requests(on=["/delete", "/exists", "/questions", "/count", "/stats", "/near_duplicates"])
    async def passthrough(self, **kwargs: Any) -> None:
        """Store-only endpoints: nothing to encode. Async, so they never wait for jina's lock behind a
        request being encoded (a /count waited 4-6 s behind blank 40 Mpx photos being decoded)."""
        return None

    @requests(on="/rank")
    def rank(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Reorder the ``.matches`` of each document ``access_paths`` selects by CLIP score, as
        clip-server does (clip_score: softmax over the candidates; clip_score_cosine beside it)."""
        targets, _ = self._selected(docs, parameters)
        for doc in targets:
            if not doc.matches:
                raise EncodeError(f"item {doc.id!r}: /rank needs .matches to rank")
        drop = self._drop(parameters)
        candidates = DocumentArray([m for d in targets for m in d.matches])
        self._encode_docs(targets, drop)
        self._encode_docs(candidates, drop)
        for doc in targets:
            matrix = np.stack([m.embedding for m in doc.matches])
            cosines = matrix @ np.asarray(doc.embedding, dtype=np.float32)
            logits = self.model.engine.logit_scale * cosines
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            for match, cosine, prob in zip(doc.matches, cosines, probs, strict=True):
                match.scores["clip_score"].value = float(prob)
                match.scores["clip_score"].op_name = "softmax"
                match.scores["clip_score_cosine"].value = float(cosine)
                match.scores["clip_score_cosine"].op_name = "cosine"
            doc.matches = sorted(doc.matches, key=lambda m: m.scores["clip_score"].value, reverse=True)
        return docs
