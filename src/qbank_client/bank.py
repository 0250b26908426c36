"""A question bank read as questions: rows of its files (:mod:`qbank_client.sources`) mapped to the
parts of a question and checked against the service's limits, each good row a :class:`Question` and
each bad one a :class:`BadRow` naming its file and line.

A question is ``{"id": ..., "stem": ..., "figures": [path or URL, ...], "options": [...] or
{"A": ...}, "answer": ..., "analysis": ..., "subject": ..., "grade": ..., "type": ...,
"knowledge_points": [...], <anything else>}``; anything else is kept as metadata. A stem may be
plain text, Markdown or HTML with inline LaTeX: it is stored as given (the page typesets it), its
inline ``<img src>`` become the question's figures (``data:`` images decoded here), and search reads
it as text (:mod:`qbank.domain.reading`). The stem item's text is the stem followed by its options
(what a printed page shows, and what a photo of it reads); options, answer and analysis are also
kept in its tags to be shown apart. A :class:`FieldMap` names the columns a bank uses (``--map
stem=Question --map options=A,B,C,D``) and fixed values (``--set subject={file}``). Relative figure
paths are read against the bank file's folder.

Every limit the service enforces on an item (text length, tag size and depth, ids, image bytes,
pixels and format, documents and bytes of a request) is checked here with the service's own
definitions (:mod:`qbank.domain.schema`, :mod:`qbank.media.images`), so a bad row is named by its
line and never takes the good rows of its batch down with it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from docarray import Document

from qbank.domain.reading import html_text
from qbank.domain.schema import (
    IMAGE,
    MAX_DOCS_PER_REQUEST,
    MAX_IMAGE_BYTES,
    MAX_OPTIONS,
    MAX_TEXT_CHARS,
    SCALAR_FIELDS,
    TAG_ALIASES,
    TEXT,
    ItemError,
    check_scalar,
    default_request_bytes,
    id_problem,
    item_id,
    tags_to_fields,
)
from qbank.media.fetch import CLIENT_POLICY, FetchError, fetch_http, read_regular_file
from qbank_client.sources import FORMATS, REFUSED, BankError, BankFile, Row, open_bank_file

KNOWN_KEYS = {"id", "stem", "figures", "options", "answer", "analysis", "subject", "grade", "type", "knowledge_points"}
BANK_SUFFIXES = tuple(FORMATS)
OPTION_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:MAX_OPTIONS]
MAX_FIGURE_BYTES = MAX_IMAGE_BYTES  # the server's QBANK_MAX_IMAGE_BYTES default
FIGURE_TIMEOUT = 10.0  # seconds for one figure's whole download
# A request's bytes as the gateway counts them (QBANK_MAX_REQUEST_BYTES's default): HTTP and
# WebSocket carry images as base64, 4/3 of their bytes.
REQUEST_BYTES = default_request_bytes()
# --set values may name where a row comes from: the file's name without its suffix, its folder's
# name, the sheet's name. CMMLU's subject is its file name: --set subject={file}.
SET_PLACEHOLDERS = ("{file}", "{folder}", "{sheet}")
# Column names Chinese and English banks use for each part, for the suggestion printed when a table
# has no column of a part's own name (compared in lower case).
COLUMN_HINTS: dict[str, tuple[str, ...]] = {
    "id": ("id", "qid", "question_id", "编号", "题号", "试题id", "题目id", "序号"),
    "stem": ("stem", "question", "题干", "题目", "试题", "题面", "问题", "内容", "content"),
    "answer": ("answer", "答案", "正确答案", "参考答案"),
    "analysis": ("analysis", "explanation", "解析", "答案解析", "分析", "详解"),
    "subject": ("subject", "学科", "科目"),
    "grade": ("grade", "年级", "学段"),
    "type": ("type", "题型", "题目类型"),
    "knowledge_points": ("knowledge_points", "knowledge", "知识点", "考点"),
    "figures": ("figures", "figure", "image", "images", "图片", "配图", "插图"),
}


@dataclass(frozen=True)
class FieldMap:
    """Which of a bank's fields (columns) hold each part of a question, and fixed values for every
    row: ``FieldMap({"stem": ("Question",), "options": ("A", "B", "C", "D")}, {"subject": "{file}"})``.
    A part not named is read from the field of its own name. Several fields of one part are joined
    (options: one option each). A column is named by its header or by its position, ``#1`` the first
    (an unnamed column, as pandas writes its index)."""

    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: list[str], sets: list[str] | None = None) -> FieldMap:
        """From ``part=field[,field...]`` (``--map``) and ``name=value`` (``--set``) strings;
        ValueError names a bad one."""
        fields: dict[str, tuple[str, ...]] = {}
        for spec in specs:
            part, sep, names = spec.partition("=")
            part = part.strip()
            columns = tuple(name.strip() for name in names.split(",") if name.strip()) if sep else ()
            if not sep or part not in KNOWN_KEYS or not columns:
                raise ValueError(
                    f"--map {spec!r}: want part=field[,field...] with part one of {', '.join(sorted(KNOWN_KEYS))}"
                )
            if part in fields:
                raise ValueError(f"--map {spec!r}: the part {part!r} is already mapped to {','.join(fields[part])}")
            fields[part] = columns
        fixed: dict[str, str] = {}
        for spec in sets or []:
            name, sep, value = spec.partition("=")
            name = name.strip()
            if not sep or not name or name in ("id", "stem", "figures", "options", "knowledge_points"):
                raise ValueError(
                    f"--set {spec!r}: want name=value for a part every row shares (subject, grade, type, answer, "
                    f"analysis) or a metadata field (e.g. source); id, stem, figures and options differ per row"
                )
            if name in fields or name in fixed:
                raise ValueError(f"--set {spec!r}: {name!r} is already given by --map or --set")
            fixed[name] = value
        return cls(fields, fixed)

    def resolve(self, where: str, header: list[str]) -> tuple[dict[str, tuple[str, ...]], list[str]]:
        """(the mapping for a table with this header, as its rows' keys
        (:func:`qbank_client.sources.column_keys`); the mapped columns the table does not have).
        BankError for a column named twice in the header, or a table with no stem and no figures."""
        from qbank_client.sources import column_keys

        keys = column_keys(header)
        shown = [name or f"#{i}" for i, name in enumerate(header, 1)]
        resolved: dict[str, tuple[str, ...]] = {}
        missing: list[str] = []
        for part, columns in self.fields.items():
            found = []
            for column in columns:
                if column.startswith("#") and column[1:].isdigit() and 1 <= int(column[1:]) <= len(keys):
                    found.append(keys[int(column[1:]) - 1])
                    continue
                positions = [i for i, name in enumerate(header, 1) if name == column]
                if not positions:
                    missing.append(column)
                    continue
                if len(positions) > 1:
                    raise BankError(
                        f"{where}: --map {part}={column}: the header has {len(positions)} columns named {column!r} "
                        f"(at {', '.join(f'#{p}' for p in positions)}): name one by position, e.g. {part}=#{positions[0]}"
                    )
                found.append(keys[positions[0] - 1])
            resolved[part] = tuple(found)
        for part in KNOWN_KEYS - set(resolved) - set(self.fixed):
            positions = [i for i, name in enumerate(header, 1) if name == part]
            if len(positions) > 1:
                raise BankError(
                    f"{where}: the header has {len(positions)} columns named {part!r} "
                    f"(at {', '.join(f'#{p}' for p in positions)}): say which with --map {part}=#{positions[0]}"
                )
        if not {"stem", "figures"} & ({part for part, columns in resolved.items() if columns} | set(header)):
            if self.fields.get("stem"):
                absent = ", ".join(repr(c) for c in self.fields["stem"] if c in missing)
                raise BankError(
                    f"{where}: --map stem={','.join(self.fields['stem'])}: no column {absent}; the columns are {shown}"
                )
            raise BankError(f"{where}: no column holds the stem; the columns are {shown}. {suggest_map(header)}")
        return resolved, missing

    def apply(
        self, record: dict[str, Any], mapped: dict[str, tuple[str, ...]], context: dict[str, str]
    ) -> dict[str, Any]:
        """The record with each mapped part read from its fields (the fields themselves dropped) and
        the fixed values set (their placeholders filled from ``context``)."""
        used = {column for columns in mapped.values() for column in columns}
        out = {k: v for k, v in record.items() if k not in used}
        for part, columns in mapped.items():
            values = [record.get(column) for column in columns if record.get(column) not in (None, "")]
            if part == "options":
                out[part] = values
            elif values:
                out[part] = values[0] if len(values) == 1 else "\n".join(map(str, values))
            else:
                out.pop(part, None)
        for name, value in self.fixed.items():
            for placeholder in SET_PLACEHOLDERS:
                value = value.replace(placeholder, context.get(placeholder[1:-1], ""))
            out[name] = value
        return out


def suggest_map(header: list[str]) -> str:
    """A --map line for a table's columns, from the names banks use (or a general hint)."""
    lowered = {name.strip().lower(): name for name in header if name}
    found = []
    for part, names in COLUMN_HINTS.items():
        column = next((lowered[n] for n in names if n in lowered), None)
        if column and column != part:
            found.append(f"--map {part}={column}")
    letters = [name for name in header if len(name) == 1 and name.upper() in OPTION_LABELS]
    if len(letters) >= 2:
        found.append(f"--map options={','.join(letters)}")
    if found:
        return "Perhaps: " + " ".join(found)
    return "Name the parts with --map, e.g. --map stem=<column> --map options=<column>,<column>"


@dataclass
class Question:
    id: str
    stem: str
    figures: list[str]
    tags: dict[str, Any]
    source: str  # file:line, for messages
    figure_bytes: list[bytes] = field(default_factory=list)
    inline: dict[int, bytes] = field(default_factory=dict)  # figures given as data: URIs, by index

    def item_ids(self) -> list[str]:
        ids = [item_id(self.id, TEXT)] if self.stem else []
        return ids + [item_id(self.id, IMAGE, i) for i in range(len(self.figures))]

    def item_tags(self) -> list[tuple[str, dict[str, Any]]]:
        """(item id, tags) of each item: the stem's, then each figure's (which also names its figure)."""
        items = [(item_id(self.id, TEXT), dict(self.tags))] if self.stem else []
        return items + [(item_id(self.id, IMAGE, i), dict(self.tags, figure=ref)) for i, ref in enumerate(self.figures)]

    def documents(self) -> list[Document]:
        """The question's items: its stem and one per figure, all sharing question_id."""
        tags = self.item_tags()
        docs = [Document(id=tags[0][0], text=self.stem, tags=tags[0][1])] if self.stem else []
        figure_tags = tags[1:] if self.stem else tags
        for (doc_id, item), data in zip(figure_tags, self.figure_bytes, strict=True):
            docs.append(Document(id=doc_id, blob=data, tags=item))
        return docs

    @functools.cached_property
    def payload_bytes(self) -> int:
        """About what the question takes in a request: texts, tags and images as base64 (weighed
        once, with its figures read: a 60 KB analysis was serialised three times a question)."""
        tags = len(json.dumps(self.tags, ensure_ascii=False, default=str).encode("utf-8"))
        return (
            len(self.stem.encode("utf-8"))
            + tags * (1 + len(self.figures))
            + sum(len(b) for b in self.figure_bytes) * 4 // 3
        )

    def digest(self) -> str:
        """What the question holds, for telling a repeated row from a different one under one id."""
        import hashlib

        content = json.dumps([self.stem, self.figures, self.tags], ensure_ascii=False, sort_keys=True, default=str)
        return hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


@dataclass
class BadRow:
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def parse_question(record: Any, source: str, base: Path) -> Question:
    if not isinstance(record, dict):
        raise ValueError(f"a question must be a JSON object, got {type(record).__name__}")
    qid = record.get("id")
    if not isinstance(qid, (str, int)) or isinstance(qid, bool) or not str(qid).strip():
        raise ValueError("field 'id' is missing or not a string")
    qid = str(qid).strip()
    if ":" in qid:  # item ids are <question id>:<modality>:<n>
        raise ValueError("field 'id' must contain no ':'")
    problem = id_problem(qid, SCALAR_FIELDS["question_id"])
    if problem:  # the server's rule (size included), checked here so the row is named by file:line
        raise ValueError(f"field 'id' {problem}")
    stem = record.get("stem") or ""
    if not isinstance(stem, str):
        raise ValueError("field 'stem' must be a string")
    if len(stem) > MAX_TEXT_CHARS:  # before it is parsed: a long hostile stem costs the parser
        raise ValueError(
            f"field 'stem' is {len(stem)} characters, over the limit of {MAX_TEXT_CHARS} (QBANK_MAX_TEXT_CHARS)"
        )
    figures = record.get("figures") or []
    if isinstance(figures, str):
        figures = [figures]
    if not isinstance(figures, list) or not all(isinstance(f, str) and f for f in figures):
        raise ValueError("field 'figures' must be a list of paths or URLs")
    figures = list(figures)
    if not stem.strip() and not figures:
        raise ValueError("question has neither a stem nor figures")
    points = record.get("knowledge_points") or []
    if not isinstance(points, list):
        raise ValueError("field 'knowledge_points' must be a list")
    options = parse_options(record.get("options"))
    for name in ("answer", "analysis"):
        if record.get(name) is not None and not isinstance(record.get(name), (str, int, float)):
            raise ValueError(f"field {name!r} must be text")
    inline_sources = [src for src in html_text(stem)[1] if src not in figures]  # an HTML stem's <img>
    inline: dict[int, bytes] = {}
    for src in inline_sources:
        if src.startswith("data:"):
            number = len(inline) + 1
            inline[len(figures)] = data_uri_bytes(src, f"inline image {number}")
            stem = stem.replace(src, f"inline:{number}")  # the stored stem keeps a reference, not the bytes
            figures.append(f"{source} inline image {number}")
        else:
            figures.append(src)
    tags: dict[str, Any] = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    tags.update(question_id=qid, knowledge_points=points)
    if options:  # a list, so its order survives (tags travel as a protobuf Struct, whose keys do not keep one)
        tags["options"] = [{"label": label, "text": option} for label, option in options.items()]
    for name in ("answer", "analysis"):
        if record.get(name) not in (None, ""):
            tags[name] = str(record[name])
    for name in ("subject", "grade", "type"):
        tags[name] = check_scalar(qid, TAG_ALIASES.get(name, name), record.get(name), label=name)
    resolved = [f if index in inline or "://" in f else str((base / f).resolve()) for index, f in enumerate(figures)]
    text = stem.strip()
    if options:
        text += "\n" + "\n".join(f"{label}. {option}" for label, option in options.items())
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the stem with its options is {len(text)} characters, over the limit of {MAX_TEXT_CHARS} (QBANK_MAX_TEXT_CHARS)"
        )
    return Question(qid, text, resolved, tags, source, inline=inline)


def parse_options(value: Any) -> dict[str, str]:
    """Options as {label: text} in order, from a list (labelled A, B, ...), an object, or nothing."""
    if value in (None, "", [], {}):
        return {}
    if isinstance(value, list):
        if len(value) > len(OPTION_LABELS) or not all(isinstance(v, (str, int, float)) for v in value):
            raise ValueError(f"field 'options' must be a list of at most {len(OPTION_LABELS)} texts (MAX_OPTIONS)")
        return {label: str(v).strip() for label, v in zip(OPTION_LABELS, value, strict=False)}
    if isinstance(value, dict) and all(isinstance(v, (str, int, float)) for v in value.values()):
        if len(value) > MAX_OPTIONS:
            raise ValueError(f"field 'options' has {len(value)} options, over the limit of {MAX_OPTIONS} (MAX_OPTIONS)")
        return {str(k): str(v).strip() for k, v in value.items()}
    raise ValueError("field 'options' must be a list of texts or an object of label -> text")


_BASE64_SPACE = re.compile(r"\s+")


def data_uri_bytes(uri: str, label: str) -> bytes:
    """The bytes of a ``data:`` image, its size checked before it is decoded."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.lower().startswith("data:image/"):
        raise ValueError(f"{label}: a data: URI that is not an image ({header[:40]!r})")
    if header.lower().endswith(";base64"):
        payload = _BASE64_SPACE.sub("", payload)
        size = len(payload) * 3 // 4
    else:
        size = len(payload)  # percent-encoded: at most this many bytes
    if size > MAX_FIGURE_BYTES:
        raise ValueError(f"{label}: about {size} bytes, over the limit of {MAX_FIGURE_BYTES} (QBANK_MAX_IMAGE_BYTES)")
    try:
        data = (
            base64.b64decode(payload, validate=True)
            if header.lower().endswith(";base64")
            else unquote_to_bytes(payload)
        )
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{label}: not valid base64 ({exc})") from None
    if not data:
        raise ValueError(f"{label}: empty")
    return data


def read_image_ref(ref: str, timeout: float = FIGURE_TIMEOUT) -> bytes:
    """Bytes of an image given as a local path or an http(s) URL: a regular file whose size is known
    before it is read, or a download finished within ``timeout`` seconds in all; at most
    MAX_FIGURE_BYTES either way. (A figure path of /dev/zero grew the client to 3 GB, a FIFO or an
    URL sending a byte a second hung the import with every good row of its batch.)"""
    try:
        if ref.startswith(("http://", "https://")):
            blob = fetch_http(ref, MAX_FIGURE_BYTES, timeout, CLIENT_POLICY)
        else:
            blob = read_regular_file(ref, MAX_FIGURE_BYTES)
    except FetchError as exc:
        raise ValueError(str(exc)) from None
    if not blob:
        raise ValueError(f"figure {ref} is empty")
    return blob


def load_figures(question: Question, timeout: float = FIGURE_TIMEOUT) -> None:
    """Read figure bytes on the client, so the server never needs access to the user's files."""
    question.figure_bytes = [
        question.inline[i] if i in question.inline else read_image_ref(ref, timeout)
        for i, ref in enumerate(question.figures)
    ]


def check_items(question: Question) -> None:
    """The service's own checks of each item, run here (ValueError names the part): tags within
    QBANK_MAX_TAG_BYTES and MAX_TAG_DEPTH, each figure an image within QBANK_MAX_IMAGE_BYTES and
    QBANK_MAX_IMAGE_PIXELS, the question within one request."""
    from qbank.media.images import ImageInputError, ImageLimits, decode_image

    items = question.item_tags()
    if len(items) > MAX_DOCS_PER_REQUEST:
        raise ValueError(
            f"{len(question.figures)} figures: a question's items must fit one request of {MAX_DOCS_PER_REQUEST} "
            "(QBANK_MAX_DOCS_PER_REQUEST)"
        )
    for doc_id, tags in items:
        try:
            tags_to_fields(doc_id, tags)
        except ItemError as exc:
            sizes = {k: len(json.dumps(v, ensure_ascii=False, default=str)) for k, v in tags.items()}
            largest = max(sizes, key=sizes.get)
            raise ValueError(
                f"{str(exc).split(': ', 1)[1]}; the largest field is {largest!r} ({sizes[largest]} bytes)"
            ) from None
    for index, data in enumerate(question.figure_bytes):
        try:
            decode_image(data, ImageLimits(), max_side=224)  # JPEGs decode at a DCT scale: cheap
        except ImageInputError as exc:
            raise ValueError(f"figure {index + 1} ({question.figures[index][-80:]}): {exc}") from None
    size = question.payload_bytes
    if size > REQUEST_BYTES:
        raise ValueError(
            f"the question takes about {size} bytes, over a request's {REQUEST_BYTES} (QBANK_MAX_REQUEST_BYTES)"
        )


def bank_files(path: Path) -> tuple[list[Path], list[Path]]:
    """(the bank files of ``path``, the other files of a folder, which are left out)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "~$")))
        return [p for p in files if p.suffix.lower() in FORMATS], [p for p in files if p.suffix.lower() not in FORMATS]
    if path.is_file():
        return [path], []
    raise FileNotFoundError(f"no such file or folder: {path}")


def default_id(root: Path, file: Path, number: int, sheet: str = "") -> str:
    """The id of a question its bank gives none: its file (relative to the bank), sheet and line."""
    relative = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
    return "-".join([*relative.with_suffix("").parts, *([sheet] if sheet else [])]) + f"-{number}"


@dataclass
class Bank:
    """A bank opened for reading: its files (format, encoding, columns) known and the mapping
    checked against each, before a row is read. ``rows()`` streams questions and bad rows."""

    root: Path
    files: list[BankFile]
    fields: FieldMap
    left_out: list[Path] = field(default_factory=list)  # files of a folder in no bank format
    notes: list[str] = field(default_factory=list)  # tables without a column the mapping names
    mapped: dict[tuple[Path, str], dict[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(f.size if f.format != "xlsx" else 0 for f in self.files)

    @property
    def bytes_read(self) -> int:
        return sum(f.bytes_read for f in self.files if f.format != "xlsx")

    def rows(self) -> Iterator[Question | BadRow]:
        base = self.root if self.root.is_dir() else self.root.parent
        for bank in self.files:
            context = {"file": bank.path.stem, "folder": bank.path.parent.name, "sheet": ""}
            for row in bank.rows():
                yield self._question(bank, row, base, context)

    def _question(self, bank: BankFile, row: Row, base: Path, context: dict[str, str]) -> Question | BadRow:
        if row.problem is not None:
            return BadRow(row.source, row.problem)
        record = row.values
        try:
            if isinstance(record, dict):
                mapped = self.mapped.get((bank.path, row.sheet), self.fields.fields)
                record = self.fields.apply(record, mapped, dict(context, sheet=row.sheet))
                if bank.format in ("csv", "xlsx"):
                    for key in [k for k in record if k.startswith("#")]:
                        record.pop(key)  # an unnamed column (pandas' row number) is no tag unless mapped
                    if record.get("id") in (None, ""):
                        record["id"] = default_id(base, bank.path, row.line, row.sheet)
            return parse_question(record, row.source, bank.path.parent)
        except ValueError as exc:
            return BadRow(row.source, str(exc))


def open_bank(
    path: str | Path, fields: FieldMap | None = None, encoding: str | None = None, sheet: str | None = None
) -> Bank:
    """``path`` (a file or a folder of them) opened as a bank; BankError (or FileNotFoundError) when
    any file cannot be read at all or the mapping does not fit its columns: nothing is read then."""
    root = Path(path)
    fields = fields or FieldMap()
    files, left_out = bank_files(root)
    if root.is_dir() and not files:
        raise BankError(f"{root}: no bank files ({', '.join(FORMATS)}) in the folder")
    bank = Bank(root, [open_bank_file(f, encoding, sheet) for f in files], fields, left_out)
    tables = [(f, name, header) for f in bank.files for name, header in f.columns.items()]
    missing_in: dict[str, list[str]] = {}
    for file, name, header in tables:
        where = f"{file.path}[{name}]" if name else str(file.path)
        bank.mapped[(file.path, name)], missing = fields.resolve(where, header)
        for column in missing:
            missing_in.setdefault(column, []).append(where)
    for column, wheres in missing_in.items():
        part = next(p for p, columns in fields.fields.items() if column in columns)
        if len(wheres) == len(tables):  # a column no table has: a typo, or the wrong bank
            header = tables[0][2]
            shown = [n or f"#{i}" for i, n in enumerate(header, 1)]
            raise BankError(f"{wheres[0]}: --map {part}={column}: no column {column!r}; the columns are {shown}")
        bank.notes.extend(f"{where}: no column {column!r} (--map {part}): its rows go without it" for where in wheres)
    _check_json_fields(bank, fields)
    return bank


def _check_json_fields(bank: Bank, fields: FieldMap) -> None:
    """A JSON bank has no header: its first question's fields stand for one. A mapped field that no
    JSON file's first question has is refused (a typo); one only some lack is a note."""
    firsts = {}
    for file in bank.files:
        if file.format in ("json", "jsonl"):
            rows = file.rows()
            try:
                first = next((row.values for row in rows if isinstance(row.values, dict)), None)
            finally:
                rows.close()  # the file, closed now: only its first question was wanted
            file.bytes_read = 0
            if first is not None:
                firsts[file.path] = set(first)
    for part, columns in fields.fields.items():
        for column in columns:
            lacking = [path for path, keys in firsts.items() if column not in keys]
            if firsts and len(lacking) == len(firsts) and not bank.mapped:
                keys = sorted(firsts[lacking[0]])
                raise BankError(
                    f"{lacking[0]}: --map {part}={column}: its first question has no field {column!r}; its fields are {keys}"
                )
            bank.notes.extend(f"{path}: its first question has no field {column!r} (--map {part})" for path in lacking)


def read_bank(
    path: str | Path, fields: FieldMap | None = None, encoding: str | None = None, sheet: str | None = None
) -> Iterator[Question | BadRow]:
    """Questions and bad rows of a bank file (.jsonl, .json array, .csv, .xlsx) or of every such file
    under a folder, in order; ``fields`` names the bank's own columns. A table row without an id (a
    CSV without an id column, like CMMLU's) gets its file and line number (:func:`default_id`)."""
    return open_bank(path, fields, encoding, sheet).rows()


__all__ = ["REFUSED", "BadRow", "Bank", "BankError", "FieldMap", "Question", "open_bank", "read_bank"]
