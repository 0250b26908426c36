"""The reading form of a stored question: what a reader sees on the typeset page, as plain text.

Real banks store a stem as Markdown or HTML with inline LaTeX (``$\\frac{2+i}{1-2 i}$``,
``$\\left\\{a_{n}\\right\\}$``, ``<sup>2</sup>``); a printed page shows it typeset, and OCR reads
that page as ``(2+i)/(1-2i)``, ``{an}``, ``x2``. Ranking stored LaTeX source as if it were text
spent BM25's tokens and CLIP's 52 text tokens on ``\\left\\{`` and ``\\mathrm``. This module turns
the stored text into what it reads as, with maintained parsers: pylatexenc (LaTeX math to text:
fractions, powers and subscripts, roots, vectors, Greek, the relation and geometry symbols) and the
standard library's HTML parser over nh3's well-formed rebuild of the HTML (tags dropped, entities decoded, block tags as line breaks, inline
images collected as figures). The matching form (:mod:`qbank.domain.text`) is built on top of it.

The stored stem stays as given (for display); only searching reads this form. Text that does not
parse (an unclosed ``$``, a broken tag) is read as given, never refused.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3
from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db
from pylatexenc.latexwalker import (
    LatexMathNode,
    LatexWalker,
    LatexWalkerError,
)
from pylatexenc.latexwalker import (
    get_default_latex_context_db as walker_db,
)
from pylatexenc.macrospec import MacroSpec

# Tags that make a text HTML (a bare "<" is common in stems: "若a<b，则"): only these are parsed.
_HTML_TAG = re.compile(
    r"</?(?:p|div|span|br|img|sub|sup|table|tbody|thead|tr|td|th|math|mi|mn|mo|mrow|mfrac|msup|msub|msqrt|"
    r"b|i|u|strong|em|li|ul|ol|font|center|hr)\b[^<>]*>",
    re.IGNORECASE,
)
_BLOCK_TAGS = {"p", "div", "br", "li", "tr", "table", "hr", "center", "ul", "ol"}
_SKIPPED_TAGS = {"script", "style"}
# What the reading needs of an HTML stem: line breaks and images (sup/sub read as their text).
_READ_TAGS = _BLOCK_TAGS | {"img", "sup", "sub", "td", "th"}
_IMAGE_SCHEMES = {"http", "https", "data", "file"}  # relative paths are kept as they are
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r"\s*\n\s*")


def _fraction(node, l2tobj) -> str:  # noqa: ANN001 - pylatexenc passes its converter by this name
    """``\\frac{a}{b}`` as ``(a)/(b)``, how a typeset fraction reads in a line (single symbols bare)."""
    args = [arg for arg in (node.nodeargd.argnlist if node.nodeargd else []) if arg is not None]
    parts = [l2tobj.nodelist_to_text([arg]).strip() for arg in args]
    if len(parts) != 2:
        return "/".join(parts)
    return "/".join(part if len(part) <= 1 else f"({part})" for part in parts)


def _latex_context():
    context = get_default_latex_context_db().filter_context()  # a copy we may extend
    macros = [MacroTextSpec(name, simplify_repl=_fraction) for name in ("frac", "dfrac", "tfrac", "cfrac")]
    macros += [
        MacroTextSpec("triangle", "△"),
        MacroTextSpec("bigtriangleup", "△"),
        MacroTextSpec("odot", "⊙"),
        MacroTextSpec("parallel", "∥"),
        MacroTextSpec("overline", "%(1)s"),
        MacroTextSpec("overrightarrow", "%(1)s"),
        MacroTextSpec("underline", "%(1)s"),
        MacroTextSpec("boldsymbol", "%(1)s"),
        MacroTextSpec("text", "%(1)s"),
        MacroTextSpec("mathrm", "%(1)s"),
        MacroTextSpec("operatorname", "%(1)s"),
        MacroTextSpec("left", ""),
        MacroTextSpec("right", ""),
        MacroTextSpec("displaystyle", ""),
    ]
    context.add_context_category("qbank-exams", macros=macros, prepend=True)
    return context


def _walker_context():
    """pylatexenc's parsing context plus the arguments of macros exams use that it does not know."""
    context = walker_db().filter_context()
    specs = [MacroSpec(name, "{{") for name in ("dfrac", "tfrac", "cfrac")]
    specs += [MacroSpec(name, "{") for name in ("boldsymbol", "operatorname")]
    context.add_context_category("qbank-exams", macros=specs, prepend=True)
    return context


_LATEX = LatexNodes2Text(latex_context=_latex_context(), math_mode="text", strict_latex_spaces=True)
_WALKER_CONTEXT = _walker_context()


# Braces nested deeper than this are read as given, without the parser: pylatexenc recurses per
# group, and a formula nested 1,900 deep ran the stack out (caught, but a finalizer that ran at that
# depth failed too: pytest saw 120 unraisable RecursionErrors). Real formulas nest under 10.
MAX_LATEX_DEPTH = 40


def brace_depth(text: str, stop_at: int) -> int:
    """How deeply ``{…}`` groups nest in ``text`` (escaped ``\\{`` ignored), in one pass; counting
    stops past ``stop_at``."""
    depth = deepest = 0
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_at:
                    break
        elif char == "}" and depth:
            depth -= 1
    return deepest


def latex_reading(text: str) -> str:
    """``text`` with each math span (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) read as text; the
    rest as given (a ``%`` there is a per cent sign, not a LaTeX comment, and groups nested deeper
    than MAX_LATEX_DEPTH are not parsed)."""
    if "$" not in text and "\\(" not in text and "\\[" not in text:
        return text
    if brace_depth(text, MAX_LATEX_DEPTH) > MAX_LATEX_DEPTH:
        return text
    try:
        nodes, _, _ = LatexWalker(
            text.replace("%", "\\%"), latex_context=_WALKER_CONTEXT, tolerant_parsing=True
        ).get_latex_nodes()
        parts = []
        for node in nodes:
            if isinstance(node, LatexMathNode):
                parts.append(" " + _LATEX.nodelist_to_text(node.nodelist).strip() + " ")
            else:
                parts.append(node.latex_verbatim().replace("\\%", "%"))
    except (LatexWalkerError, ValueError, TypeError, IndexError, KeyError, RecursionError):
        return text  # malformed beyond pylatexenc's tolerance: read as given
    return "".join(parts)


class _HtmlText(HTMLParser):
    """The text of an HTML fragment (entities decoded, block tags as line breaks) and its images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.images: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "img":
            source = dict(attrs).get("src")
            if source:
                self.images.append(source)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def is_html(text: str) -> bool:
    return bool(_HTML_TAG.search(text))


def html_text(text: str) -> tuple[str, list[str]]:
    """(the text of an HTML stem, the ``src`` of its inline images, in order); plain text unchanged.

    The stem is first rebuilt well-formed by nh3 (ammonia's html5ever parser, linear in the input;
    tags the reading does not use dropped with their text kept, scripts and styles with theirs), and
    only then read by the standard library's parser: on raw input that parser is quadratic
    (``"<p>" + "<a " * 6665``, 19 KB, took 11-29 s in the client, the encoder and the indexer alike),
    on well-formed input it is linear."""
    if not is_html(text):
        return text, []
    parser = _HtmlText()
    try:
        parser.feed(
            nh3.clean(
                text,
                tags=_READ_TAGS,
                attributes={"img": {"src"}},
                url_schemes=_IMAGE_SCHEMES,
                clean_content_tags=_SKIPPED_TAGS,
                strip_comments=True,
                link_rel=None,
            )
        )
        parser.close()
    except (AssertionError, ValueError):  # the standard parser is tolerant; this is belt and braces
        return text, []
    return "".join(parser.parts), parser.images


def tidy(text: str) -> str:
    """Runs of spaces as one, blank lines dropped, ends trimmed."""
    return _LINES.sub("\n", _SPACES.sub(" ", text)).strip()


def reading_form(text: str) -> str:
    """What ``text`` (plain, Markdown or HTML, with inline LaTeX) reads as on the page; a text with
    neither math nor HTML is returned as it is (so plain stems, and their embeddings, do not change)."""
    if not has_markup(text):
        return text
    plain, _ = html_text(text)
    return tidy(latex_reading(plain))


def has_markup(text: str) -> bool:
    """Whether ``text`` holds a math span opener or an HTML tag (what :func:`reading_form` reads)."""
    return "$" in text or "\\(" in text or "\\[" in text or is_html(text)
