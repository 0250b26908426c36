"""CLIP encoder executor: fills ``.embedding`` of text and image Documents; reorders matches on /rank.

It only batches Documents and calls the model layer (``qbank.model.clip``); decoding and limits
live in ``qbank.media.images``. A request is all-or-nothing: if any item cannot be encoded, the request
fails with one error naming every bad item, and nothing goes on to the indexer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from docarray import Document, DocumentArray
from jina import Executor, requests
from jina.constants import __default_endpoint__

from qbank.config import EncoderSettings
from qbank.domain.schema import IMAGE, TEXT, item_errors_message
from qbank.media.images import FetchPolicy, ImageInputError, ImageLimits, decode_image, image_from_array, read_uri
from qbank.model.clip import ClipEncoder
from qbank.service.params import CLIP_CLIENT_PARAMETERS, UNKNOWN_ENDPOINT, Limits, UnknownEndpointError, check_request

MAX_REPORTED_ERRORS = 20
ENCODER_PARAMETERS = {*CLIP_CLIENT_PARAMETERS, "mode"}


class EncodeError(ValueError):
    """One or more items of a request could not be encoded; the message lists them."""


def is_image(doc: Document) -> bool:
    """clip-server's rule: uri, blob or tensor make an image; otherwise the text is encoded."""
    return bool(doc.uri or doc.blob or doc.tensor is not None)


class QbankClipEncoder(Executor):
    """Encodes on /encode, /index, /search, /update and the default endpoint; ranks on /rank."""

    def __init__(self, **kwargs: Any):
        """Settings: the fields of ``qbank.config.EncoderSettings``, from ``with:`` or QBANK_* variables."""
        self.settings = EncoderSettings.take_from(kwargs)
        super().__init__(**kwargs)
        s = self.settings
        self.limits = ImageLimits(s.max_image_bytes, s.max_image_pixels, s.fetch_timeout)
        self.fetch_policy = FetchPolicy.from_settings(s.uri_roots, s.fetch_private)
        self.request_limits = Limits(max_docs=s.max_docs_per_request)
        self.model = ClipEncoder.load(s.model, s.engine, s.device, s.onnx_path, s.fp16, s.num_threads)
        self.logger.info(
            f"encoder ready: model={self.model.name} engine={s.engine} device={self.model.engine.device} "
            f"dim={self.model.dim} minibatch={s.minibatch_size} "
            f"uri_roots={[str(r) for r in self.fetch_policy.file_roots] or 'none'} fetch_private={s.fetch_private}"
        )

    __init__.__signature__ = EncoderSettings.executor_signature()

    async def __acall__(self, req_endpoint: str, **kwargs: Any) -> Any:
        """Every request is checked before any work: the endpoint (a misspelt one fails instead of
        answering "ok" with nothing done), its size and the parameters this executor reads; the
        store's own parameters are checked by the indexer, which holds their limits."""
        if req_endpoint == __default_endpoint__:  # where jina sends an endpoint no handler declares
            raise UnknownEndpointError(UNKNOWN_ENDPOINT)
        docs = kwargs.get("docs")
        kwargs["parameters"] = check_request(
            req_endpoint,
            kwargs.get("parameters"),
            len(docs) if docs is not None else 0,
            self.request_limits,
            only=ENCODER_PARAMETERS,
        )
        return await super().__acall__(req_endpoint, **kwargs)

    # -- helpers ------------------------------------------------------------------------------
    def _image(self, doc: Document):
        if doc.tensor is not None and not doc.blob:
            return image_from_array(np.asarray(doc.tensor), self.limits)
        data = doc.blob if doc.blob else read_uri(doc.uri, self.limits, self.fetch_policy)
        return decode_image(data, self.limits)

    def _encode_docs(self, docs: DocumentArray, drop_image_content: bool, metadata_only_ok: bool = False) -> None:
        texts: list[tuple[Document, str]] = []
        images: list[tuple[Document, Any]] = []
        errors: list[str] = []
        for doc in docs:
            if is_image(doc):
                try:
                    images.append((doc, self._image(doc)))
                except ImageInputError as exc:
                    errors.append(f"item {doc.id!r}: image: {exc}")
            elif isinstance(doc.text, str) and doc.text.strip():
                if len(doc.text) > self.settings.max_text_chars:
                    errors.append(
                        f"item {doc.id!r}: text is {len(doc.text)} characters, over the limit of "
                        f"{self.settings.max_text_chars} (QBANK_MAX_TEXT_CHARS)"
                    )
                else:
                    texts.append((doc, doc.text))
            elif (doc.mime_type or "").startswith("image/"):
                errors.append(f"item {doc.id!r}: image: image is empty (0 bytes)")
            elif doc.embedding is None and not (metadata_only_ok and doc.tags):
                errors.append(f"item {doc.id!r}: no content (empty text, no blob, uri or tensor)")
        if errors:
            raise EncodeError(item_errors_message(errors, len(docs), "cannot be encoded", MAX_REPORTED_ERRORS))
        batch = self.settings.minibatch_size
        if texts:
            vectors = self.model.encode_texts([t for _, t in texts], batch)
            for (doc, _), vector in zip(texts, vectors, strict=True):
                doc.embedding, doc.modality = vector, TEXT
        if images:
            vectors = self.model.encode_images([im for _, im in images], batch)
            for (doc, _), vector in zip(images, vectors, strict=True):
                doc.embedding, doc.modality = vector, IMAGE
                if drop_image_content:
                    doc.blob, doc.tensor = b"", None

    def _drop(self, parameters: dict | None) -> bool:
        value = (parameters or {}).get("drop_image_content", self.settings.drop_image_content)
        return bool(value)

    # -- endpoints ----------------------------------------------------------------------------
    @requests(on=["/encode", "/index", "/"])
    def encode(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Embed every doc; a doc that already has an embedding and no content is left as it is."""
        self._encode_docs(docs, self._drop(parameters))
        return docs

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Embed the queries, except for a pure full-text search (mode bm25), which needs no vectors."""
        if (parameters or {}).get("mode") == "bm25":
            return docs
        return self.encode(docs, parameters)

    @requests(on="/update")
    def update(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Re-embed docs with new content; docs carrying only tags (a metadata update) pass through."""
        self._encode_docs(docs, self._drop(parameters), metadata_only_ok=True)
        return docs

    @requests
    def unknown(self, **kwargs: Any) -> None:
        """Takes every endpoint not declared here, so that none is skipped silently: refused in
        ``__acall__`` (here too, for a caller that goes through jina's synchronous ``__call__``)."""
        raise UnknownEndpointError(UNKNOWN_ENDPOINT)

    @requests(on=["/delete", "/exists", "/count", "/stats", "/near_duplicates"])
    def passthrough(self, **kwargs: Any) -> None:
        """Store-only endpoints: nothing to encode."""
        return None

    @requests(on="/rank")
    def rank(self, docs: DocumentArray, parameters: dict, **kwargs: Any) -> DocumentArray:
        """Reorder each doc's ``.matches`` by CLIP score, as clip-server does."""
        for doc in docs:
            if not doc.matches:
                raise EncodeError(f"item {doc.id!r}: /rank needs .matches to rank")
        drop = self._drop(parameters)
        candidates = DocumentArray([m for d in docs for m in d.matches])
        self._encode_docs(docs, drop)
        self._encode_docs(candidates, drop)
        for doc in docs:
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
