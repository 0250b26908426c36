"""Request parameters: every endpoint's parameters declared once, each checked for its exact type.

Parameters reach the executors as a protobuf ``Struct`` (gRPC) or JSON (HTTP, WebSocket), so a
client can send any shape for any name. Before this module a string where a list belonged was
iterated character by character (``question_ids: "12"`` deleted questions "1" and "2"), so every
value is checked here for exactly its declared kind — a list of strings is a list whose items are
all strings — and an unknown name is refused, naming the endpoint's known parameters. Numbers
travel as doubles in a ``Struct``: a whole-number float is accepted where an integer is declared.

Pure code, no I/O: both executors call :func:`check_request` for the endpoint they serve.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from qbank.config import Limits
from qbank.domain.search_plan import PlanError, SearchPlan


class ParameterError(ValueError):
    """A request parameter has the wrong type or value, or is unknown; the message names it."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fail(name: str, expected: str, value: Any) -> ParameterError:
    return ParameterError(f"parameter {name!r} must be {expected}, got {_kind(value)}")


def integer(low: int, high: int, setting: str = "") -> Callable[[str, Any], int]:
    """A whole number in [low, high] (a whole-number float is accepted: Struct numbers are doubles)."""
    expected = f"an integer in {low}..{high}" + (f" ({setting})" if setting else "")

    def check(name: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(name, expected, value)
        return value

    return check


def number(low: float, high: float, low_open: bool = False) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(name, f"a number in {interval}", value)
        if value < low or value > high or (low_open and value == low):
            raise _fail(name, f"a number in {interval}", value)
        return float(value)

    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "true or false", value)
    return value


def string(max_chars: int = 1000) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(name, "a string", value)
        if len(value) > max_chars:
            raise ParameterError(f"parameter {name!r} is {len(value)} characters, over the limit of {max_chars}")
        return value

    return check


SELECTOR_ENDPOINTS = ("/encode", "/", "/rank")


def document_selector(name: str, value: Any) -> str:
    """clip-server's ``access_paths`` (``traversal_paths`` before it): a docarray selector such as
    ``@r`` (the documents sent), ``@c`` (their chunks), ``@r,c`` (both), ``@c[0]``. Whether docarray
    can follow it is checked against the request's documents (the encoder)."""
    text = string(200)(name, value)
    if not text.startswith("@"):
        raise ParameterError(
            f"parameter {name!r} must be a document selector starting with '@' (e.g. '@r', '@c', '@r,c'), got {text!r}"
        )
    return text


def top_level_only(name: str, value: Any) -> str:
    """``access_paths`` on an endpoint that works on the documents sent: only ``@r`` means that."""
    text = string(200)(name, value)
    if text != "@r":
        raise ParameterError(
            f"parameter {name!r} can only be '@r' here (this endpoint works on the documents sent, one item "
            f"each); selectors such as {text!r} are taken by {', '.join(SELECTOR_ENDPOINTS)}"
        )
    return text


def choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(name, f"one of {list(allowed)}", value)
        return value

    return check


def string_list(max_items: int, setting: str = "") -> Callable[[str, Any], list[str]]:
    """A list of strings, never a bare string (which would be iterated character by character)."""

    def check(name: str, value: Any) -> list[str]:
        if not isinstance(value, (list, tuple)):
            raise _fail(name, "a list of strings", value)
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if bad:
            raise ParameterError(
                f"parameter {name!r} must be a list of strings; item {bad[0]} is {_kind(value[bad[0]])}"
            )
        if len(value) > max_items:
            where = f" ({setting})" if setting else ""
            raise ParameterError(f"parameter {name!r} has {len(value)} items, over the limit of {max_items}{where}")
        return list(value)

    return check


def filter_object(name: str, value: Any) -> dict[str, Any]:
    """An object of field -> value or [values]; the store checks fields and values (qbank.store)."""
    if not isinstance(value, dict):
        raise _fail(name, "an object of field -> value(s), e.g. {subject: 数学}", value)
    return dict(value)


def weights(name: str, value: Any) -> tuple[float, float]:
    """Two numbers in [0, 1] (dense, bm25), as a list or as the string "0.7,0.3"; the setting's own rule."""
    from qbank.domain.fusion import parse_weights

    if not isinstance(value, (str, list, tuple)) or any(isinstance(w, bool) for w in value):
        raise _fail(name, "two numbers in [0, 1] (dense, bm25)", value)
    try:
        return parse_weights(value, f"parameter {name!r}")
    except ValueError as exc:
        raise ParameterError(str(exc)) from None


Check = Callable[[str, Any], Any]

# What clip_client sends with every call (drop_image_content) or may send (model_name), and
# clip-server's document selectors. Accepted, type-checked, on every endpoint; the selectors select
# on /encode, / and /rank (as clip-server's encoder) and elsewhere only '@r' (the documents sent).
CLIP_CLIENT_PARAMETERS: dict[str, Check] = {
    "drop_image_content": boolean,
    "model_name": string(200),
    "access_paths": top_level_only,
    "traversal_paths": top_level_only,
    "batch_size": integer(1, 100_000),
}
SELECTORS: dict[str, Check] = {"access_paths": document_selector, "traversal_paths": document_selector}


def endpoint_parameters(endpoint: str, limits: Limits) -> dict[str, Check] | None:
    """The checks of each parameter ``endpoint`` takes; None for an unknown endpoint."""
    return _parameter_table(limits).get(endpoint)


@functools.lru_cache(maxsize=8)
def _parameter_table(limits: Limits) -> dict[str, dict[str, Check]]:
    """Every endpoint's checks under ``limits``: built once per executor's limits, not per request."""
    from qbank.domain.fusion import SEARCH_MODES
    from qbank.domain.schema import DUPLICATE_MEASURES, MODALITIES, SEARCH_PARTS

    ids = string_list(limits.max_ids, "QBANK_MAX_IDS_PER_REQUEST")
    table: dict[str, dict[str, Check]] = {
        "/encode": SELECTORS,
        "/rank": SELECTORS,
        "/index": {},
        "/update": {},
        "/search": {
            "limit": integer(1, limits.max_limit, "QBANK_MAX_LIMIT"),
            "filter": filter_object,
            "modality": choice(*MODALITIES),
            "mode": choice(*SEARCH_MODES),
            "rrf_k": integer(1, 100_000),
            "weights": weights,
            "ocr": boolean,  # image queries: search stems with the text read from them (the OCR executor)
            "page": boolean,  # with ocr: a page of several questions, each searched on its own
            # with ocr: match the figure found on each photo against the bank's figures (default: when
            # its words are too few to tell its question, QBANK_OCR_FIGURE_SEARCH_BELOW)
            "figures": boolean,
            "group_by": choice("question_id"),  # limit counts questions, each its best item
            "search_in": choice(*SEARCH_PARTS),  # bm25 over the stems (default) or the analyses
            # Unix seconds after which the caller no longer wants the answer: the reader drops a photo
            # search still waiting then and stops reading before its next image. The gateway sets it
            # from a gRPC call's deadline when the call has one and the request names none.
            "deadline": number(0, 1e11),
        },
        "/delete": {"ids": ids, "question_ids": ids, "filter": filter_object, "allow_many": boolean},
        "/exists": {"ids": ids},
        "/questions": {"question_ids": string_list(limits.max_limit, "QBANK_MAX_LIMIT")},
        "/count": {"filter": filter_object},
        "/stats": {},
        "/near_duplicates": {
            "by": choice(*DUPLICATE_MEASURES),
            "threshold": number(0.0, 1.0, low_open=True),
            "neighbours": integer(1, 100),
            "max_items": integer(1, 10_000_000),
            "filter": filter_object,
        },
    }
    table["/"] = table[""] = table["/encode"]
    return {endpoint: {**CLIP_CLIENT_PARAMETERS, **spec} for endpoint, spec in table.items()}


KNOWN_ENDPOINTS = (
    "/encode",
    "/rank",
    "/index",
    "/search",
    "/update",
    "/delete",
    "/exists",
    "/questions",
    "/count",
    "/stats",
    "/near_duplicates",
)


class RequestTooLargeError(ParameterError):
    """A request over a size limit; the message names the limit and its setting."""

    refusal_reason = "size"  # qbank_refusals_total (qbank.service.metrics)


class UnknownEndpointError(ParameterError):
    """A request for an endpoint no executor serves (e.g. a misspelt ``/Index``)."""


UNKNOWN_ENDPOINT = (
    "unknown endpoint: this service serves " + ", ".join(KNOWN_ENDPOINTS) + " and / (encode), and nothing "
    "else (a misspelt endpoint such as /Index lands here; one model per service, so no /encode/<model_name>)"
)


def check_request(
    endpoint: str, parameters: dict[str, Any] | None, docs_count: int, limits: Limits, only: set[str] | None = None
) -> dict[str, Any]:
    """What an executor checks before any work: endpoint, parameters, request size; returns the
    checked parameters. ``only``: check just these names and keep the rest as sent (the encoder
    checks its own and leaves the store's to the indexer, whose limits it does not hold)."""
    checked = check_parameters(endpoint, parameters, limits, only)
    if docs_count > limits.max_docs:
        raise RequestTooLargeError(
            f"request has {docs_count} documents, over the limit of {limits.max_docs} per request "
            "(QBANK_MAX_DOCS_PER_REQUEST): send it in smaller batches"
        )
    if endpoint == "/search" and (only is None or "limit" in only):
        limit = checked.get("limit", limits.default_limit)
        if docs_count * limit > limits.max_results:
            raise RequestTooLargeError(
                f"search asks for {docs_count} queries x limit {limit} = {docs_count * limit} matches, over the "
                f"limit of {limits.max_results} per request (QBANK_MAX_RESULTS_PER_REQUEST): send fewer queries "
                "per request or a smaller limit"
            )
    return checked


def check_parameters(
    endpoint: str, parameters: dict[str, Any] | None, limits: Limits, only: set[str] | None = None
) -> dict[str, Any]:
    """The request's parameters, each checked against ``endpoint``'s declaration; raises ParameterError.

    Names starting with ``__`` are jina's own (``__results__``) and are left out.
    """
    spec = endpoint_parameters(endpoint, limits)
    if spec is None:  # the executors refuse jina's /default first; this is for direct callers
        raise UnknownEndpointError(f"{UNKNOWN_ENDPOINT} (got {endpoint!r})")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ParameterError(f"parameters must be an object, got {_kind(parameters)}")
    checked: dict[str, Any] = {}
    for name, value in parameters.items():
        if name.startswith("__"):
            continue
        if only is not None and name not in only:
            checked[name] = value
            continue
        check = spec.get(name)
        if check is None:
            raise ParameterError(
                f"unknown parameter {name!r} for {endpoint}; it takes: {', '.join(sorted(spec)) or 'none'}"
            )
        if value is None:  # JSON null: the same as not sending it
            continue
        checked[name] = check(name, value)
    return checked


def search_plan(parameters: dict[str, Any], default_mode: str) -> SearchPlan:
    """The plan of a /search request (qbank.domain.search_plan) whose parameters were checked; a
    search that cannot be planned is refused as a ParameterError naming the parameter. The encoder and
    the indexer both ask here, so they refuse alike."""
    try:
        return SearchPlan.of(parameters, default_mode)
    except PlanError as exc:
        raise ParameterError(str(exc)) from None
