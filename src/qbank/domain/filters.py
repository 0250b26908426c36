"""Milvus filter expressions from request values: built here, escaped by hand.

Why by hand: pymilvus' idiom is filter templating (``filter="subject == {s}"``,
``filter_params={"s": ...}``), but Milvus Lite 2.5 rejects templated filters, and the same code must
run on Lite and on a server. So values become escaped literals (``_literal``) and never raw
expression text: user input cannot change an expression's structure (tests/test_store.py sends
``a" or id != "``). Do not "modernise" this into templating while Lite is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qbank.domain.schema import FILTER_FIELDS, MODALITIES, SCALAR_FIELDS, TAG_ALIASES


class FilterError(ValueError):
    """A search/delete filter names an unknown field or holds a value of the wrong kind."""


def _literal(field: str, value: Any) -> str:
    """A Milvus expression literal; strings are escaped so a value can never end the literal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FilterError(f"filter {field!r}: values must be strings or numbers, got {type(value).__name__}")
    text = str(value)
    if any(ord(ch) < 32 for ch in text):
        raise FilterError(f"filter {field!r}: control characters are not allowed in values")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_filter(filters: dict[str, Any] | None) -> str:
    """``{"subject": "数学", "grade": ["初二", "初三"]}`` -> ``subject == "数学" and grade in ["初二", "初三"]``.

    Only the item's scalar fields may be filtered on; values are escaped literals, never raw
    expression text, so user input cannot change the expression's structure.
    """
    if not filters:
        return ""
    if not isinstance(filters, dict):
        raise FilterError(f"filter must be an object of field -> value(s), got {type(filters).__name__}")
    clauses = []
    for key, value in filters.items():
        field = TAG_ALIASES.get(key, key)
        if field not in SCALAR_FIELDS:
            raise FilterError(f"unknown filter field {key!r}; allowed: {sorted(set(FILTER_FIELDS) | {'type'})}")
        if field == "modality":
            for v in value if isinstance(value, list) else [value]:
                if v not in MODALITIES:
                    raise FilterError(f"filter 'modality' must be one of {MODALITIES}, got {v!r}")
        if isinstance(value, (list, tuple)):
            if not value:
                raise FilterError(f"filter {key!r}: the list of values is empty")
            clauses.append(f"{field} in [{', '.join(_literal(key, v) for v in value)}]")
        else:
            clauses.append(f"{field} == {_literal(key, value)}")
    return " and ".join(clauses)


def ids_filter(ids: Sequence[str]) -> str:
    """``id in [...]`` with escaped literals (pymilvus' ``get`` quotes ids raw, so it is not used)."""
    return f"id in [{', '.join(_literal('id', i) for i in ids)}]"
