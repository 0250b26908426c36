"""Make clip_client work over HTTP and WebSocket against jina 3.34, with nothing for the user to do.

Two client-side jina 3.34 bugs, both met through clip_client:

* HTTP: jina's HTTP client puts the response docs in ``DataRequest.direct_docs``, but clip_client
  reads ``response.data.docs``, which ignores ``direct_docs``, so every call found no docs (and
  jina's error path then failed on ``functools.partial.__name__``). Fix: ``DataRequest.data`` hands
  out ``direct_docs`` when they are set, so both views agree.
* WebSocket: a server error is dropped when the receive task has already ended by the time the
  client cancels it (likely when an ``on_always`` callback is given, as clip_client always does),
  so a failed request looked like a success with no results. Fix: error responses are recorded
  through ``on_error`` and raised as ``BadServer`` at the end of the stream, as gRPC/HTTP do.

Applied by ``qbank_jina_compat.pth`` (installed with this package) in every Python process of the
environment, lazily: wrapt's post-import hooks patch each jina module right after it is imported,
so processes that never import jina pay nothing. A module of its own, outside the ``qbank``
package, so that the .pth does not import ``qbank`` at interpreter start (which made every process
use the installed copy of qbank instead of the tree being edited). Set QBANK_NO_JINA_PATCH=1 to
disable. (The server-side half of the HTTP problem, naive route timestamps, is handled in the
indexer.) tests/test_jina_compat.py fails the day jina fixes these bugs, so the patch can go.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType

MARK = "_qbank_compat_patched"


def patch_data_request(module: ModuleType) -> None:
    data_request = module.DataRequest
    original = data_request.data

    def data(self):
        content = original.fget(self)
        if self.direct_docs is not None and content._loaded_doc_array is None:
            content._loaded_doc_array = self.direct_docs
        return content

    data_request.data = property(data, original.fset, original.fdel, original.__doc__)
    setattr(data_request, MARK, True)


def patch_websocket_client(module: ModuleType) -> None:
    client_cls = module.WebSocketBaseClient
    original = client_cls._get_results

    async def _get_results(self, inputs, on_done, on_error=None, on_always=None, **kwargs):
        if on_error is not None or self.continue_on_error:
            async for response in original(self, inputs, on_done, on_error, on_always, **kwargs):
                yield response
            return
        failed = []
        async for response in original(self, inputs, on_done, failed.append, on_always, **kwargs):
            yield response
        if failed:
            from jina.excepts import BadServer

            raise BadServer(failed[0].header)

    client_cls._get_results = _get_results
    setattr(client_cls, MARK, True)


PATCHES: dict[str, tuple[str, Callable[[ModuleType], None]]] = {
    "jina.types.request.data": ("DataRequest", patch_data_request),
    "jina.clients.base.websocket": ("WebSocketBaseClient", patch_websocket_client),
}


def _apply(name: str, module: ModuleType) -> None:
    cls_name, patch = PATCHES[name]
    if not getattr(getattr(module, cls_name), MARK, False):
        patch(module)


def install() -> None:
    """Patch the jina modules now if imported, else right after their import (idempotent)."""
    import wrapt

    if os.environ.get("QBANK_NO_JINA_PATCH"):
        return
    for name in PATCHES:
        if name in sys.modules:
            _apply(name, sys.modules[name])
        else:
            wrapt.register_post_import_hook(lambda module, name=name: _apply(name, module), name)
