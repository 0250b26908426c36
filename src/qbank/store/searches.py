"""Searches of the item collection: dense, BM25 (over stems or analyses) and hybrid (RRF in Milvus,
weighted here), grouped per question by Milvus where it can and here where it cannot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymilvus import MilvusClient

from qbank.domain.fusion import weighted_fusion
from qbank.domain.schema import ANALYSIS, STEM, TEXT_MAX_BYTES
from qbank.domain.text import MATCH_FORM_SINCE, normalise, search_form
from qbank.store.access import CollectionAccess
from qbank.store.capabilities import FULL_TEXT_SINCE
from qbank.store.collection import (
    ANALYSIS_SPARSE_FIELD,
    ANALYSIS_TEXT_FIELD,
    OUTPUT_FIELDS,
    SCHEMA_VERSION,
    SEARCH_TEXT_FIELD,
    SPARSE_FIELD,
    VECTOR_FIELD,
    vector_search_params,
)
from qbank.store.errors import FullTextUnavailableError

# Grouped searches where Milvus cannot group (hybrid; servers before 2.4) fetch this many items per
# wanted group and keep each group's best: "10 questions" is then 10 unless one question holds most
# of the nearest items. Where Milvus groups (group_by_field), it is exact.
GROUP_OVERFETCH = 4


def first_per_group(hits: list[dict[str, Any]], field: str, limit: int) -> list[dict[str, Any]]:
    """The best hit of each ``field`` value, best first, at most ``limit``: hits arrive best first.
    Applied to Milvus' own grouped results too (the 2.3.5 server accepted group_by_field and
    returned the same question twice)."""
    seen: set[Any] = set()
    kept = []
    for hit in hits:
        key = hit.get("entity", {}).get(field, hit.get("id"))
        if key not in seen:
            seen.add(key)
            kept.append(hit)
            if len(kept) == limit:
                break
    return kept


class ItemSearches(CollectionAccess):
    """Nearest items by vector, by BM25, or both fused; ``group_by`` a scalar field (question_id)."""

    def _bm25_queries(self, texts: Sequence[str]) -> list[str]:
        """The queries' words in the form the collection's BM25 reads: the matching form on schema 3,
        as given on a schema 2 collection (whose stored tokens are the raw text's)."""
        if self.reads_search_form:
            return [search_form(text, TEXT_MAX_BYTES, self.search_schema) for text in texts]
        return list(texts)

    def groups_in_milvus(self) -> bool:
        """Whether Milvus itself groups a dense or BM25 search (group_by_field, Milvus >= 2.4; measured:
        Lite 2.5.1 groups both, the 2.3.5 server ignored it). Hybrid search is always grouped here:
        Lite 2.5.1 returned a question twice from a grouped hybrid search."""
        return bool(self.capabilities and self.capabilities.group_by)

    def _group_plan(self, limit: int, group_by: str | None, native: bool) -> tuple[int, dict[str, Any]]:
        """(items to fetch, extra search arguments) for a search of ``limit`` groups."""
        if not group_by:
            return limit, {}
        if native:
            return limit, {"group_by_field": group_by}
        return min(limit * GROUP_OVERFETCH, self.settings.max_limit), {}

    @staticmethod
    def _grouped(results: list[list[dict[str, Any]]], group_by: str | None, limit: int) -> list[list[dict[str, Any]]]:
        return [first_per_group(hits, group_by, limit) for hits in results] if group_by else results

    def search(
        self, vectors: Sequence[Sequence[float]], limit: int, expr: str = "", group_by: str | None = None
    ) -> list[list[dict[str, Any]]]:
        """Nearest items by vector; with ``group_by`` (a scalar field), ``limit`` groups, each its best item."""
        if not self._ready():
            return [[] for _ in vectors]
        fetch, grouping = self._group_plan(limit, group_by, self.groups_in_milvus())
        results = self.connection.call(
            MilvusClient.search,
            self.collection,
            data=[list(map(float, v)) for v in vectors],
            anns_field=VECTOR_FIELD,
            limit=fetch,
            filter=expr,
            output_fields=OUTPUT_FIELDS,
            search_params=self._dense_params(fetch),
            **grouping,
            **self._search_consistency,
        )
        return self._grouped(results, group_by, limit)

    def _dense_params(self, limit: int) -> dict[str, Any]:
        return vector_search_params(self.settings, self.identity.index_type if self.identity else None, limit)

    def _require_full_text(self, mode: str) -> None:
        if not self.full_text and self.capabilities and not self.capabilities.full_text:
            raise FullTextUnavailableError(
                f"search mode {mode!r}: {self.capabilities.missing('full-text search', FULL_TEXT_SINCE)} "
                f"(at {self.where}); search with mode 'dense', or use a Milvus >= 2.5 (QBANK_MILVUS_URI)"
            )
        if not self.full_text:
            raise FullTextUnavailableError(
                f"search mode {mode!r} needs full text, and collection {self.collection!r} was created before it "
                "was part of the schema: import the bank into a new collection (QBANK_COLLECTION) to use it"
            )

    def search_text(
        self,
        texts: Sequence[str],
        limit: int,
        expr: str = "",
        group_by: str | None = None,
        part: str = STEM,
        match_forms: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """BM25 over the analysed stems (``part`` "analysis": over the questions' analyses instead);
        ``distance`` is the BM25 score (higher is better, unbounded). ``group_by`` as in :meth:`search`.
        ``match_forms``: each hit also carries ``match_form``, the matching form of what it matched
        (qbank.domain.text.match_form of its stem or analysis), read from the form BM25 reads, which
        a schema 5 collection stores: ranking 30 candidates by in-order comparison then parses no
        LaTeX (1-2 ms a LaTeX stem). Older schemas store another form, so their hits carry none."""
        if not self._ready():
            return [[] for _ in texts]
        self._require_full_text("bm25")
        if part == ANALYSIS and not (self.identity and self.identity.analysis):
            raise FullTextUnavailableError(
                f"search_in 'analysis': collection {self.collection!r} is schema {self.search_schema}, whose "
                f"analyses are not searchable (schema {SCHEMA_VERSION} searches them): import the bank into a "
                "new collection (QBANK_COLLECTION=<new name>, then qbank import) to search its analyses"
            )
        fetch, grouping = self._group_plan(limit, group_by, self.groups_in_milvus())
        form_field = ANALYSIS_TEXT_FIELD if part == ANALYSIS else SEARCH_TEXT_FIELD
        stored_forms = match_forms and self.search_schema >= MATCH_FORM_SINCE
        results = self.connection.call(
            MilvusClient.search,
            self.collection,
            data=self._bm25_queries(texts),
            anns_field=ANALYSIS_SPARSE_FIELD if part == ANALYSIS else SPARSE_FIELD,
            limit=fetch,
            filter=expr,
            output_fields=[*OUTPUT_FIELDS, form_field] if stored_forms else OUTPUT_FIELDS,
            search_params={"metric_type": "BM25"},
            **grouping,
            **self._search_consistency,
        )
        grouped = self._grouped(results, group_by, limit)
        return (
            [[self._with_match_form(hit, form_field) for hit in hits] for hits in grouped] if stored_forms else grouped
        )

    @staticmethod
    def _with_match_form(hit: dict[str, Any], form_field: str) -> dict[str, Any]:
        entity = dict(hit.get("entity", hit))
        stored = entity.pop(form_field, None)
        if stored is None:
            return hit
        return {**hit, "entity": entity, "match_form": normalise(stored)}

    def search_hybrid(
        self,
        vectors: Sequence[Sequence[float]],
        texts: Sequence[str],
        limit: int,
        expr: str = "",
        rrf_k: int = 60,
        weights: tuple[float, float] | None = None,
        group_by: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Dense and BM25 lists (each ``limit`` long, both filtered by ``expr``) fused into one;
        ``group_by`` as in :meth:`search`, always grouped here (see :meth:`groups_in_milvus`).

        RRF: Milvus' hybrid search (all queries in one call), score = sum over the lists of
        1 / (rrf_k + rank). Weighted:
        fused here, score = w_dense * norm(similarity) + w_bm25 * norm(bm25), with Milvus' own
        normalisations (cosine -> (1 + s) / 2, IP -> 0.5 + atan(s) / pi, BM25 -> 2 * atan(s) / pi).
        Milvus Lite 2.5.1's WeightedRanker normalises BM25 as a distance (a higher BM25 score came
        out lower: measured, tests/test_fulltext.py), so that fusion is not left to it.
        """
        from pymilvus import AnnSearchRequest, RRFRanker

        if not self._ready():
            return [[] for _ in texts]
        self._require_full_text("hybrid")
        wanted = limit
        limit, _ = self._group_plan(limit, group_by, native=False)
        if weights:
            dense = self.search(vectors, limit, expr)
            sparse = self.search_text(texts, limit, expr)
            metric = self.settings.metric_type
            fused = [weighted_fusion(d, s, weights, limit, metric) for d, s in zip(dense, sparse, strict=True)]
            return self._grouped(fused, group_by, wanted)
        requests = [
            AnnSearchRequest(
                [list(map(float, v)) for v in vectors],
                VECTOR_FIELD,
                self._dense_params(limit),
                limit,
                expr=expr or None,
            ),
            AnnSearchRequest(
                self._bm25_queries(texts), SPARSE_FIELD, {"metric_type": "BM25"}, limit, expr=expr or None
            ),
        ]
        results = self.connection.call(
            MilvusClient.hybrid_search,
            self.collection,
            requests,
            RRFRanker(rrf_k),
            limit=limit,
            output_fields=OUTPUT_FIELDS,
            **self._search_consistency,
        )
        return self._grouped(results, group_by, wanted)
