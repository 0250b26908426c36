"""A photographed page split into its questions, from the lines OCR read and where they stand.

Students photograph whole exam sheets and workbook pages; read as one text, a sheet's questions run
together ("…极坐标方程 13. △ABC 的内角…") and the whole text ranks one question, or a neighbour.
What separates them survives OCR: the question numbers and the section headers of Chinese exams
(``1.`` ``1、`` ``例3`` ``第4题``, ``一、选择题``). A question starts at a line that begins with one;
its options (``A.``-``D.``) and sub-questions (``（1）`` ``(2)``) stay with it. Lines are put in
reading order first: rows top to bottom, left to right within a row, and a page in two columns
(a clear vertical gap that no line crosses) read column by column.

Pure: lines in, segments out; the reader (qbank.service.reader) calls it, the indexer searches each.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The number a question starts with: "12." "12、" "12．" (not "1.5" or "3.14", a decimal; but
# "1.2019年": a stem that starts with a year, read without its space), "例3", "第4题".
_QUESTION_START = re.compile(r"^\s*(?:(\d{1,3})\s*[.、,](?!\d{1,3}(?!\d))|例\s*(\d{1,3})|第\s*(\d{1,3})\s*题)")
# A section header: "一、选择题", "二. 填空题（每题5分）" — it ends the question before it.
_SECTION = re.compile(r"^\s*[一二三四五六七八九十]{1,3}\s*[、.]")
# Of the page's width: the empty band between two columns. A sheet photographed small (600 px) and
# turned kept 3.5 % between its columns' line boxes (bench/realphoto.py); a one-column page's stems
# cross the middle, so a narrow band does not split it.
_COLUMN_GAP = 0.025


@dataclass
class Segment:
    """One question of a page: its number as printed (None for the lines above the first number,
    such as the end of a question cut off at the top), its text and its box [left, top, right,
    bottom] in the photo's pixels."""

    number: str | None
    lines: list[str] = field(default_factory=list)
    box: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return unicodedata.normalize("NFKC", "".join(self.lines)).strip()

    def add(self, line: str, box: list[float]) -> None:
        self.lines.append(line)
        if not self.box:
            self.box = list(box)
        else:
            self.box = [
                min(self.box[0], box[0]),
                min(self.box[1], box[1]),
                max(self.box[2], box[2]),
                max(self.box[3], box[3]),
            ]


def _values(box: Any) -> list[float]:
    """A box's numbers in order: 4 corner points (OCR's array or nested lists) or a rectangle."""
    return [float(v) for v in (box.flatten().tolist() if hasattr(box, "flatten") else _flat(box))]


def _rect(values: list[float]) -> list[float]:
    """[left, top, right, bottom] of a box's :func:`_values`."""
    if len(values) == 4:
        return values
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def _flat(points: Any) -> list[float]:
    out: list[float] = []
    for p in points:
        out.extend(_flat(p) if isinstance(p, list | tuple) else [p])
    return out


# An option's label: "A." "B、" "C．" "(D)" — the option lines of a question stay with it.
_OPTION = re.compile(r"^\s*[(（]?\s*([A-H])\s*[.、,)）:：]")
# What OCR reads an option's label as on a tilted or blurred photo (CMMLU sheets, bench/realphoto.py):
# "B." as "3." or "8.", "D." as "0.".
_LABEL_MISREADS = {"B": {"3", "8"}, "D": {"0"}}


_OPTION_INSIDE = re.compile(r"(?:^|[\s)）])\s*[(（]?([A-H])\s*[.、,)）:：]")


def option_label(line: str) -> str | None:
    """The option letter a line starts with ("A." -> "A"), or None."""
    match = _OPTION.match(unicodedata.normalize("NFKC", line))
    return match.group(1) if match else None


def _last_option(line: str) -> str | None:
    """The last option letter of a line that starts with an option: "A. 1  B. 2  C. 3  D. 4" is D
    (short options printed in one row, which OCR may read as one line)."""
    if option_label(line) is None:
        return None
    return max(m.group(1) for m in _OPTION_INSIDE.finditer(unicodedata.normalize("NFKC", line)))


def question_number(line: str) -> str | None:
    """The question number a line starts with, or None (never 0: no paper numbers a question 0,
    and OCR reads option D's label as 0)."""
    match = _QUESTION_START.match(unicodedata.normalize("NFKC", line))
    number = next((g for g in match.groups() if g), None) if match else None
    return number if number is not None and int(number) > 0 else None


# A line that starts like a decimal, "5.110KV…", "3.18世纪末…": a question whose stem starts with a
# number, read without its space, when the number is the next one on the page (held-out CMMLU sheets,
# bench/realphoto.py --seed 7); otherwise a wrapped line of a stem ("1.5米").
_DECIMAL_START = re.compile(r"^\s*(\d{1,3})\s*[.．]")


def _next_number(line: str, last: int | None) -> str | None:
    """The question number a decimal-looking line starts with, if it is the one after ``last``."""
    match = _DECIMAL_START.match(unicodedata.normalize("NFKC", line))
    if match is None or last is None or int(match.group(1)) != last + 1:
        return None
    return match.group(1)


def _is_section(line: str) -> bool:
    """Whether a line is a section header ("一、选择题", "二、填空题（每题5分）", "三、写作"): a
    Chinese numeral, then a short title or one that names its questions (题). An option whose label
    OCR read as a numeral ("二. 孔子、孟子、老子") is neither."""
    text = unicodedata.normalize("NFKC", line)
    match = _SECTION.match(text)
    if match is None:
        return False
    title = text[match.end() :].strip()
    return "题" in title or "部分" in title or len(title) <= 6


def _columns(rects: list[list[float]]) -> float | None:
    """The x of a gap that splits the page into two columns (no line crosses it, lines on both
    sides), or None for one column."""
    left, right = min(r[0] for r in rects), max(r[2] for r in rects)
    width = right - left
    if width <= 0 or len(rects) < 4:
        return None
    covered = sorted((r[0], r[2]) for r in rects)
    best, best_gap = None, _COLUMN_GAP * width
    reach = covered[0][1]
    for start, end in covered[1:]:
        if start - reach > best_gap and 0.3 * width < (start + reach) / 2 - left < 0.7 * width:
            best, best_gap = (start + reach) / 2, start - reach
        reach = max(reach, end)
    if best is None:
        return None
    sides = [sum(1 for r in rects if r[2] <= best), sum(1 for r in rects if r[0] >= best)]
    return best if min(sides) >= 2 else None


def _skew(boxes: list[list[float]]) -> float:
    """The page's rotation in radians: the median slope of its long lines' top edges (OCR gives
    each line's 4 corners, top-left first); 0 when the boxes are plain rectangles. ``boxes``: each
    box's :func:`_values`."""
    slopes = []
    for values in boxes:
        if len(values) != 8:
            continue
        (x0, y0, x1, y1), (x3, y3) = values[:4], values[6:8]
        width, height = math.hypot(x1 - x0, y1 - y0), math.hypot(x3 - x0, y3 - y0)
        if width > 3 * height > 0:
            slopes.append(math.atan2(y1 - y0, x1 - x0))
    return statistics.median(slopes) if slopes else 0.0


def _upright(boxes: list[list[float]], angle: float) -> list[list[float]]:
    """Each box (its :func:`_values`) as [left, top, right, bottom] after turning the page back by
    ``angle``: a photo turned 8 degrees slants a column's edge across the gap between two columns,
    and a row's lines out of their row."""
    if not angle:
        return [_rect(values) for values in boxes]
    cos, sin = math.cos(-angle), math.sin(-angle)
    rects = []
    for values in boxes:
        if len(values) == 4:
            values = [values[0], values[1], values[2], values[1], values[2], values[3], values[0], values[3]]
        xs = [x * cos - y * sin for x, y in zip(values[0::2], values[1::2], strict=True)]
        ys = [x * sin + y * cos for x, y in zip(values[0::2], values[1::2], strict=True)]
        rects.append([min(xs), min(ys), max(xs), max(ys)])
    return rects


def _option_in_disguise(before: str | None, after: str | None, number: str) -> bool:
    """Whether a line read as question ``number`` is an option whose label OCR misread: between
    option ``before`` and option ``after`` two letters on it is the letter between, whatever it
    reads; right after option A it is B if it reads 3 or 8, after C it is D if it reads 0."""
    if before is None:
        return False
    if after is not None and ord(after) == ord(before) + 2:
        return True
    return number in _LABEL_MISREADS.get(chr(ord(before) + 1), set())


def _reading_order(rects: list[list[float]]) -> list[int]:
    """Line indexes in reading order: rows top to bottom (lines whose middles lie within each
    other's height), left to right within a row."""
    order = sorted(range(len(rects)), key=lambda i: (rects[i][1] + rects[i][3]) / 2)
    rows: list[list[int]] = []
    for i in order:
        middle = (rects[i][1] + rects[i][3]) / 2
        if rows:
            last = rects[rows[-1][0]]
            if last[1] <= middle <= last[3]:
                rows[-1].append(i)
                continue
        rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: rects[j][0])]


def split_page(lines: Sequence[str], boxes: Sequence[Any]) -> list[Segment]:
    """The questions of a page from its OCR lines and their boxes (see the module's rules); lines
    of section headers are left out. One segment when the page has no question numbers."""
    if not lines:
        return []
    values = [_values(b) for b in boxes]
    placed = [_rect(v) for v in values]  # where each line is on the photo, for the segments' boxes
    rects = _upright(values, _skew(values))  # where it is on the page, for the reading order
    split = _columns(rects)
    if split is None:
        order = _reading_order(rects)
    else:
        left = [i for i, r in enumerate(rects) if (r[0] + r[2]) / 2 < split]
        right = [i for i, r in enumerate(rects) if (r[0] + r[2]) / 2 >= split]
        order = [left[i] for i in _reading_order([rects[j] for j in left])]
        order += [right[i] for i in _reading_order([rects[j] for j in right])]
    segments: list[Segment] = []
    current: Segment | None = None
    options = [option_label(lines[i]) for i in order]
    numbers = [question_number(lines[i]) for i in order]
    last_option: str | None = None  # the option letter of the last labelled line, as it was meant
    last_number: int | None = None  # the last question number on the page
    for at, i in enumerate(order):
        line = lines[i]
        number = numbers[at]
        following = _next_number(line, last_number) if number is None and options[at] is None else None
        if following is not None:
            number = following
        if options[at] is not None or number is not None:
            after = next(
                (o for o, n in zip(options[at + 1 :], numbers[at + 1 :], strict=True) if o or n),
                None,
            )
            if number is not None and current is not None and _option_in_disguise(last_option, after, number):
                number = None
                last_option = chr(ord(last_option) + 1)
            else:
                last_option = _last_option(line) if options[at] else None
        if number is None and _is_section(line):
            current = None  # a header ends the question before it and belongs to none
            last_option = None
            continue
        if number is not None or current is None:
            current = Segment(number)
            segments.append(current)
        if number is not None:  # the number itself is no word of the question
            last_number = int(number)
            pattern = _DECIMAL_START if number == following else _QUESTION_START
            line = pattern.sub("", unicodedata.normalize("NFKC", line), count=1)
        current.add(line, placed[i])
    return [s for s in segments if s.text]


# A segment shorter than this is a fragment (a neighbour's line cut at the photo's edge, a heading),
# never the question a photo is of.
_FOCUS_MIN_CHARS = 8


def focus_segment(segments: Sequence[Segment]) -> Segment | None:
    """The question a hurried shot is of, or None to search all that was read.

    A hurried shot holds its question and part of a neighbour ("…极坐标方程 13. △ABC 的内角…");
    searched as one text, the neighbour's words outranked the question. What a crop cuts is its
    edges: a question cut at the top has lost its number (the lines above the first number), one
    cut at the bottom is the last on the photo. So the question the shot is of is the numbered one
    that another follows (whole at both ends), else the only numbered one. Measured on CMMLU
    (bench/realphoto.py, 40 shots each): the one with the most text picked half of a long neighbour
    below over a short question (0.550 at rank 1 against 0.650 for all the text).

    A photo with two or more whole questions is a sheet, not a hurried shot: None (``page: true``
    answers each), as for one question alone (nothing to choose); a fragment under 8 characters (a
    neighbour's line cut at the edge) is never the question, though it shows where one ended."""
    whole = [s for s in segments if len(s.text) >= _FOCUS_MIN_CHARS and s.box]
    if len(segments) < 2 or not whole:
        return None
    numbered = [s for s in whole if s.number is not None]
    followed = [s for s in numbered if s is not segments[-1]]
    if len(followed) >= 2:
        return None
    if followed:
        return followed[0]
    return numbered[0] if len(numbered) == 1 else None


def number_the_first(segments: list[Segment]) -> list[Segment]:
    """A page's first question without a number, followed by question n > 1, is question n - 1:
    its number was cut off at the photo's edge or not read (a tilted sheet lost its "1." to the edge).
    For whole pages only: a hurried shot's unnumbered lines are a neighbour cut at the top."""
    if len(segments) >= 2 and segments[0].number is None and segments[1].number not in (None, "1"):
        segments[0].number = str(int(segments[1].number) - 1)
    return segments
