"""Make clip_client work over HTTP against jina 3.34, with nothing for the user to do.

jina's HTTP client puts the response docs in ``DataRequest.direct_docs``, but clip_client reads
``response.data.docs``, which ignores ``direct_docs``: every clip_client call over HTTP found no
docs (and jina's error path then failed on ``functools.partial.__name__``). The fix makes
``DataRequest.data`` hand out ``direct_docs`` when they are set, so both views agree.

It is applied by ``qbank_jina_compat.pth`` (installed with this package) in every Python process of
the environment, lazily: a meta-path hook patches ``jina.types.request.data`` right after it is
imported, so processes that never import jina pay nothing. Set QBANK_NO_JINA_PATCH=1 to disable.
(The server-side half of the HTTP problem, naive route timestamps, is handled in the indexer.)
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType

TARGET = "jina.types.request.data"


def patch_data_request(module: ModuleType) -> None:
    data_request = module.DataRequest
    if getattr(data_request, "_qbank_http_docs_patch", False):
        return
    original = data_request.data

    def data(self):
        content = original.fget(self)
        if self.direct_docs is not None and content._loaded_doc_array is None:
            content._loaded_doc_array = self.direct_docs
        return content

    data_request.data = property(data, original.fset, original.fdel, original.__doc__)
    data_request._qbank_http_docs_patch = True


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            patch_data_request(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    if os.environ.get("QBANK_NO_JINA_PATCH"):
        return
    if TARGET in sys.modules:
        patch_data_request(sys.modules[TARGET])
    elif not any(isinstance(f, _PatchAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())
