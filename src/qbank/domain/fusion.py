"""Hybrid search with weights: a dense and a BM25 result list fused into one, here and not in Milvus.

Milvus Lite 2.5.1's WeightedRanker normalises BM25 as a distance (a higher BM25 score came out
lower: measured, tests/test_fulltext.py), so the weighted fusion is done here with Milvus' own
normalisations: cosine -> (1 + s) / 2, IP -> 0.5 + atan(s) / pi, BM25 -> 2 * atan(s) / pi.
"""

from __future__ import annotations

import math
from typing import Any

SEARCH_MODES = ("dense", "bm25", "hybrid")  # CLIP vectors, full text (BM25), both fused


def norm_bm25(score: float) -> float:
    return 2.0 * math.atan(score) / math.pi


def weighted_fusion(
    dense: list[dict[str, Any]], sparse: list[dict[str, Any]], weights: tuple[float, float], limit: int, metric: str
) -> list[dict[str, Any]]:
    """One list from a dense and a BM25 list by weighted normalised scores (best first)."""
    norm_dense = (lambda s: (1.0 + s) / 2.0) if metric == "COSINE" else (lambda s: 0.5 + math.atan(s) / math.pi)
    fused: dict[str, dict[str, Any]] = {}
    for hits, weight, norm in ((dense, weights[0], norm_dense), (sparse, weights[1], norm_bm25)):
        for hit in hits:
            entry = fused.setdefault(hit["id"], {**hit, "distance": 0.0})
            entry["distance"] += weight * norm(float(hit["distance"]))
    return sorted(fused.values(), key=lambda h: h["distance"], reverse=True)[:limit]


def parse_weights(value: Any, label: str) -> tuple[float, float]:
    """``"0.7,0.3"`` or ``[0.7, 0.3]`` -> (dense, bm25) weights in [0, 1]; the error names ``label``."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        weights = tuple(float(w) for w in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be two numbers (dense, bm25), got {value!r}") from None
    if len(weights) != 2 or not all(0.0 <= w <= 1.0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"{label} must be two numbers in [0, 1] (dense, bm25), not both 0; got {value!r}")
    return weights
