"""The check every executor makes before any work, in one place: the endpoint, the request's size
(QBANK_MAX_DOCS_PER_REQUEST) and the parameters the executor reads, each for its exact type
(qbank.service.params); handlers get the checked parameters."""

from __future__ import annotations

from typing import Any, ClassVar

from jina import Executor
from jina.constants import __default_endpoint__
from jina.serve.executors import __dry_run_endpoint__

from qbank.config import Limits
from qbank.service.metrics import ExecutorSeries
from qbank.service.params import UNKNOWN_ENDPOINT, UnknownEndpointError, check_request


class NotReadyError(RuntimeError):
    """A readiness probe reached an executor that cannot serve; the message says why."""


class CheckedExecutor(Executor):
    """An executor whose ``__acall__`` checks each request first. Subclasses set ``request_limits``
    in ``__init__``, and may narrow ``checked_parameters`` (None: every parameter of the endpoint)."""

    checked_parameters: ClassVar[frozenset[str] | None] = None
    # jina sends an endpoint no handler declares to /default: refused, unless a later executor
    # refuses it (naming the served endpoints) and this one only passes requests on.
    refuses_unknown_endpoints: ClassVar[bool] = True
    request_limits: Limits
    series: ExecutorSeries  # its Prometheus series (qbank.service.metrics), made by each subclass

    async def readiness_problem(self) -> str | None:
        """Why this executor cannot serve now (a part it needs is down), or None."""
        return None

    async def __acall__(self, req_endpoint: str, **kwargs: Any) -> Any:
        if req_endpoint == __dry_run_endpoint__:
            # jina's readiness probe (GET /, /dry_run, `jina ping`) passes through every executor:
            # answered without work (it was refused as an unknown endpoint: 42 ERROR lines a probe),
            # or failed with what keeps this executor from serving.
            problem = await self.readiness_problem()
            if problem:
                raise NotReadyError(problem)
            return None
        try:
            if req_endpoint == __default_endpoint__:
                if self.refuses_unknown_endpoints:
                    raise UnknownEndpointError(UNKNOWN_ENDPOINT)
            else:
                docs = kwargs.get("docs")
                kwargs["parameters"] = check_request(
                    req_endpoint,
                    kwargs.get("parameters"),
                    len(docs) if docs is not None else 0,
                    self.request_limits,
                    only=self.checked_parameters,
                )
            return await super().__acall__(req_endpoint, **kwargs)
        except Exception as exc:  # counted by what it is (a refusal, a Milvus error), then raised as it was
            self.series.failed(exc)
            raise
