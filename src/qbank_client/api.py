"""Python API over the Flow: item writes and the three lookups, with results grouped per question."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from docarray import Document, DocumentArray

from qbank.domain.schema import (
    FIGURE_REGION_TAG,
    IMAGE,
    OCR_FOCUS_BOX_TAG,
    OCR_FOCUS_TAG,
    OCR_NOTE_TAG,
    OCR_TEXT_TAG,
    SEGMENT_BOX_TAG,
    SEGMENT_NUMBER_TAG,
    TEXT,
    figure_chunks,
    segment_chunks,
)
from qbank_client.bank import read_image_ref
from qbank_client.transport import Transport

# Searches ask the server for whole questions (group_by: Milvus groups per question where it can,
# the store otherwise), so "10 questions" is 10 whenever 10 exist.
GROUP_BY = {"group_by": "question_id"}


@dataclass
class QuestionHit:
    """One question in a result list: its best item decides the rank."""

    question_id: str
    score: float
    best_item: str
    modality: str
    text: str | None
    subject: str = ""
    grade: str = ""
    type: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)
    figure: str = ""  # the best item's figure (its path or URL as imported) when that item is an image
    score_kind: str = ""  # what ``score`` is (SCORE_KINDS): cosine, bm25, rrf, weighted, in-order, coverage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a hit's score is, by the score the server set beside ``score`` (qbank.service.mapping.row_to_match
# and the plan's rankings, qbank.service.ranking), in the order one overrides another: short name, meaning.
SCORE_KINDS: dict[str, tuple[str, str]] = {
    "text_similarity": ("in-order", "the share of the text read that the stem holds in the same order"),
    "text_coverage": ("coverage", "the share of the typed words the stem holds in order"),
    "rrf": ("rrf", "reciprocal rank fusion, 1/(k+rank) summed over the dense and bm25 lists: a rank, not a similarity"),
    "weighted": ("weighted", "the weighted sum of the normalised dense and bm25 scores"),
    "bm25": ("bm25", "the BM25 score of the words (higher is better, unbounded)"),
    "similarity": ("cosine", "the cosine similarity of the CLIP vectors"),
}


def score_kind(match: Document) -> str:
    """The short name of what ``match.scores['score']`` is (a key of SCORE_KINDS' values)."""
    present = set(match.scores.keys())
    return next((short for key, (short, _) in SCORE_KINDS.items() if key in present), "")


def _given(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters the caller actually set (CLI flags arrive as None when absent)."""
    return {k: v for k, v in filters.items() if v not in (None, "", [])}


def question_hits(matches: DocumentArray, limit: int) -> list[QuestionHit]:
    """The matches as question hits, best first, at most ``limit`` questions. Grouping has one home,
    the server's store (qbank.store.searches: Milvus groups where it can, first_per_group where it
    cannot), which every search here asks for (GROUP_BY); a match of a question already seen (an
    ungrouped ``post``) joins that question's items."""
    hits: dict[str, QuestionHit] = {}
    for match in matches:
        qid = match.tags.get("question_id") or match.id
        # 'score' ranks in every search mode (dense similarity, bm25, rrf / weighted fusion).
        score = match.scores["score"].value
        score = float(score if score is not None else match.scores["similarity"].value)
        item = {"id": match.id, "modality": match.modality, "score": score}
        if qid not in hits:
            if len(hits) == limit:
                continue
            hits[qid] = QuestionHit(
                question_id=qid,
                score=score,
                best_item=match.id,
                modality=match.modality,
                text=match.text or None,
                subject=match.tags.get("subject", ""),
                grade=match.tags.get("grade", ""),
                type=match.tags.get("type", ""),
                figure=str(match.tags.get("figure") or match.uri or "") if match.modality == IMAGE else "",
                score_kind=score_kind(match),
            )
        hits[qid].items.append(item)
    return list(hits.values())


def image_document(image: str | Path | bytes) -> Document:
    """An image query from bytes, a local path or an http(s) URL (read here, sent as bytes)."""
    return Document(blob=image if isinstance(image, bytes) else read_image_ref(str(image)))


def check_encodable(doc: Document) -> None:
    """Refuse text that cannot travel as UTF-8 (lone surrogates, e.g. from a bad decode) before sending:
    jina's client would otherwise cancel the stream and wait forever."""
    for name in ("id", "text", "uri"):
        value = getattr(doc, name)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"item {doc.id.encode('utf-8', 'replace').decode()!r}: field {name!r} is not valid Unicode "
                    f"(unpaired surrogate at position {exc.start})"
                ) from None


class QbankClient:
    """``QbankClient("grpc://127.0.0.1:51000")``; http:// and ws:// work the same.

    ``token`` (default: env QBANK_AUTH_TOKEN) is sent on every request when the gateway requires one.
    """

    def __init__(self, url: str = "grpc://127.0.0.1:51000", token: str | None = None):
        self.transport = Transport(url, token)
        self.url = url

    def close(self) -> None:
        """Close the gRPC channel (HTTP and WebSocket hold nothing between calls)."""
        self.transport.close()

    def __enter__(self) -> QbankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(
        self, endpoint: str, docs: DocumentArray | None = None, parameters: dict | None = None
    ) -> tuple[DocumentArray, dict]:
        """Send one request (qbank_client.transport); returns the docs and the merged executor results."""
        for doc in docs or []:
            check_encodable(doc)
        return self.transport.post(endpoint, docs or DocumentArray(), parameters or {})

    # -- writes --------------------------------------------------------------------------------
    def existing(self, ids: list[str]) -> set[str]:
        return set(self.post("/exists", parameters={"ids": ids})[1].get("existing", [])) if ids else set()

    def index(self, docs: DocumentArray) -> int:
        self.post("/index", docs)
        return len(docs)

    def delete_questions(self, question_ids: list[str]) -> int:
        return int(self.post("/delete", parameters={"question_ids": question_ids})[1]["deleted"])

    # -- reads ---------------------------------------------------------------------------------
    def questions(self, question_ids: list[str]) -> dict[str, DocumentArray]:
        """Each question whole: its stored items (stem first, then figures by index), by question id;
        questions not stored are left out."""
        docs, _ = self.post("/questions", parameters={"question_ids": list(question_ids)}) if question_ids else ([], {})
        found: dict[str, DocumentArray] = {}
        for doc in docs:
            found.setdefault(doc.tags.get("question_id", doc.id), DocumentArray()).append(doc)
        return found

    def count(self, **filters: Any) -> int:
        return int(self.post("/count", parameters={"filter": filters} if filters else {})[1]["count"])

    def stats(self) -> dict[str, Any]:
        stats = self.post("/stats")[1]
        by_modality = {m: self.count(modality=m) for m in (TEXT, IMAGE)} if stats.get("dim") else {TEXT: 0, IMAGE: 0}
        stats.update(text_items=by_modality[TEXT], image_items=by_modality[IMAGE])
        stats["count"] = int(stats.get("count", 0))
        stats["dim"] = int(stats["dim"]) if stats.get("dim") else None
        return stats

    def _search(
        self, query: Document, modality: str, limit: int, filters: dict[str, Any], **options: Any
    ) -> list[QuestionHit]:
        wanted = _given(filters)
        parameters = {"limit": limit, "modality": modality, "filter": wanted, **GROUP_BY}
        parameters.update({k: v for k, v in options.items() if v is not None})
        docs, _ = self.post("/search", DocumentArray([query]), parameters)
        return question_hits(docs[0].matches, limit)

    def text_to_image(self, text: str, limit: int = 10, **filters: Any) -> list[QuestionHit]:
        """Questions whose figures match a text query."""
        return self._search(Document(text=text), IMAGE, limit, filters)

    def image_to_text(self, image: str | Path | bytes, limit: int = 10, **filters: Any) -> dict[str, list[QuestionHit]]:
        """For a figure: questions whose stems match it, and questions with the most similar figures."""
        query = image_document(image)
        return {
            "stems": self._search(query, TEXT, limit, filters),
            "figures": self._search(query, IMAGE, limit, filters),
        }

    def similar_questions(
        self,
        text: str,
        limit: int = 10,
        mode: str | None = None,
        weights: tuple[float, float] | None = None,
        rrf_k: int | None = None,
        search_in: str | None = None,
        **filters: Any,
    ) -> list[QuestionHit]:
        """Text -> text recall. ``mode``: dense (CLIP), bm25 (full text) or hybrid (both, fused by RRF
        with ``rrf_k``, or by ``weights`` = (dense, bm25)); None: the server's default. ``search_in``
        "analysis" (with mode bm25): the words are looked for in the questions' analyses, not the stems."""
        options = {"mode": mode, "rrf_k": rrf_k, "weights": list(weights) if weights else None, "search_in": search_in}
        return self._search(Document(text=text), TEXT, limit, filters, **options)

    def photo_search(
        self,
        image: str | Path | bytes,
        limit: int = 10,
        mode: str | None = None,
        page: bool = False,
        figures: bool | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """A photo of a question -> its question: the server reads the photo's text (OCR) and searches
        the stems with it (``mode``: bm25 by default, or hybrid with the photo's CLIP vector); a photo
        with no readable text is searched by its CLIP vector, and ``note`` says so. The figure found
        on the page (outside its text lines) is matched against the bank's figures by CLIP when
        ``figures`` is True, or when it is None (the server's choice) and the words read are too few to
        tell the question (QBANK_OCR_FIGURE_SEARCH_BELOW); ``figure_matched`` says whether it was. Returns
        the text read (``text``), ``note``, the ``questions`` (best first), ``focus`` and
        ``focus_box`` (when the photo holds more than one question, the words and box of the one it is
        mostly of, which were searched instead of all the text read; else "" and None), the figure's
        ``figure_region`` ([left, top, right, bottom] in the photo, or None) and ``figures``: the
        questions whose figures match it, best first. ``page``: the photo holds several questions (a
        whole sheet): ``segments`` lists each question found on it, in reading order, with its
        ``number`` as printed, its ``box`` in the photo, the ``text`` read and its own ``questions``."""
        wanted = _given(filters)
        parameters: dict[str, Any] = {
            "limit": limit,  # the server fetches the candidates its text ranking chooses from
            "filter": wanted,
            "ocr": True,
            **GROUP_BY,
        }
        if mode:
            parameters["mode"] = mode
        if page:
            parameters["page"] = True
        if figures is not None:
            parameters["figures"] = figures
        docs, _ = self.post("/search", DocumentArray([image_document(image)]), parameters)
        query = docs[0]
        figure = next(iter(figure_chunks(query)), None)
        segments = [
            {
                "number": chunk.tags.get(SEGMENT_NUMBER_TAG) or None,
                "box": [int(v) for v in chunk.tags[SEGMENT_BOX_TAG]],
                "text": chunk.text,
                "questions": question_hits(chunk.matches, limit),
            }
            for chunk in segment_chunks(query)
        ]
        return {
            "segments": segments,
            "text": query.tags.get(OCR_TEXT_TAG, ""),
            "focus": query.tags.get(OCR_FOCUS_TAG, ""),
            "focus_box": [int(v) for v in query.tags[OCR_FOCUS_BOX_TAG]] if OCR_FOCUS_BOX_TAG in query.tags else None,
            "note": query.tags.get(OCR_NOTE_TAG, ""),
            "questions": question_hits(query.matches, limit),
            "figure_region": [int(v) for v in query.tags[FIGURE_REGION_TAG]]
            if FIGURE_REGION_TAG in query.tags
            else None,
            "figure_matched": figure is not None,
            "figures": question_hits(figure.matches, limit) if figure else [],
        }

    def near_duplicates(
        self, by: str = "text", threshold: float = 0.8, neighbours: int = 10, max_items: int = 100_000, **filters: Any
    ) -> dict[str, Any]:
        """Groups of near-duplicate questions (see qbank.domain.duplicates): by ``text`` (BM25 recall, bigram
        Jaccard) or ``dense`` (CLIP cosine), within the filters; at most ``max_items`` stems scanned."""
        wanted = _given(filters)
        parameters = {"by": by, "threshold": threshold, "neighbours": neighbours, "max_items": max_items}
        result = self.post("/near_duplicates", parameters={**parameters, "filter": wanted})[1]
        result["scanned"] = int(result.get("scanned", 0))
        return result
