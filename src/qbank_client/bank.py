"""Reading a question bank as banks store it: JSONL (one question per line), JSON arrays and CSV,
a file or a folder of them, with line numbers.

A question is ``{"id": ..., "stem": ..., "figures": [path or URL, ...], "options": [...] or
{"A": ...}, "answer": ..., "analysis": ..., "subject": ..., "grade": ..., "type": ...,
"knowledge_points": [...], <anything else>}``; anything else is kept as metadata. A stem may be
plain text, Markdown or HTML with inline LaTeX: it is stored as given (the page typesets it), its
inline ``<img src>`` become the question's figures, and search reads it as text
(:mod:`qbank.domain.reading`). The stem item's text is the stem followed by its options (what a
printed page shows, and what a photo of it reads); options, answer and analysis are also kept in
its tags to be shown apart. A :class:`FieldMap` names the columns a bank uses (CSV: ``--map
stem=Question --map options=A,B,C,D --map answer=Answer``). Relative figure paths are read
against the bank file's folder. A bad row is reported with its file and line number and never
half-imported: a question goes whole or not at all.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docarray import Document

from qbank.domain.reading import html_text
from qbank.domain.schema import IMAGE, SCALAR_FIELDS, TAG_ALIASES, TEXT, check_scalar, id_problem, item_id
from qbank.media.fetch import CLIENT_POLICY, FetchError, fetch_http, read_regular_file

KNOWN_KEYS = {"id", "stem", "figures", "options", "answer", "analysis", "subject", "grade", "type", "knowledge_points"}
BANK_SUFFIXES = (".jsonl", ".json", ".csv")
OPTION_LABELS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class FieldMap:
    """Which of a bank's fields (columns) hold each part of a question: ``{"stem": ["Question"],
    "options": ["A", "B", "C", "D"], "answer": ["Answer"]}``; a part not named is read from the field
    of its own name. Several fields of one part are joined (options: one option each)."""

    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, specs: list[str]) -> FieldMap:
        """From ``part=field[,field...]`` strings (``qbank import --map``); ValueError names a bad one."""
        fields: dict[str, tuple[str, ...]] = {}
        for spec in specs:
            part, sep, names = spec.partition("=")
            columns = tuple(name for name in names.split(",") if name != "") if sep else ()
            if not sep or part.strip() not in KNOWN_KEYS or not columns:
                raise ValueError(
                    f"--map {spec!r}: want part=field[,field...] with part one of {', '.join(sorted(KNOWN_KEYS))}"
                )
            fields[part.strip()] = columns
        return cls(fields)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with each mapped part read from its fields (the fields themselves dropped)."""
        if not self.fields:
            return record
        mapped = {k: v for k, v in record.items() if not any(k in cols for cols in self.fields.values())}
        for part, columns in self.fields.items():
            values = [record.get(column) for column in columns if record.get(column) not in (None, "")]
            if part == "options":
                mapped[part] = values
            elif values:
                mapped[part] = values[0] if len(values) == 1 else "\n".join(map(str, values))
        return mapped


MAX_FIGURE_BYTES = 20 * 1024 * 1024  # the server's QBANK_MAX_IMAGE_BYTES default
FIGURE_TIMEOUT = 10.0  # seconds for one figure's whole download


@dataclass
class Question:
    id: str
    stem: str
    figures: list[str]
    tags: dict[str, Any]
    source: str  # file:line, for messages
    figure_bytes: list[bytes] = field(default_factory=list)

    def item_ids(self) -> list[str]:
        ids = [item_id(self.id, TEXT)] if self.stem else []
        return ids + [item_id(self.id, IMAGE, i) for i in range(len(self.figures))]

    def documents(self) -> list[Document]:
        """The question's items: its stem and one per figure, all sharing question_id."""
        docs = []
        if self.stem:
            docs.append(Document(id=item_id(self.id, TEXT), text=self.stem, tags=dict(self.tags)))
        for index, (ref, data) in enumerate(zip(self.figures, self.figure_bytes, strict=True)):
            tags = dict(self.tags, figure=ref)
            docs.append(Document(id=item_id(self.id, IMAGE, index), blob=data, tags=tags))
        return docs


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
    figures = record.get("figures") or []
    if isinstance(figures, str):
        figures = [figures]
    if not isinstance(figures, list) or not all(isinstance(f, str) and f for f in figures):
        raise ValueError("field 'figures' must be a list of paths or URLs")
    if not stem.strip() and not figures:
        raise ValueError("question has neither a stem nor figures")
    points = record.get("knowledge_points") or []
    if not isinstance(points, list):
        raise ValueError("field 'knowledge_points' must be a list")
    options = parse_options(record.get("options"))
    for name in ("answer", "analysis"):
        if record.get(name) is not None and not isinstance(record.get(name), (str, int, float)):
            raise ValueError(f"field {name!r} must be text")
    inline = [src for src in html_text(stem)[1] if src not in figures]  # an HTML stem's <img> are its figures
    figures = figures + inline
    tags: dict[str, Any] = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    tags.update(question_id=qid, knowledge_points=points)
    if options:  # a list, so its order survives (tags travel as a protobuf Struct, whose keys do not keep one)
        tags["options"] = [{"label": label, "text": option} for label, option in options.items()]
    for name in ("answer", "analysis"):
        if record.get(name) not in (None, ""):
            tags[name] = str(record[name])
    for name in ("subject", "grade", "type"):
        tags[name] = check_scalar(qid, TAG_ALIASES.get(name, name), record.get(name), label=name)
    resolved = [f if "://" in f or f.startswith("data:") else str((base / f).resolve()) for f in figures]
    text = stem.strip()
    if options:
        text += "\n" + "\n".join(f"{label}. {option}" for label, option in options.items())
    return Question(qid, text, resolved, tags, source)


def parse_options(value: Any) -> dict[str, str]:
    """Options as {label: text} in order, from a list (labelled A, B, ...), an object, or nothing."""
    if value in (None, "", [], {}):
        return {}
    if isinstance(value, list):
        if len(value) > len(OPTION_LABELS) or not all(isinstance(v, (str, int, float)) for v in value):
            raise ValueError(f"field 'options' must be a list of at most {len(OPTION_LABELS)} texts")
        return {label: str(v).strip() for label, v in zip(OPTION_LABELS, value, strict=False)}
    if isinstance(value, dict) and all(isinstance(v, (str, int, float)) for v in value.values()):
        return {str(k): str(v).strip() for k, v in value.items()}
    raise ValueError("field 'options' must be a list of texts or an object of label -> text")


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
    question.figure_bytes = [read_image_ref(ref, timeout) for ref in question.figures]


def bank_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in BANK_SUFFIXES and p.is_file())
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such file or folder: {path}")


def _records(file: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, record, None) or (line number, None, why it cannot be read) of one bank file."""
    if file.suffix == ".csv":
        try:
            with file.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                for row in reader:
                    yield reader.line_num, {k: v for k, v in row.items() if k is not None}, None
        except UnicodeDecodeError as exc:
            yield 0, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
        except csv.Error as exc:
            yield 0, None, f"not valid CSV: {exc}"
        return
    if file.suffix == ".json":
        try:
            records = json.loads(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield 1, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
            return
        except json.JSONDecodeError as exc:
            yield exc.lineno, None, f"not valid JSON: {exc.msg} at column {exc.colno}"
            return
        if not isinstance(records, list):
            yield 1, None, "a .json bank must hold a list of questions"
            return
        for index, record in enumerate(records, 1):
            yield index, record, None  # the n-th question of the list
        return
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw.decode("utf-8")), None
            except UnicodeDecodeError as exc:
                yield number, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON: {exc.msg} at column {exc.colno}"


def default_id(root: Path, file: Path, number: int) -> str:
    """The id of a question its bank gives none: its file (relative to the bank) and line number."""
    relative = file.relative_to(root) if file.is_relative_to(root) else Path(file.name)
    return "-".join(relative.with_suffix("").parts) + f"-{number}"


def read_bank(path: str | Path, fields: FieldMap | None = None) -> Iterator[Question | BadRow]:
    """Questions and bad rows of a bank file (.jsonl, .json array, .csv) or of every such file under
    a folder, in order; ``fields`` names the bank's own columns. A question without an id (a CSV
    without an id column, like CMMLU's) gets its file and line number (:func:`default_id`)."""
    root = Path(path)
    base = root if root.is_dir() else root.parent
    for file in bank_files(root):
        for number, record, problem in _records(file):
            source = f"{file}:{number}"
            if problem is not None:
                yield BadRow(source, problem)
                continue
            try:
                if isinstance(record, dict):
                    record = (fields or FieldMap()).apply(record)
                    record.pop("", None)  # an unnamed column (CMMLU's row number) is no tag
                    if record.get("id") in (None, "") and file.suffix == ".csv":
                        record["id"] = default_id(base, file, number)
                yield parse_question(record, source, file.parent)
            except ValueError as exc:
                yield BadRow(source, str(exc))
