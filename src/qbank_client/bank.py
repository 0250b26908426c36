"""Reading a question bank: JSONL (one question per line) or a folder of them, with line numbers.

A line is ``{"id": ..., "stem": ..., "figures": [path or URL, ...], "subject": ..., "grade": ...,
"type": ..., "knowledge_points": [...], <anything else>}``; anything else is kept as metadata.
Relative figure paths are read against the JSONL file's folder. A bad line is reported with its
file and line number and never half-imported: a question goes whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docarray import Document

from qbank.domain.schema import IMAGE, SCALAR_FIELDS, TAG_ALIASES, TEXT, check_scalar, id_problem, item_id
from qbank.media.fetch import CLIENT_POLICY, FetchError, fetch_http, read_regular_file

KNOWN_KEYS = {"id", "stem", "figures", "subject", "grade", "type", "knowledge_points"}
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
    tags: dict[str, Any] = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    tags.update(question_id=qid, knowledge_points=points)
    for name in ("subject", "grade", "type"):
        tags[name] = check_scalar(qid, TAG_ALIASES.get(name, name), record.get(name), label=name)
    resolved = [f if "://" in f else str((base / f).resolve()) for f in figures]
    return Question(qid, stem.strip(), resolved, tags, source)


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
        return sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such file or folder: {path}")


def read_bank(path: str | Path) -> Iterator[Question | BadRow]:
    """Questions and bad rows of a JSONL file or of every ``*.jsonl`` under a folder, in order."""
    for file in bank_files(Path(path)):
        with file.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                source = f"{file}:{number}"
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield BadRow(source, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                    continue
                try:
                    yield parse_question(json.loads(line), source, file.parent)
                except json.JSONDecodeError as exc:
                    yield BadRow(source, f"not valid JSON: {exc.msg} at column {exc.colno}")
                except ValueError as exc:
                    yield BadRow(source, str(exc))
