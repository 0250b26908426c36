"""The Flow's gateway, assembled: jina's gRPC, HTTP and WebSocket servers, each with its protocol's
input guards (qbank.service.guards), the token check when QBANK_AUTH_TOKEN is set
(qbank.service.auth), the search page at ``/ui`` (qbank.service.page), and a readiness ``GET /``
that means every executor answers. With no token this is jina's CompositeGateway plus those.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway
from jina.serve.runtimes.gateway.websocket import WebSocketGateway
from jina.serve.runtimes.servers.composite import CompositeBaseServer
from prometheus_client import CollectorRegistry

from qbank.config import GatewaySettings
from qbank.service.auth import TokenInterceptor, TokenMiddleware
from qbank.service.guards import MalformedFrameMiddleware, MalformedMessageInterceptor, MalformedRequestMiddleware
from qbank.service.metrics import Refusals
from qbank.service.page import add_page_routes

# A readiness probe's dry run through every executor must come back within this (Kubernetes' probe
# on GET / gives it 5 s: k8s/base/gateway.yaml).
READY_TIMEOUT = 3.0


async def flow_ready(streamer: Any, timeout: float = READY_TIMEOUT) -> str | None:
    """None when jina's dry run passes through every executor within ``timeout``; else why not (an
    executor unreachable or still loading, Milvus down behind the indexer)."""
    from docarray import Document, DocumentArray
    from jina.serve.executors import __dry_run_endpoint__

    async def dry_run() -> None:
        async for _ in streamer.stream_docs(
            docs=DocumentArray([Document()]), exec_endpoint=__dry_run_endpoint__, request_size=1
        ):
            pass

    try:
        await asyncio.wait_for(dry_run(), timeout)
    except asyncio.TimeoutError:
        return f"an executor did not answer the readiness probe within {timeout} s"
    except Exception as exc:  # jina raises the executor's error, or the connection's
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
    return None


class ReadinessMiddleware:
    """``GET /`` answers 200 only when every executor answers (jina's own answered 200 as soon as the
    gateway ran: 13 s before the encoder had loaded its model, and imports sent then failed), 503
    with the reason otherwise. Kubernetes' readiness probe and jina's start-up wait read it."""

    def __init__(self, app: Any, streamer: Callable[[], Any]):
        self.app = app
        self.streamer = streamer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/" and scope.get("method") in ("GET", "HEAD"):
            problem = await flow_ready(self.streamer())
            body = json.dumps(
                {"ready": problem is None, **({"detail": problem} if problem else {})}, ensure_ascii=False
            )
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 503 if problem else 200, "headers": headers})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await self.app(scope, receive, send)


class _TokenHolder:
    """Takes the gateway's settings and refusal counter for the guarded server classes below (first in
    their MRO)."""

    def __init__(self, *, qbank_settings: GatewaySettings, qbank_refusals: Refusals, **kwargs: Any):
        super().__init__(**kwargs)
        self._qbank_settings = qbank_settings
        self._qbank_token = qbank_settings.auth_token
        self._refused_auth = lambda: qbank_refusals.count("auth")
        self._refused_size = lambda: qbank_refusals.count("size")


class TokenGRPCGateway(_TokenHolder, GRPCGateway):
    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # gRPC refuses a longer message from its length prefix, before reading it (RESOURCE_EXHAUSTED)
        limit = self._qbank_settings.request_byte_limit
        self.grpc_server_options = {**(self.grpc_server_options or {}), "grpc.max_receive_message_length": limit}
        guards: list[grpc.aio.ServerInterceptor] = [MalformedMessageInterceptor()]
        if self._qbank_token:  # first: a call without the token is refused before its message is parsed
            guards.insert(0, TokenInterceptor(self._qbank_token, self._refused_auth))
        self.grpc_tracing_server_interceptors = [*guards, *(self.grpc_tracing_server_interceptors or [])]


class TokenHTTPGateway(_TokenHolder, HTTPGateway):
    @property
    def app(self):
        app = super().app  # jina builds a fresh FastAPI app on each access
        settings = self._qbank_settings
        add_page_routes(app, settings.figure_root_paths(), settings.max_figure_bytes)
        app.add_middleware(
            MalformedRequestMiddleware, max_bytes=settings.request_byte_limit, too_large=self._refused_size
        )
        if self._qbank_token:
            app.add_middleware(TokenMiddleware, token=self._qbank_token, refused=self._refused_auth)
        app.add_middleware(ReadinessMiddleware, streamer=lambda: self._request_handler.streamer)
        origins = settings.cors_origin_list()
        if origins:  # outermost: a browser's preflight carries no token and must get its answer
            from starlette.middleware.cors import CORSMiddleware

            app.add_middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        return app


class TokenWebSocketGateway(_TokenHolder, WebSocketGateway):
    @property
    def app(self):
        return self._app

    @app.setter
    def app(self, value) -> None:  # jina assigns the app in setup_server, before uvicorn gets it
        value.add_middleware(
            MalformedFrameMiddleware, max_bytes=self._qbank_settings.request_byte_limit, too_large=self._refused_size
        )
        if self._qbank_token:
            value.add_middleware(TokenMiddleware, token=self._qbank_token, refused=self._refused_auth)
        self._app = value

    async def setup_server(self) -> None:
        await super().setup_server()
        # jina fixes uvicorn's frame limit at 1 GiB; a connection reads it when it opens. Frames up to
        # twice the request limit reach the check above, which names the setting; longer ones are
        # refused by the WebSocket library while their header is read (close 1009 too).
        self.server.config.ws_max_size = 2 * self._qbank_settings.request_byte_limit


GUARDED = {"grpc": TokenGRPCGateway, "http": TokenHTTPGateway, "websocket": TokenWebSocketGateway}


class QbankGateway(CompositeGateway):
    """jina's composite gateway (one server per protocol): malformed input refused with its reason on
    each protocol (HTTP 400, WebSocket close 1007, gRPC INVALID_ARGUMENT), and each server guarded when
    a token is set."""

    def __init__(self, **kwargs: Any):
        settings = GatewaySettings.resolve()
        CompositeBaseServer.__init__(self, **kwargs)  # what CompositeServer does, with guarded classes
        # The gateway's refusals, in the registry jina serves on its monitoring port (QBANK_METRICS_PORT)
        registry = getattr(self, "metrics_registry", None)
        refusals = Refusals(registry if registry is not None else CollectorRegistry())
        self.servers = []
        for server_kwargs in self._server_kwargs:
            protocol = server_kwargs["runtime_args"]["protocol"]
            protocol = getattr(protocol, "name", str(protocol)).lower()
            self.servers.append(GUARDED[protocol](qbank_settings=settings, qbank_refusals=refusals, **server_kwargs))
        self.gateways = self.servers
        if settings.auth_token:
            self.logger.info(f"gateway requires a token (QBANK_AUTH_TOKEN) on {', '.join(GUARDED)}")
        origins = ", ".join(settings.cors_origin_list()) or "none (QBANK_CORS_ORIGINS unset: same origin only)"
        self.logger.info(f"web pages of other origins allowed to call the HTTP API: {origins}")
        roots = ", ".join(map(str, settings.figure_root_paths())) or "none (QBANK_FIGURE_ROOTS unset)"
        self.logger.info(f"search page on the HTTP port at /ui; figure files served from: {roots}")
