"""Python API over the Flow: item writes and the three lookups, with results grouped per question."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from docarray import Document, DocumentArray

from qbank.domain.schema import (
    FIGURE_REGION_TAG,
    IMAGE,
    OCR_FOCUS_BOX_TAG,
    OCR_FOCUS_TAG,
    OCR_NOTE_TAG,
    OCR_TEXT_TAG,
    SEGMENT_BOX_TAG,
    SEGMENT_NUMBER_TAG,
    TEXT,
    figure_chunks,
    segment_chunks,
)
from qbank_client.bank import read_image_ref

PROTOCOLS = {
    "grpc": "grpc",
    "http": "http",
    "ws": "websocket",
    "websocket": "websocket",
    "grpcs": "grpc",
    "https": "http",
    "wss": "websocket",
}
# Searches ask the server for whole questions (group_by: Milvus groups per question where it can,
# the store otherwise), so "10 questions" is 10 whenever 10 exist.
GROUP_BY = {"group_by": "question_id"}


@dataclass
class QuestionHit:
    """One question in a result list: its best item decides the rank."""

    question_id: str
    score: float
    best_item: str
    modality: str
    text: str | None
    subject: str = ""
    grade: str = ""
    type: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)
    figure: str = ""  # the best item's figure (its path or URL as imported) when that item is an image

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _given(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters the caller actually set (CLI flags arrive as None when absent)."""
    return {k: v for k, v in filters.items() if v not in (None, "", [])}


def question_hits(matches: DocumentArray, limit: int) -> list[QuestionHit]:
    """The matches as question hits, best first, at most ``limit`` questions. Grouping has one home,
    the server's store (qbank.store.searches: Milvus groups where it can, first_per_group where it
    cannot), which every search here asks for (GROUP_BY); a match of a question already seen (an
    ungrouped ``post``) joins that question's items."""
    hits: dict[str, QuestionHit] = {}
    for match in matches:
        qid = match.tags.get("question_id") or match.id
        # 'score' ranks in every search mode (dense similarity, bm25, rrf / weighted fusion).
        score = match.scores["score"].value
        score = float(score if score is not None else match.scores["similarity"].value)
        item = {"id": match.id, "modality": match.modality, "score": score}
        if qid not in hits:
            if len(hits) == limit:
                continue
            hits[qid] = QuestionHit(
                question_id=qid,
                score=score,
                best_item=match.id,
                modality=match.modality,
                text=match.text or None,
                subject=match.tags.get("subject", ""),
                grade=match.tags.get("grade", ""),
                type=match.tags.get("type", ""),
                figure=str(match.tags.get("figure") or match.uri or "") if match.modality == IMAGE else "",
            )
        hits[qid].items.append(item)
    return list(hits.values())


def image_document(image: str | Path | bytes) -> Document:
    """An image query from bytes, a local path or an http(s) URL (read here, sent as bytes)."""
    return Document(blob=image if isinstance(image, bytes) else read_image_ref(str(image)))


def check_encodable(doc: Document) -> None:
    """Refuse text that cannot travel as UTF-8 (lone surrogates, e.g. from a bad decode) before sending:
    jina's client would otherwise cancel the stream and wait forever."""
    for name in ("id", "text", "uri"):
        value = getattr(doc, name)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"item {doc.id.encode('utf-8', 'replace').decode()!r}: field {name!r} is not valid Unicode "
                    f"(unpaired surrogate at position {exc.start})"
                ) from None


class ServerError(RuntimeError):
    """The gateway refused or failed a request; the message carries the server's reason."""


class ServerUnavailable(ServerError):
    """The gateway could not be reached, or one of its executors could not (a restart, a crash): the
    request may succeed later, and nothing of it was written."""


# How an unreachable gateway or executor reads: gRPC status codes, jina's own message for an
# executor it cannot reach, and the connection errors of jina's HTTP and WebSocket clients.
UNAVAILABLE_MARKS = (
    "UNAVAILABLE",
    "Communication error with deployment",
    "Cannot connect to host",
    "Connection refused",
)


def server_error(message: str, connection_lost: bool = False) -> ServerError:
    """The error for a failed request: ServerUnavailable when its message (or a lost connection)
    says the service is away, ServerError otherwise."""
    away = connection_lost or any(mark in message for mark in UNAVAILABLE_MARKS)
    return (ServerUnavailable if away else ServerError)(message)


def error_message(exc: BaseException) -> str:
    """The server's own description of a failed request (jina wraps it in a status), else the first line."""
    if callable(getattr(exc, "details", None)) and callable(getattr(exc, "code", None)):  # a raw gRPC error
        return f"{exc.code().name}: {exc.details()}"
    arg = exc.args[0] if exc.args else None
    description = getattr(getattr(arg, "status", None), "description", "")
    if description:
        return description
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _response_from_bytes(data: bytes) -> Any:
    """A gateway response, lazily parsed (jina's deserializer); an empty request for an empty message
    (grpc reads None as a failed parse). The gateway
    ends a call that failed mid-way (an executor killed under it) with its error status and an empty
    message, and grpc copies that message into the exception it raises: jina's lazy DataRequest of
    b"" could not be copied, so the caller got "ValueError: the buffer is already decompressed"
    instead of the gateway's error."""
    from jina.proto.serializer import DataRequestProto
    from jina.types.request.data import DataRequest

    return DataRequestProto.FromString(data) if data else DataRequest()


class GrpcTransport:
    """One long-lived gRPC channel to the gateway, one unary call per request (jina's own wire format,
    the method jina's Client uses for single requests).

    jina's Client opens a new channel (a TCP connection) inside a new event loop on every call. Over
    one kept channel a single /search took 20.5 ms against 24.7 ms (medians of 4 probe runs of 300
    calls, spread 13-34 ms on 2 cores), and a bulk import holds one connection instead of one per
    request. A gRPC channel is thread-safe, so the importer's threads share it.
    """

    METHOD = "/jina.JinaSingleDataRequestRPC/process_single_data"

    def __init__(self, host: str, port: int, tls: bool, metadata: tuple[tuple[str, str], ...] = ()):
        import grpc
        from jina.proto.serializer import DataRequestProto

        target = f"{host}:{port}"
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        if tls:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._call = self._channel.unary_unary(
            self.METHOD,
            request_serializer=DataRequestProto.SerializeToString,
            response_deserializer=_response_from_bytes,
        )
        self._metadata = metadata

    def post(self, endpoint: str, docs: DocumentArray, parameters: dict) -> Any:
        """The gateway's response (a jina DataRequest); raises grpc.RpcError when the call fails and
        ServerError when an executor failed the request."""
        from jina.types.request.data import DataRequest

        request = DataRequest()
        request.header.exec_endpoint = endpoint
        request.data.docs = docs
        request.parameters = parameters
        response = self._call(request, metadata=self._metadata)
        if response.status.code == response.status.ERROR:
            raise ServerError(response.status.description or response.status.exception.name)
        return response

    def close(self) -> None:
        self._channel.close()


class QbankClient:
    """``QbankClient("grpc://127.0.0.1:51000")``; http:// and ws:// work the same.

    ``token`` (default: env QBANK_AUTH_TOKEN) is sent on every request when the gateway requires one.
    """

    def __init__(self, url: str = "grpc://127.0.0.1:51000", token: str | None = None):
        parsed = urlparse(url)
        if parsed.scheme not in PROTOCOLS or not parsed.hostname or not parsed.port:
            raise ValueError(
                f"server URL must look like grpc://host:port, http://host:port or ws://host:port, got {url!r}"
            )
        self.url = url
        self._address = dict(
            host=parsed.hostname,
            port=parsed.port,
            protocol=PROTOCOLS[parsed.scheme],
            tls=parsed.scheme in ("grpcs", "https", "wss"),
        )
        self._local = threading.local()  # jina's Client runs an event loop per call: one per thread
        token = token if token is not None else os.environ.get("QBANK_AUTH_TOKEN", "")
        self._credentials: dict[str, Any] = {}
        self._grpc: GrpcTransport | None = None
        if self._address["protocol"] == "grpc":
            metadata = (("authorization", token),) if token else ()
            self._grpc = GrpcTransport(parsed.hostname, parsed.port, self._address["tls"], metadata)
        elif token:  # HTTP requests and the WebSocket handshake carry it as a header
            self._credentials = {"headers": {"Authorization": token}}

    def close(self) -> None:
        """Close the gRPC channel (HTTP and WebSocket hold nothing between calls)."""
        if self._grpc:
            self._grpc.close()

    def __enter__(self) -> QbankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _client(self):
        if not hasattr(self._local, "client"):
            from jina import Client

            self._local.client = Client(**self._address)
        return self._local.client

    # -- transport -----------------------------------------------------------------------------
    def post(
        self, endpoint: str, docs: DocumentArray | None = None, parameters: dict | None = None
    ) -> tuple[DocumentArray, dict]:
        """Send one request; returns the docs and the merged executor results."""
        for doc in docs or []:
            check_encodable(doc)
        if self._grpc is not None:
            try:
                responses = [self._grpc.post(endpoint, docs or DocumentArray(), parameters or {})]
            except ServerError as exc:  # an executor failed the request: its own description
                raise server_error(f"{endpoint} at {self.url}: {exc}") from exc
            except Exception as exc:  # grpc.RpcError: refused (token), unreachable, too large, ...
                raise server_error(f"{endpoint} at {self.url}: {error_message(exc)}") from exc
            return self._collect(responses)
        try:
            responses = self._client.post(
                endpoint,
                inputs=docs or DocumentArray(),
                parameters=parameters or {},
                request_size=max(1, len(docs or [])),
                return_responses=True,
                **self._credentials,
            )
        except Exception as exc:  # jina raises ValueError, ConnectionError or BadServer by protocol
            message = error_message(exc)
            if self._address["protocol"] == "websocket" and "403" in message:
                message += " (the gateway refused the WebSocket handshake: missing or wrong token?)"
            raise server_error(f"{endpoint} at {self.url}: {message}", isinstance(exc, ConnectionError)) from exc
        return self._collect(responses)

    @staticmethod
    def _collect(responses: list[Any]) -> tuple[DocumentArray, dict]:
        out, results = DocumentArray(), {}
        for response in responses:
            out.extend(response.docs)
            for result in response.parameters.get("__results__", {}).values():
                results.update(result)
        return out, results

    # -- writes --------------------------------------------------------------------------------
    def existing(self, ids: list[str]) -> set[str]:
        return set(self.post("/exists", parameters={"ids": ids})[1].get("existing", [])) if ids else set()

    def index(self, docs: DocumentArray) -> int:
        self.post("/index", docs)
        return len(docs)

    def delete_questions(self, question_ids: list[str]) -> int:
        return int(self.post("/delete", parameters={"question_ids": question_ids})[1]["deleted"])

    # -- reads ---------------------------------------------------------------------------------
    def questions(self, question_ids: list[str]) -> dict[str, DocumentArray]:
        """Each question whole: its stored items (stem first, then figures by index), by question id;
        questions not stored are left out."""
        docs, _ = self.post("/questions", parameters={"question_ids": list(question_ids)}) if question_ids else ([], {})
        found: dict[str, DocumentArray] = {}
        for doc in docs:
            found.setdefault(doc.tags.get("question_id", doc.id), DocumentArray()).append(doc)
        return found

    def count(self, **filters: Any) -> int:
        return int(self.post("/count", parameters={"filter": filters} if filters else {})[1]["count"])

    def stats(self) -> dict[str, Any]:
        stats = self.post("/stats")[1]
        by_modality = {m: self.count(modality=m) for m in (TEXT, IMAGE)} if stats.get("dim") else {TEXT: 0, IMAGE: 0}
        stats.update(text_items=by_modality[TEXT], image_items=by_modality[IMAGE])
        stats["count"] = int(stats.get("count", 0))
        stats["dim"] = int(stats["dim"]) if stats.get("dim") else None
        return stats

    def _search(
        self, query: Document, modality: str, limit: int, filters: dict[str, Any], **options: Any
    ) -> list[QuestionHit]:
        wanted = _given(filters)
        parameters = {"limit": limit, "modality": modality, "filter": wanted, **GROUP_BY}
        parameters.update({k: v for k, v in options.items() if v is not None})
        docs, _ = self.post("/search", DocumentArray([query]), parameters)
        return question_hits(docs[0].matches, limit)

    def text_to_image(self, text: str, limit: int = 10, **filters: Any) -> list[QuestionHit]:
        """Questions whose figures match a text query."""
        return self._search(Document(text=text), IMAGE, limit, filters)

    def image_to_text(self, image: str | Path | bytes, limit: int = 10, **filters: Any) -> dict[str, list[QuestionHit]]:
        """For a figure: questions whose stems match it, and questions with the most similar figures."""
        query = image_document(image)
        return {
            "stems": self._search(query, TEXT, limit, filters),
            "figures": self._search(query, IMAGE, limit, filters),
        }

    def similar_questions(
        self,
        text: str,
        limit: int = 10,
        mode: str | None = None,
        weights: tuple[float, float] | None = None,
        rrf_k: int | None = None,
        search_in: str | None = None,
        **filters: Any,
    ) -> list[QuestionHit]:
        """Text -> text recall. ``mode``: dense (CLIP), bm25 (full text) or hybrid (both, fused by RRF
        with ``rrf_k``, or by ``weights`` = (dense, bm25)); None: the server's default. ``search_in``
        "analysis" (with mode bm25): the words are looked for in the questions' analyses, not the stems."""
        options = {"mode": mode, "rrf_k": rrf_k, "weights": list(weights) if weights else None, "search_in": search_in}
        return self._search(Document(text=text), TEXT, limit, filters, **options)

    def photo_search(
        self, image: str | Path | bytes, limit: int = 10, mode: str | None = None, page: bool = False, **filters: Any
    ) -> dict[str, Any]:
        """A photo of a question -> its question: the server reads the photo's text (OCR) and searches
        the stems with it (``mode``: bm25 by default, or hybrid with the photo's CLIP vector); a photo
        with no readable text is searched by its CLIP vector, and ``note`` says so. The figure found
        on the page (outside its text lines) is matched against the bank's figures by CLIP. Returns
        the text read (``text``), ``note``, the ``questions`` (best first), ``focus`` and
        ``focus_box`` (when the photo holds more than one question, the words and box of the one it is
        mostly of, which were searched instead of all the text read; else "" and None), the figure's
        ``figure_region`` ([left, top, right, bottom] in the photo, or None) and ``figures``: the
        questions whose figures match it, best first. ``page``: the photo holds several questions (a
        whole sheet): ``segments`` lists each question found on it, in reading order, with its
        ``number`` as printed, its ``box`` in the photo, the ``text`` read and its own ``questions``."""
        wanted = _given(filters)
        parameters: dict[str, Any] = {
            "limit": limit,  # the server fetches the candidates its text ranking chooses from
            "filter": wanted,
            "ocr": True,
            **GROUP_BY,
        }
        if mode:
            parameters["mode"] = mode
        if page:
            parameters["page"] = True
        docs, _ = self.post("/search", DocumentArray([image_document(image)]), parameters)
        query = docs[0]
        figure = next(iter(figure_chunks(query)), None)
        segments = [
            {
                "number": chunk.tags.get(SEGMENT_NUMBER_TAG) or None,
                "box": [int(v) for v in chunk.tags[SEGMENT_BOX_TAG]],
                "text": chunk.text,
                "questions": question_hits(chunk.matches, limit),
            }
            for chunk in segment_chunks(query)
        ]
        return {
            "segments": segments,
            "text": query.tags.get(OCR_TEXT_TAG, ""),
            "focus": query.tags.get(OCR_FOCUS_TAG, ""),
            "focus_box": [int(v) for v in query.tags[OCR_FOCUS_BOX_TAG]] if OCR_FOCUS_BOX_TAG in query.tags else None,
            "note": query.tags.get(OCR_NOTE_TAG, ""),
            "questions": question_hits(query.matches, limit),
            "figure_region": [int(v) for v in figure.tags[FIGURE_REGION_TAG]] if figure else None,
            "figures": question_hits(figure.matches, limit) if figure else [],
        }

    def near_duplicates(
        self, by: str = "text", threshold: float = 0.8, neighbours: int = 10, max_items: int = 100_000, **filters: Any
    ) -> dict[str, Any]:
        """Groups of near-duplicate questions (see qbank.domain.duplicates): by ``text`` (BM25 recall, bigram
        Jaccard) or ``dense`` (CLIP cosine), within the filters; at most ``max_items`` stems scanned."""
        wanted = _given(filters)
        parameters = {"by": by, "threshold": threshold, "neighbours": neighbours, "max_items": max_items}
        result = self.post("/near_duplicates", parameters={**parameters, "filter": wanted})[1]
        result["scanned"] = int(result.get("scanned", 0))
        return result
