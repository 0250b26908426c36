"""The Flow's gateway: jina's gRPC, HTTP and WebSocket servers, guarded by an optional token.

jina 3.34 has no access control of its own (clip-as-service's token check lived in Jina Cloud's
gateway), so this gateway adds it where each protocol carries credentials:

- gRPC: metadata ``authorization`` (what clip_client sends for ``credential`` / CLIP_AUTH_TOKEN);
- HTTP: header ``Authorization`` (clip_client does the same over HTTP);
- WebSocket: header ``Authorization`` on the handshake (qbank_client sends it; clip_client does
  not support credentials over WebSocket, so with a token set it must use gRPC or HTTP).

``<token>`` and ``Bearer <token>`` are both accepted. Health probes stay open (gRPC health
service, jina's dry run, ``GET /`` on HTTP) so orchestrators can check readiness without the secret.
With ``QBANK_AUTH_TOKEN`` unset the gateway is exactly jina's CompositeGateway.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

import grpc
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.gateway.websocket import WebSocketGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer

TOKEN_ENV = "QBANK_AUTH_TOKEN"
REFUSED = "missing or wrong token: send 'Authorization: <token>' (gRPC metadata 'authorization')"
# Readiness probes: gRPC health, and jina's dry run (what `jina ping gateway` and is_flow_ready use).
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/jina.JinaGatewayDryRunRPC/")
OPEN_HTTP_PATHS = {"/"}  # jina's health check


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

    def __init__(self, token: str):
        self._token = token

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_GRPC_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if token_matches(metadata.get("authorization"), self._token):
            return handler
        return _refusing_handler(handler)


def _refusing_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        if handler.request_streaming:  # take the first message, so the client is not cut off mid-send
            async for _ in request:
                break
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class TokenMiddleware:
    """ASGI middleware for the HTTP and WebSocket apps: 401, or a refused handshake, without the token."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self._token = token

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
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
        headers = dict(scope.get("headers") or [])
        return token_matches(headers.get(b"authorization"), self._token)


class _TokenHolder:
    """Takes the ``qbank_token`` keyword for the guarded server classes below (first in their MRO)."""

    def __init__(self, *, qbank_token: str, **kwargs: Any):
        super().__init__(**kwargs)
        self._qbank_token = qbank_token


class TokenGRPCGateway(_TokenHolder, GRPCGateway):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        tracing = self.grpc_tracing_server_interceptors or []
        self.grpc_tracing_server_interceptors = [TokenInterceptor(self._qbank_token), *tracing]


class TokenHTTPGateway(_TokenHolder, HTTPGateway):
    @property
    def app(self):
        app = super().app  # jina builds a fresh FastAPI app on each access
        app.add_middleware(TokenMiddleware, token=self._qbank_token)
        return app


class TokenWebSocketGateway(_TokenHolder, WebSocketGateway):
    @property
    def app(self):
        return self._app

    @app.setter
    def app(self, value) -> None:  # jina assigns the app in setup_server, before uvicorn gets it
        value.add_middleware(TokenMiddleware, token=self._qbank_token)
        self._app = value


GUARDED = {"grpc": TokenGRPCGateway, "http": TokenHTTPGateway, "websocket": TokenWebSocketGateway}


class QbankGateway(CompositeGateway):
    """jina's composite gateway (one server per protocol), each server guarded when a token is set."""

    def __init__(self, **kwargs: Any):
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            super().__init__(**kwargs)
            return
        CompositeBaseServer.__init__(self, **kwargs)  # what CompositeServer does, with guarded classes
        self.servers = []
        for server_kwargs in self._server_kwargs:
            protocol = server_kwargs["runtime_args"]["protocol"]
            protocol = getattr(protocol, "name", str(protocol)).lower()
            self.servers.append(GUARDED[protocol](qbank_token=token, **server_kwargs))
        self.gateways = self.servers
        self.logger.info(f"gateway requires a token ({TOKEN_ENV}) on {', '.join(GUARDED)}")
