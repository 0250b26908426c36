"""The gateway's token check on every protocol (jina 3.34 has none of its own; clip-as-service's lived
in Jina Cloud's gateway): gRPC metadata ``authorization``, the HTTP header ``Authorization``, and the
same header on a WebSocket handshake. ``<token>`` and ``Bearer <token>`` are both accepted; health
probes, jina's dry run and the search page's own files (no data) stay open."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import grpc

from qbank.service.handlers import in_place_of
from qbank.service.page import PAGE_FILES

REFUSED = "missing or wrong token: send 'Authorization: <token>' (gRPC metadata 'authorization')"
# Readiness probes: gRPC health, and jina's dry run (what `jina ping gateway` and is_flow_ready use).
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/jina.JinaGatewayDryRunRPC/")
# jina's health check and dry run (`jina ping` over HTTP and WebSocket); the page's files (no data)
OPEN_HTTP_PATHS = {"/", "/dry_run", *PAGE_FILES}
OPEN_WEBSOCKET_PATHS = {"/dry_run"}


def token_matches(presented: str | bytes | None, token: str) -> bool:
    """Constant-time check of ``<token>`` or ``Bearer <token>``."""
    if isinstance(presented, bytes):
        presented = presented.decode("latin-1")
    if not presented:
        return False
    value = presented.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return hmac.compare_digest(value.encode("utf-8"), token.encode("utf-8"))


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every gRPC call without the token with UNAUTHENTICATED, before it reaches jina."""

    def __init__(self, token: str, refused: Callable[[], None] = lambda: None):
        self._token = token
        self._refused = refused  # counts the refusal (qbank_refusals_total{reason="auth"})

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_GRPC_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if token_matches(metadata.get("authorization"), self._token):
            return handler
        self._refused()
        return _refusing_handler(handler)


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        if handler.request_streaming:  # take the first message, so the client is not cut off mid-send
            async for _ in request:
                break
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

    return in_place_of(handler, refuse)


class TokenMiddleware:
    """ASGI middleware for the HTTP and WebSocket apps: 401, or a refused handshake, without the token."""

    def __init__(self, app: Any, token: str, refused: Callable[[], None] = lambda: None):
        self.app = app
        self._token = token
        self._refused = refused  # counts the refusal (qbank_refusals_total{reason="auth"})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        self._refused()
        if scope["type"] == "websocket":  # closing before accept makes the server answer 403
            await send({"type": "websocket.close", "code": 1008, "reason": REFUSED})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps({"detail": REFUSED}).encode()})

    def _allowed(self, scope: dict) -> bool:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in OPEN_HTTP_PATHS:
            return True
        if scope["type"] == "websocket" and scope.get("path") in OPEN_WEBSOCKET_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        return token_matches(headers.get(b"authorization"), self._token)
