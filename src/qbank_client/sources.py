"""Bank files as Chinese teams export them, read as a stream of rows with their file and line.

Formats by suffix: JSONL (``.jsonl``, ``.ndjson``), a JSON array (``.json``), CSV (``.csv``) and
Excel (``.xlsx``/``.xlsm``, every sheet or one, read-only and streamed by openpyxl). Anything else is
refused by name, never guessed.

Encodings: UTF-8 with or without a BOM, UTF-16/32 by their BOM, and otherwise what the file's first
MiB decodes as, strictly: UTF-8, then GB18030 (what Excel in China writes; a superset of GBK, which
23 of CMMLU's 67 files cannot even be written in), then charset-normalizer's best guess. The
encoding used is reported, and ``encoding=`` forces one. A line that does not decode is a bad row
named with its line number; the lines after it are read.

Memory stays flat: rows are read one at a time, each at most ``MAX_ROW_BYTES``; a longer line is
skipped without being held. CSV records are split and parsed by the csv module over our own line
iterator, which knows each physical line's number and whether it decoded, so a record spanning
lines (a quoted field with line breaks) is named by its first line.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from qbank.domain.schema import MAX_TAG_DEPTH, nesting_depth

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".xlsx": "xlsx", ".xlsm": "xlsx"}
# What teams also have, refused with what to do instead.
REFUSED = {
    ".xls": "the old Excel format: save it as .xlsx (or CSV UTF-8) in Excel or WPS",
    ".et": "a WPS sheet: save it as .xlsx",
    ".txt": "plain text has no columns: save it as CSV, or one JSON object per line as .jsonl",
    ".docx": "a Word document: export its questions as .xlsx, CSV or JSONL",
    ".doc": "a Word document: export its questions as .xlsx, CSV or JSONL",
    ".tsv": "tab-separated: save it as CSV",
}
# One row's raw bytes. A figure inline as a data: URI is at most 20 MiB (QBANK_MAX_IMAGE_BYTES), 27 MiB
# of base64; longer lines are skipped unread (a 1 GB line never exists in memory).
MAX_ROW_BYTES = 32 * 1024 * 1024
# Columns of a CSV or sheet (a CSV of 1,000,000 columns took the client to 1.4 GB).
MAX_COLUMNS = 1000
# Nesting of one JSON row: the row itself plus its tags (MAX_TAG_DEPTH). A JSONL line nested 100,000
# deep aborted a whole import (RecursionError).
MAX_JSON_DEPTH = MAX_TAG_DEPTH + 1
SAMPLE_BYTES = 1 << 20  # what the encoding is told from
# charset-normalizer's guesses taken when a file is neither UTF-8 nor GB18030 (Traditional Chinese,
# Japanese and Korean exports); any other guess on a question bank is more likely mojibake.
_GUESSES_TAKEN = {
    "big5",
    "big5hkscs",
    "cp950",
    "shift_jis",
    "cp932",
    "euc_jp",
    "euc_kr",
    "cp949",
    "utf-16-le",
    "utf-16-be",
}
_BOMS = (  # longest first: UTF-32's little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class BankError(ValueError):
    """The bank (a file of it) cannot be read at all: the message says which file and why."""


@dataclass
class Row:
    """One row of a bank file: its values (a dict for tables and JSON objects, any JSON value
    otherwise), or why it cannot be read."""

    source: str  # file:line, file[sheet]:row, or file[n] (the n-th question of a JSON array)
    values: Any = None
    problem: str | None = None
    line: int = 0  # a table row's line (CSV) or row (sheet): a row without an id is named by it
    sheet: str = ""  # a sheet row's sheet


@dataclass
class BankFile:
    """One file of a bank, opened far enough to know how it reads: its format, encoding and (for
    tables) columns. Rows are read on demand by :meth:`rows`."""

    path: Path
    format: str
    encoding: str | None = None  # None for xlsx
    encoding_how: str = ""  # "given", "BOM", "detected", "charset-normalizer"
    sheets: list[str] = field(default_factory=list)  # xlsx: the sheets read
    columns: dict[str, list[str]] = field(default_factory=dict)  # header per sheet ("" for a CSV)
    bytes_read: int = 0  # progress, in bytes of the file (xlsx: in rows)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def describe(self) -> str:
        if self.format == "xlsx":
            return f"{self.path}: Excel, sheets {', '.join(self.sheets)}"
        return f"{self.path}: {self.format.upper()}, {(self.encoding or '').upper()} ({self.encoding_how})"

    def rows(self) -> Iterator[Row]:
        if self.format == "xlsx":
            yield from _sheet_rows(self)
        elif self.format == "csv":
            yield from _csv_rows(self)
        elif self.format == "json":
            yield from _array_rows(self)
        else:
            yield from _jsonl_rows(self)


def open_bank_file(path: Path, encoding: str | None = None, sheet: str | None = None) -> BankFile:
    """``path`` opened far enough to read it: format by suffix, encoding, header; BankError if it
    cannot be read at all."""
    suffix = path.suffix.lower()
    if suffix in REFUSED:
        raise BankError(f"{path}: {suffix} is not read: {REFUSED[suffix]}")
    if suffix not in FORMATS:
        raise BankError(f"{path}: unknown bank format {suffix or '(no suffix)'!r}: want {', '.join(FORMATS)}")
    bank = BankFile(path, FORMATS[suffix])
    if bank.format == "xlsx":
        if encoding:
            raise BankError(f"{path}: --encoding does not apply to .xlsx (Excel stores text as Unicode)")
        _open_sheets(bank, sheet)
        return bank
    if sheet:
        raise BankError(f"{path}: --sheet applies to .xlsx files only")
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
        complete = not handle.read(1)
    bank.encoding, bank.encoding_how = detect_encoding(sample, complete, encoding, path)
    if bank.format == "csv":
        bank.columns[""] = _csv_header(bank)
    return bank


def detect_encoding(sample: bytes, complete: bool, given: str | None, path: Path) -> tuple[str, str]:
    """(codec name, how it was chosen) for a file starting with ``sample``."""
    if given:
        try:
            name = codecs.lookup(given).name
        except LookupError:
            raise BankError(f"--encoding {given!r}: no such encoding (e.g. utf-8, gb18030, gbk, utf-16)") from None
        if name == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            name = "utf-8-sig"
        return name, "given"
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name, "BOM"
    if sample.count(0) > len(sample) // 8:  # UTF-16 without its BOM: every other byte of ASCII is NUL
        return ("utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"), "detected"
    lines = sample.split(b"\n")
    if not complete:
        lines = lines[:-1] or lines  # the sample's last line may be cut
    wide = [line for line in lines if not line.isascii()]
    votes = {name: sum(_decodes(line, name) for line in wide) for name in ("utf-8", "gb18030")}
    # Line by line, so that one broken line (a UTF-8 file with a GBK row pasted in) does not turn the
    # whole file into mojibake: Chinese text in GB18030 is practically never valid UTF-8.
    if not wide or votes["utf-8"] * 2 >= len(wide):
        return "utf-8", "detected"
    if votes["gb18030"] * 2 >= len(wide):
        return "gb18030", "detected"
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is not None and codecs.lookup(best.encoding).name in _GUESSES_TAKEN:
        return codecs.lookup(best.encoding).name, "charset-normalizer"
    return "utf-8", "neither UTF-8 nor GB18030: lines that are not UTF-8 are named"


def _decodes(line: bytes, codec: str) -> bool:
    try:
        line.decode(codec)
        return True
    except UnicodeDecodeError:
        return False


def _ascii_compatible(codec: str) -> bool:
    """Whether b"\\n" ends a line in this encoding (not UTF-16/32), so lines split as bytes."""
    return codecs.lookup(codec).name not in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


def _skip_rest_of_line(handle: BinaryIO | io.TextIOBase) -> int:
    """Read past the end of an over-long line without holding it; the quote characters it had."""
    quotes = 0
    while True:
        chunk = handle.readline(1 << 20)
        if not chunk:
            return quotes
        quotes += chunk.count(b'"' if isinstance(chunk, bytes) else '"')
        if chunk.endswith(b"\n" if isinstance(chunk, bytes) else "\n"):
            return quotes


def _lines(bank: BankFile) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, why the line is bad or None) of a text file, each line at most
    MAX_ROW_BYTES. An over-long line is replaced by a blank (a quote when it held an odd number of
    them, so CSV quoting stays in step) and named; a line that does not decode is read with
    replacement characters so CSV framing goes on, and named."""
    codec = bank.encoding or "utf-8"
    with bank.path.open("rb") as raw:
        if _ascii_compatible(codec):
            handle: Any = raw
            if codec == "utf-8-sig":
                _skip_bom(raw)
                codec = "utf-8"
        else:  # UTF-16/32: decoded as a stream; an undecodable byte ends the file (named)
            handle = io.TextIOWrapper(raw, encoding=codec, errors="strict", newline="")
        number = 0
        while True:
            try:
                line = handle.readline(MAX_ROW_BYTES + 1)
            except UnicodeDecodeError as exc:
                yield number + 1, "\n", f"not valid {codec.upper()} ({exc.reason}): the rest of the file is not read"
                return
            bank.bytes_read = raw.tell()
            if not line:
                return
            number += 1
            newline = b"\n" if isinstance(line, bytes) else "\n"
            if len(line) > MAX_ROW_BYTES and not line.endswith(newline):
                quotes = line.count(b'"' if isinstance(line, bytes) else '"') + _skip_rest_of_line(handle)
                bank.bytes_read = raw.tell()
                yield (
                    number,
                    '"\n' if quotes % 2 else "\n",
                    f"line {number} is over {MAX_ROW_BYTES} bytes (MAX_ROW_BYTES)",
                )
                continue
            if isinstance(line, str):
                yield number, line, None
                continue
            try:
                yield number, line.decode(codec), None
            except UnicodeDecodeError as exc:
                hint = "" if bank.encoding_how == "given" else " (--encoding names another)"
                yield (
                    number,
                    line.decode(codec, "replace"),
                    f"not valid {codec.upper()} at byte {exc.start + 1} of line {number}: the file was read as "
                    f"{codec.upper()}{hint}",
                )


def _skip_bom(raw: Any) -> None:
    if raw.peek(3)[:3] == codecs.BOM_UTF8:
        raw.read(3)


def _jsonl_rows(bank: BankFile) -> Iterator[Row]:
    for number, text, problem in _lines(bank):
        source = f"{bank.path}:{number}"
        if problem:
            yield Row(source, problem=problem)
            continue
        if not text.strip():
            continue
        yield _json_row(source, text)


def _json_row(source: str, text: str) -> Row:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(source, problem=f"not valid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return Row(source, problem=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as exc:  # a number of more than 4,300 digits
        return Row(source, problem=f"not readable JSON: {exc}")
    if nesting_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return Row(source, problem=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return Row(source, value)


class _Feeder:
    """The csv module's line iterator: it knows which physical lines the current record took, and
    whether any of them was bad or the record grew past MAX_ROW_BYTES (then it feeds blanks in
    step with the quoting, so the csv module never holds the huge field)."""

    def __init__(self, lines: Iterator[tuple[int, str, str | None]]):
        self._lines = lines
        self.begin()

    def begin(self) -> None:
        self.first: int | None = None
        self.problem: str | None = None
        self.size = 0

    def __iter__(self) -> _Feeder:
        return self

    def __next__(self) -> str:
        number, text, problem = next(self._lines)
        if self.first is None and text.strip("\r\n"):
            self.first = number
        self.problem = self.problem or problem
        self.size += len(text)
        if self.size > MAX_ROW_BYTES:
            self.problem = self.problem or f"a row over {MAX_ROW_BYTES} bytes (MAX_ROW_BYTES)"
            return '"\n' if text.count('"') % 2 else "\n"
        return text


def _csv_reader(bank: BankFile) -> tuple[_Feeder, Any]:
    csv.field_size_limit(MAX_ROW_BYTES)  # the module's 128 KiB default dropped every row after a long field
    feeder = _Feeder(_lines(bank))
    return feeder, csv.reader(feeder)


def _csv_header(bank: BankFile) -> list[str]:
    feeder, reader = _csv_reader(bank)
    try:
        header = next(reader)
    except StopIteration:
        raise BankError(f"{bank.path}: the file is empty (a CSV needs a header row)") from None
    except csv.Error as exc:
        raise BankError(f"{bank.path}: the header row is not valid CSV: {exc}") from None
    if feeder.problem:
        raise BankError(f"{bank.path}: the header row cannot be read: {feeder.problem}")
    return check_header(bank.path, header)


def check_header(where: Any, header: list[Any]) -> list[str]:
    if len(header) > MAX_COLUMNS:
        raise BankError(f"{where}: the header has {len(header)} columns, over the limit of {MAX_COLUMNS} (MAX_COLUMNS)")
    return ["" if name is None else str(name).strip() for name in header]


def column_keys(header: list[str]) -> list[str]:
    """A key per column: its name; an unnamed column (pandas' index) ``#<position>``; a name used
    again ``<name>#<position>`` (kept, never silently merged)."""
    keys, seen = [], set()
    for position, name in enumerate(header, 1):
        key = name if name and name not in seen else f"{name}#{position}"
        seen.add(name)
        keys.append(key)
    return keys


def _table_row(source: str, keys: list[str], values: list[Any], line: int, sheet: str = "") -> Row:
    if len(values) > len(keys):
        extra = [v for v in values[len(keys) :] if v not in (None, "")]
        if extra:
            return Row(source, problem=f"has {len(values)} fields, the header has {len(keys)} columns")
    return Row(source, {key: ("" if i >= len(values) else values[i]) for i, key in enumerate(keys)}, None, line, sheet)


def _csv_rows(bank: BankFile) -> Iterator[Row]:
    feeder, reader = _csv_reader(bank)
    keys = column_keys(bank.columns[""])
    next(reader, None)  # the header, read and checked when the file was opened
    while True:
        feeder.begin()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(f"{bank.path}:{feeder.first or reader.line_num}", problem=f"not valid CSV: {exc}")
            continue
        line = feeder.first or reader.line_num
        source = f"{bank.path}:{line}"
        if feeder.problem:
            yield Row(source, problem=feeder.problem)
        elif any(fields):
            yield _table_row(source, keys, fields, line)


def _open_sheets(bank: BankFile, sheet: str | None) -> None:
    import openpyxl

    try:
        book = openpyxl.load_workbook(bank.path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException, XML errors
        raise BankError(f"{bank.path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        names = book.sheetnames
        if sheet is not None and sheet not in names:
            raise BankError(f"{bank.path}: no sheet {sheet!r}; its sheets are {names}")
        for name in [sheet] if sheet is not None else names:
            header = next(book[name].iter_rows(values_only=True, max_row=1), None)
            if header is None or not any(v not in (None, "") for v in header):
                continue  # an empty sheet (a workbook's second and third sheets often are)
            bank.sheets.append(name)
            bank.columns[name] = check_header(f"{bank.path}[{name}]", _trim(list(header)))
    finally:
        book.close()
    if not bank.sheets:
        raise BankError(f"{bank.path}: no sheet has a header row")


def _trim(values: list[Any]) -> list[Any]:
    """A sheet row without its trailing empty cells (a sheet's dimension often runs past its data)."""
    end = len(values)
    while end and values[end - 1] in (None, ""):
        end -= 1
    return values[:end]


def cell_text(value: Any) -> Any:
    """A cell as the text a person sees: 3.0 as "3", a date as 2024-05-01; None as ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value) if not isinstance(value, str) else value


def _sheet_rows(bank: BankFile) -> Iterator[Row]:
    import openpyxl

    book = openpyxl.load_workbook(bank.path, read_only=True, data_only=True)
    try:
        for name in bank.sheets:
            keys = column_keys(bank.columns[name])
            rows = book[name].iter_rows(values_only=True)
            next(rows, None)
            for number, values in enumerate(rows, 2):
                bank.bytes_read += 1
                values = _trim(list(values))
                if not values:
                    continue
                source = f"{bank.path}[{name}]:{number}"
                if len(values) > MAX_COLUMNS:
                    yield Row(source, problem=f"has {len(values)} cells, over the limit of {MAX_COLUMNS} (MAX_COLUMNS)")
                    continue
                yield _table_row(source, keys, [cell_text(v) for v in values], number, name)
    finally:
        book.close()


def _array_rows(bank: BankFile) -> Iterator[Row]:
    """The questions of a JSON array, streamed (ijson's event parser; each question built here under
    MAX_JSON_DEPTH, so a deep one is skipped, not built). A syntax error ends the file, named."""
    import ijson
    from ijson.common import ObjectBuilder

    codec = bank.encoding or "utf-8"
    with bank.path.open("rb") as raw:
        if codec == "utf-8-sig":
            _skip_bom(raw)
            stream: Any = raw
        elif codec == "utf-8":
            stream = raw
        else:  # ijson reads UTF-8 bytes; other encodings are re-encoded as they stream
            stream = _Utf8Stream(io.TextIOWrapper(raw, encoding=codec, errors="strict"))
        depth, index, builder, too_deep = 0, 0, None, False
        events = ijson.basic_parse(stream, use_float=True)
        try:
            for event, value in events:
                bank.bytes_read = raw.tell()
                if depth == 0:
                    if event != "start_array":
                        yield Row(
                            f"{bank.path}",
                            problem="a .json bank must hold a list of questions: use .jsonl for one per line",
                        )
                        return
                    depth = 1
                    continue
                opening, closing = event in ("start_map", "start_array"), event in ("end_map", "end_array")
                if depth == 1:
                    if closing:
                        return
                    index += 1
                    builder, too_deep = ObjectBuilder(), False
                depth += opening - closing
                if depth > MAX_JSON_DEPTH + 1:
                    too_deep = True
                if not too_deep:
                    builder.event(event, value)
                if depth == 1:
                    source = f"{bank.path}[{index}]"
                    if too_deep:
                        yield Row(source, problem=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
                    else:
                        yield Row(source, builder.value)
                    builder = None
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0]
            yield Row(
                f"{bank.path}[{index or 1}]",
                problem=f"not valid JSON ({reason}): the file is not read from question {index or 1} on",
            )


class _Utf8Stream(io.RawIOBase):
    """A text stream read as UTF-8 bytes (for ijson, over a GB18030 or UTF-16 file)."""

    def __init__(self, text: io.TextIOBase):
        self._text, self._pending = text, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._text.read(1 << 16)
            if not chunk:
                return 0
            self._pending = chunk.encode("utf-8")
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size
