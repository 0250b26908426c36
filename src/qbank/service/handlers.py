"""A gRPC method handler with other behaviour and the same kind (unary or streaming, each way) and
(de)serialisers: how the gateway's interceptors refuse or check a call before jina's servicer."""

from __future__ import annotations

from typing import Any

import grpc

_HANDLER_KINDS = {  # (request streaming, response streaming) -> grpc's factory for such a handler
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def in_place_of(handler: grpc.RpcMethodHandler, behaviour: Any) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and (de)serialisers that runs ``behaviour`` instead."""
    make = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
    return make(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
