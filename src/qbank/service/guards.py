"""The gateway's input guards, one per protocol, before jina parses anything: a malformed gRPC
message refused with INVALID_ARGUMENT and its reason, an HTTP body over the size limit or too deep
or with a lone surrogate answered 400/413 with its reason, a WebSocket frame that is not a request
closed with 1007/1009; a gRPC deadline carried to the executors as ``deadline``; an HTTP request
whose client went away cancelled with every task it started."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from jina.types.request.data import DataRequest, SingleDocumentRequest

from qbank.service.handlers import in_place_of

logger = logging.getLogger("qbank.gateway")


# jina's data RPCs, whose requests arrive as lazily parsed DataRequests (jina's Client, clip_client,
# QbankClient); the other RPCs (health, dry run, endpoint discovery) carry no client data.
DATA_REQUEST_METHODS = frozenset(
    {
        "/jina.JinaRPC/Call",
        "/jina.JinaSingleDataRequestRPC/process_single_data",
        "/jina.JinaSingleDocumentRequestRPC/stream_doc",
    }
)


def malformed_request(request: Any) -> str | None:
    """Why ``request`` (a jina DataRequest or SingleDocumentRequest, parsed lazily) is not a valid
    one, None when it is: parses it whole now, which jina's gateway does anyway before routing it."""
    if not isinstance(request, (DataRequest, SingleDocumentRequest)):
        return None
    try:
        request.proto_with_data  # noqa: B018 - the parse is the point
    except (DecodeError, ValueError) as exc:
        return (
            f"the message is not a valid jina request ({exc}): a string field that is not UTF-8, or a "
            "truncated or corrupt message"
        )
    return None


class MalformedMessageInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a gRPC data message that does not parse with INVALID_ARGUMENT, before it reaches jina.

    jina 3.34 parses it inside its request stream, and the failure there leaves one of the stream's
    tasks waiting forever: when told to stop, the gateway then spun at 100 % CPU in
    ``wait_floating_requests_end`` and never exited (killed test runs left such gateways behind).
    A stream is answered up to the bad message, then ended with the error; nothing after it is read."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in DATA_REQUEST_METHODS:
            return handler
        if handler.request_streaming and handler.response_streaming:
            return in_place_of(handler, _checked_stream(handler))
        if not handler.request_streaming and not handler.response_streaming:
            return in_place_of(handler, _checked_unary(handler))
        if not handler.request_streaming:  # stream_doc: one document in, a stream of answers out
            return in_place_of(handler, _checked_unary_stream(handler))
        return handler


def with_deadline(request: Any, context: grpc.aio.ServicerContext) -> Any:
    """A /search request carries its gRPC call's deadline as the ``deadline`` parameter (Unix seconds)
    unless it names one: jina sends a request on to the executors in tasks of its own, which a client
    that gives up never cancels (20 clients that gave up after 2 s kept the reader busy for 711 s);
    the reader drops or stops a photo search whose deadline has passed."""
    remaining = context.time_remaining()
    if remaining is None or request.header.exec_endpoint != "/search":
        return request
    parameters = dict(request.parameters or {})
    if "deadline" not in parameters:
        parameters["deadline"] = time.time() + remaining
        request.parameters = parameters
    return request


async def _checked_one(request: Any, context: grpc.aio.ServicerContext) -> Any:
    """A call's one request, with its deadline, once it parses; else the call ends INVALID_ARGUMENT."""
    problem = malformed_request(request)
    if problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
    return with_deadline(request, context)


def _checked_unary(handler: grpc.RpcMethodHandler):
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await handler.unary_unary(await _checked_one(request, context), context)

    return call


def _checked_unary_stream(handler: grpc.RpcMethodHandler):
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async for response in handler.unary_stream(await _checked_one(request, context), context):
            yield response

    return call


def _checked_stream(handler: grpc.RpcMethodHandler):
    async def call(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        problems: list[str] = []

        async def checked() -> Any:
            number = 0
            async for request in requests:
                number += 1
                problem = malformed_request(request)
                if problem:  # end the stream jina reads, cleanly, and refuse after its answers
                    problems.append(f"message {number} of the stream: {problem}")
                    return
                yield with_deadline(request, context)

        async for response in handler.stream_stream(checked(), context):
            yield response
        if problems:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{problems[0]}; the messages before it were answered"
            )

    return call


def _is_malformed_input(exc: BaseException) -> str | None:
    """protobuf's reason when ``exc`` (or what caused it) is a request jina could not turn into
    Documents, else None."""
    from google.protobuf.message import DecodeError

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, (DecodeError, RecursionError)):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


MAX_JSON_DEPTH = 36  # body levels: tags nested ~32 deep; protobuf refused 40 levels of tags inside jina's gateway
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def json_depth(body: bytes) -> int:
    """Deepest nesting of objects/arrays in a JSON text (strings skipped), at C speed."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # how JSON writes one
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where a parsed JSON value holds a lone UTF-16 surrogate ("\\ud800" written alone), as
    ``data[0].text``; None when it holds none. json joins valid pairs, so any one left is lone."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return f"{path or 'the request'} (U+{ord(found.group()):04X})" if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"a key in {path or 'the request'}"
            where = lone_surrogate(item, f"{path}.{key}" if path else str(key))
            if where:
                return where
    if isinstance(value, list):
        for index, item in enumerate(value):
            where = lone_surrogate(item, f"{path}[{index}]")
            if where:
                return where
    return None


def surrogate_problem(text: str | bytes, parsed: Any = None) -> str | None:
    """Why a JSON request cannot be stored (a lone surrogate, which no protocol's UTF-8 can carry:
    jina answered a bare 500 over HTTP and dropped the WebSocket), or None. Parsed only when the
    raw text holds such an escape."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if not _SURROGATE_ESCAPE.search(raw):
        return None
    if parsed is None:
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            return None  # not JSON: jina's own parse answers it
    where = lone_surrogate(parsed)
    if where is None:
        return None
    return f"field {where} holds a lone surrogate, which is not a character: send the character itself or a valid pair"


class RequestTooLarge(Exception):
    """An HTTP body over the request limit; read no further."""


async def _read_body(receive: Any, limit: int) -> tuple[bytes, list[dict]]:
    messages, chunks, size = [], [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def too_large(size: int | str, limit: int) -> str:
    return (
        f"the request is {size} bytes, over the limit of {limit} (QBANK_MAX_REQUEST_BYTES; by default "
        "3 x QBANK_MAX_IMAGE_BYTES): send fewer or smaller items per request"
    )


class MalformedRequestMiddleware:
    """Answers 400 with the reason for a request jina's HTTP gateway cannot turn into Documents, and
    413 for a body over the request limit (QBANK_MAX_REQUEST_BYTES), read no further.

    Tags nested 40 deep exceed protobuf's nesting limit inside jina's gateway: it answered a bare
    500, and the failed conversion left the gateway unable to shut down (SIGINT ignored). Bodies
    nested deeper than MAX_JSON_DEPTH, and strings holding a lone surrogate (also a bare 500), are
    refused before jina reads them; any other conversion failure still becomes a 400 with
    protobuf's reason.
    """

    def __init__(self, app: Any, max_bytes: int, too_large: Callable[[], None] = lambda: None):
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large  # counts the refusal (qbank_refusals_total{reason="size"})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            self.too_large()
            await _send_json(send, 413, too_large(declared, self.max_bytes))
            return
        try:
            body, messages = await _read_body(receive, self.max_bytes)
        except RequestTooLarge:
            self.too_large()
            await _send_json(send, 413, too_large(f"over {self.max_bytes}", self.max_bytes))
            return
        problem = surrogate_problem(body)
        if problem:
            await _send_json(send, 400, problem)
            return
        depth = json_depth(body)
        if depth > MAX_JSON_DEPTH:
            await _send_json(
                send,
                400,
                f"the request nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH} (tags may nest about {MAX_JSON_DEPTH - 4} levels)",
            )
            return
        pending = list(messages)
        disconnected = asyncio.Event()

        async def replay() -> dict:
            if pending:
                return pending.pop(0)
            await disconnected.wait()  # the body is read: what is left to receive is the disconnect
            return {"type": "http.disconnect"}

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await cancelled_on_disconnect(self.app(scope, replay, tracking_send), receive, disconnected, scope)
        except Exception as exc:
            reason = _is_malformed_input(exc)
            if reason is None or started:
                raise
            detail = (
                f"the request cannot be read as Documents ({reason}): nesting in tags is limited "
                "by protobuf to about 30 levels"
            )
            await _send_json(send, 400, detail)


# The tasks a request being answered has started, directly or through the tasks it started (jina's
# stream answers a request in tasks of its own, and sends to each executor in another): what is
# cancelled when its client disconnects.
_REQUEST_TASKS: contextvars.ContextVar[list[asyncio.Task] | None] = contextvars.ContextVar(
    "qbank_request_tasks", default=None
)


def _track_request_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Install, once per event loop, a task factory that notes each task in its request's list."""
    if getattr(loop.get_task_factory(), "qbank_tracking", False):
        return
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future:
        task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
        tasks = _REQUEST_TASKS.get()
        if tasks is not None:
            tasks.append(task)
        return task

    factory.qbank_tracking = True
    loop.set_task_factory(factory)


async def cancelled_on_disconnect(call: Any, receive: Any, disconnected: asyncio.Event, scope: dict) -> None:
    """Run ``call`` (an HTTP request being answered, whose body has been read) and cancel it, and
    every task it started, when its client disconnects: the executor calls are cancelled and the
    reader stops before its next model run. An HTTP client that gave up kept its photo search
    reading to the end for nobody (jina answers in tasks of its own, which cancelling the handler
    alone does not reach). Sets ``disconnected`` for the app's own receive."""
    _track_request_tasks(asyncio.get_running_loop())
    tasks: list[asyncio.Task] = []
    token = _REQUEST_TASKS.set(tasks)
    try:
        answering = asyncio.ensure_future(call)
    finally:
        _REQUEST_TASKS.reset(token)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watching = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({answering, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not answering.done():
            for task in tasks:
                task.cancel()
    try:
        await answering
    except asyncio.CancelledError:
        if not disconnected.is_set():
            raise
        logger.info(
            "%s %s: the client disconnected before its answer; its work was cancelled",
            scope.get("method"),
            scope.get("path"),
        )


async def _send_json(send: Any, status: int, detail: str) -> None:
    start = {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    await send(start)
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}, ensure_ascii=False).encode()})


WS_INVALID_PAYLOAD = 1007  # RFC 6455: the frame's data is not what this endpoint accepts


WS_TOO_BIG = 1009  # RFC 6455: the message is too big to process


def frame_problem(message: dict, binary: bool) -> str | None:
    """Why one WebSocket frame cannot be a jina request, or None. Short: a close reason holds 123 bytes."""
    if binary:
        data = message.get("bytes")
        if data is None:
            return "send binary frames: this connection uses the bytes subprotocol"
        if data == bytes(True):  # jina's end-of-stream marker
            return None
        from jina.proto import jina_pb2

        try:
            jina_pb2.DataRequestProto().ParseFromString(data)
        except Exception:
            return "frame is not a serialized jina DataRequest"
        return None
    text = message.get("text")
    if text is None:
        return "send JSON text frames (or connect with the bytes subprotocol)"
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):
        return "frame is not valid JSON"
    if not isinstance(request, dict):
        return "a request must be a JSON object"
    depth = json_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_JSON_DEPTH:
        return f"request nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
    problem = surrogate_problem(text, request)
    if problem:
        return problem.split(", which")[0] + " (not a character)"
    data = request.get("data")
    if data is not None and not isinstance(data, (list, dict)):
        return "'data' must be a list of documents"
    if not isinstance(request.get("parameters") or {}, dict):
        return "'parameters' must be an object"
    endpoint = request.get("execEndpoint", request.get("exec_endpoint"))
    if endpoint is not None and not isinstance(endpoint, str):
        return "'execEndpoint' must be a string"
    return None


class MalformedFrameMiddleware:
    """Closes a WebSocket with 1007 and the reason when a frame cannot be a request.

    jina's WebSocket gateway raised inside its request stream on such a frame and dropped the
    connection without a close frame; about 30 of them left the gateway unable to shut down. The
    bad frame never reaches jina: the app sees a disconnect and ends its stream cleanly.
    """

    def __init__(self, app: Any, max_bytes: int, too_large: Callable[[], None] = lambda: None):
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large  # counts the refusal (qbank_refusals_total{reason="size"})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        binary = headers.get(b"sec-websocket-protocol", b"").decode("latin-1").strip() == "bytes"

        async def checked_receive() -> dict:
            message = await receive()
            if message["type"] != "websocket.receive":
                return message
            size = len(message.get("bytes") or message.get("text") or "")
            if size > self.max_bytes:
                reason = f"frame of {size} bytes is over QBANK_MAX_REQUEST_BYTES ({self.max_bytes})"
                self.too_large()
                await send({"type": "websocket.close", "code": WS_TOO_BIG, "reason": reason})
                return {"type": "websocket.disconnect", "code": WS_TOO_BIG}
            problem = frame_problem(message, binary)
            if problem is None:
                return message
            await send({"type": "websocket.close", "code": WS_INVALID_PAYLOAD, "reason": problem[:120]})
            return {"type": "websocket.disconnect", "code": WS_INVALID_PAYLOAD}

        await self.app(scope, checked_receive, send)
