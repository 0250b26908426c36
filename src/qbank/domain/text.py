"""One normalisation of question text for matching, applied identically to stored stems and to
queries (typed or read from a photo), so that BM25's tokens and the in-order comparison agree.

Why, measured (PP-OCRv6 on rendered question photos, tests/test_text.py pins each case): OCR returns
``x²`` as ``x2``, ``l1∥l2`` as ``I1||12``, ``220V 1000W`` as ``220V1000W``, full-width punctuation as
half-width and ``A`` as ``a``. Milvus' ``chinese`` analyzer (jieba, then alphanumeric-only tokens)
turns ``x²-23x`` and ``x2-23x`` into different tokens, so BM25 lost the photographed stem among its
near-duplicates (bench/photo.py, the symbol templates). Milvus 2.5's analyzers have tokenizers and
token filters (lowercase, ASCII folding, length, stop words...) but no character mapping, so the
folding cannot be left to them: the store keeps this form of each stem in a field of its own
(``search_text``, which its BM25 function reads) and searches with the same form of the query.

Stored stems are first read as text (:func:`qbank.domain.reading.reading_form`: LaTeX, HTML), so
``$x^{2}$`` matches a photo's ``x2`` and ``$\\left\\{a_{n}\\right\\}$`` a typed ``{a_n}``.

The rules, in order: NFKC (full/half width, superscripts), lower case, the reading form's script
markers joined to what they mark (``x^2`` -> ``x2``, ``log_2a`` -> ``log2a``, ``a_n`` -> ``an``: what
OCR reads from a typeset page and a keyboard user types; schema 5), then within runs of ASCII
letters, digits and ``|``/``∥`` that hold a digit or consist only of look-alike characters, the
look-alikes become digits (``l``, ``i``, ``|`` -> 1; ``o`` -> 0; ``∥`` -> 11), and letters and
digits are split apart (``220v1000w`` -> ``220 v 1000 w``). Ordinary words (``solution``, ``cos``)
are left alone, so English stems keep their BM25 tokens.
"""

from __future__ import annotations

import difflib
import re
import unicodedata

from qbank.domain.reading import reading_form

LOOKALIKES = str.maketrans({"l": "1", "i": "1", "|": "1", "∥": "11", "o": "0"})
_RUN = re.compile(r"[0-9a-z|∥]+")
_ONLY_LOOKALIKES = re.compile(r"[lio|∥]+")
_LETTER_DIGIT = re.compile(r"(?<=[0-9])(?=[a-z])|(?<=[a-z])(?=[0-9])")
# A ``^`` or ``_`` the reading form writes for a power or subscript: after a symbol, before what it
# marks. Runs of underscores (a stem's fill-in blank ``____``) are left alone.
_SCRIPT_MARKER = re.compile(r"(?<=[^\s_^])[\^_](?=[0-9a-z('])")


def _fold_run(match: re.Match[str]) -> str:
    run = match.group(0)
    if any(ch.isdigit() for ch in run) or _ONLY_LOOKALIKES.fullmatch(run):
        run = run.translate(LOOKALIKES)
    return _LETTER_DIGIT.sub(" ", run.replace("|", " ").replace("∥", " "))


def folded(text: str, scripts: bool = True) -> str:
    """NFKC, lower case, script markers joined (``scripts=False``: kept, as schemas 3 and 4 stored
    them), look-alikes folded and letter/digit runs split (see the module's rules)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if scripts:
        text = _SCRIPT_MARKER.sub("", text)
    return _RUN.sub(_fold_run, text)


# From this schema on, ``normalise(search_form(text))`` is ``match_form(text)`` (up to the byte cut):
# a stored search form is the match form, once normalised (schema 4 kept the script markers, 3
# folded the raw text).
MATCH_FORM_SINCE = 5


def search_form(text: str, max_bytes: int, schema: int = 5) -> str:
    """The form BM25 indexes and searches in a collection of ``schema``: ``folded`` of the text's
    reading form (LaTeX and HTML read as text, :mod:`qbank.domain.reading`) with script markers
    joined (schema 5); schema 4 kept the markers, schema 3 folded the raw text. Cut to ``max_bytes``
    of UTF-8 at a character boundary: folding can lengthen a text (``∥`` -> ``11``, spaces between
    runs), and a cut tail only loses matching on words the display copy also keeps."""
    form = folded(reading_form(text) if schema >= 4 else text, scripts=schema >= MATCH_FORM_SINCE)
    encoded = form.encode("utf-8")
    if len(encoded) <= max_bytes:
        return form
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def normalise(text: str) -> str:
    """NFKC (full/half width), lower case, without punctuation, symbols or spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def match_form(text: str) -> str:
    """``folded`` reading form without punctuation, symbols or spaces: what the in-order comparison
    (and near-duplicate grouping) reads."""
    return normalise(folded(reading_form(text)))


def sequence_similarity(a: str, b: str) -> float:
    """How much of two texts matches in order (difflib's ratio over their ``match_form``), in [0, 1].
    Unlike bigram sets it tells "男生89人，女生45人" from "男生45人，女生89人" (same bigrams)."""
    return form_similarity(match_form(a), match_form(b))


def form_similarity(first: str, second: str) -> float:
    """:func:`sequence_similarity` of two texts already in ``match_form``: a ranking compares one
    query with many stored texts, and the form of a LaTeX stem costs 1-2 ms of parsing
    (pylatexenc) against 0.1 ms for the comparison itself, so each form is made once."""
    if not first or not second:
        return 0.0
    return difflib.SequenceMatcher(None, first, second, autojunk=False).ratio()


def text_coverage(query: str, text: str) -> tuple[float, float]:
    """(coverage, density) of a typed ``query`` in a stored ``text``, both over their ``match_form``:
    the share of the query's characters found in the text in order, and how tightly (matched
    characters over the span of the text they lie in). A typed query is a fragment of the page:
    BM25 alone ranked ``x2≠y2是x≠y且x≠-y的`` below longer stems with more ``x`` and ``y`` in them
    (bench/realbank.py, typed queries on CMMLU's LaTeX questions: recall@1 0.883 by BM25, 0.955 so
    ordered, 1.000 on the queries no other question holds word for word)."""
    return form_coverage(match_form(query), match_form(text))


def form_coverage(first: str, second: str) -> tuple[float, float]:
    """:func:`text_coverage` of a query and a text already in ``match_form`` (see :func:`form_similarity`)."""
    if not first or not second:
        return 0.0, 0.0
    blocks = [b for b in difflib.SequenceMatcher(None, first, second, autojunk=False).get_matching_blocks() if b.size]
    if not blocks:
        return 0.0, 0.0
    matched = sum(block.size for block in blocks)
    span = blocks[-1].b + blocks[-1].size - blocks[0].b
    return matched / len(first), matched / span
