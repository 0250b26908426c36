"""A whole exam sheet photographed (typeset by KaTeX in Chromium, numbered questions under section
headers, options on their own lines), read by the real OCR model through the Flow, searched question
by question (issue 45): each question on the sheet finds its own question, not a twin that differs in
a number nor its neighbour on the page."""

from __future__ import annotations

import io
import json

import pytest
from conftest import running_flow
from docarray import Document, DocumentArray

from qbank.domain.segments import Segment, focus_segment, number_the_first, question_number, split_page
from qbank_client import QbankClient

SHEET = {  # question id -> (stem, options): printed in this order, numbered 1-3
    "sheet-set": ("已知集合A={1,2,3}，B={2,3,4}，则A∩B中元素的个数为", ["1", "2", "3", "4"]),
    "sheet-speed": ("一辆汽车以每小时60千米的速度行驶了3小时，它一共行驶了多少千米", ["120", "180", "200", "240"]),
    "sheet-salt": ("把20克食盐溶于80克水中，所得盐水的含盐率是多少", ["20%", "25%", "80%", "100%"]),
}
TWINS = {  # the same words with other numbers: what a whole-page text ranks instead
    "twin-set": "已知集合A={1,2,5}，B={2,5,7}，则A∩B中元素的个数为",
    "twin-speed": "一辆汽车以每小时80千米的速度行驶了2小时，它一共行驶了多少千米",
    "twin-salt": "把30克食盐溶于70克水中，所得盐水的含盐率是多少",
}


def test_lines_split_at_question_numbers_and_headers_in_reading_order():
    assert [question_number(line) for line in ("1. 已知", "12、下列", "例3 求", "第4题 如图")] == ["1", "12", "3", "4"]
    assert [question_number(line) for line in ("1.5米", "3.14", "（1）求", "A. 3", "一、选择题")] == [None] * 5
    assert question_number("3.2010年12月31日，我国山东地区") == "3"  # a stem starting with a year
    # a stem that starts with a number, read without its space: a question when it is the next one
    lines = ["4. 颈椎病中发病率最高的类型是", "A. 交感型", "5.110KV线路的自然功率为", "A.5180MW", "1.5米长的绳子"]
    boxes = [[10, 10 + 30 * i, 300, 35 + 30 * i] for i in range(len(lines))]
    segments = split_page(lines, boxes)
    assert [s.number for s in segments] == ["4", "5"]
    assert segments[1].text.startswith("110KV线路") and segments[1].text.endswith("1.5米长的绳子")
    lines = [
        "前一题的最后一行",
        "一、选择题",
        "1. 已知集合",
        "A. 1",
        "B. 2",
        "2. 下列函数",
        "是偶函数的是",
        "二、填空题",
        "3. 圆的面积",
    ]
    boxes = [[10, 10 + 30 * i, 300, 35 + 30 * i] for i in range(len(lines))]
    segments = split_page(lines, boxes)
    assert [(s.number, s.text) for s in segments] == [
        (None, "前一题的最后一行"),
        ("1", "已知集合A. 1B. 2"),
        ("2", "下列函数是偶函数的是"),
        ("3", "圆的面积"),
    ]
    assert segments[1].box == [10, 70, 300, 155]
    # two columns: the left one is read first, then the right, each top to bottom
    left, right = ["1. 左一", "A. 甲", "2. 左二"], ["3. 右三", "A. 丙", "4. 右四"]
    lines, boxes = [], []
    for row, (a, b) in enumerate(zip(left, right, strict=True)):
        lines += [b, a]  # OCR's order is not the reading order
        boxes += [[320, 10 + 30 * row, 600, 35 + 30 * row], [10, 10 + 30 * row, 280, 35 + 30 * row]]
    assert [s.number for s in split_page(lines, boxes)] == ["1", "2", "3", "4"]


def test_options_whose_labels_ocr_misread_as_numbers_stay_with_their_question():
    """On tilted CMMLU sheets OCR read "B." as "3.", "C." as "二." and "D." as "0.": none of them
    starts a question or a section; a real number after options printed in one row still does."""
    lines = [
        "1. 一问三不知出自左传，说的是哪三不知",
        "A. 天文、地理、文学",
        "3. 自己的姓名、籍贯",  # B
        "二. 孔子、孟子、老子",  # C
        "0.事情的开始、经过",  # D
        "2. 关于前馈控制的叙述中，正确的是",
        "A. 常在局部和短时间内发挥作用",
        "3. 具有滞后和波动的缺点",  # B, between A and C
        "C. 具有预见性，适应范围大",
        "D. 前馈控制不会发生失误",
        "3. 函数的最小正周期是",  # a real 3 after D
        "A. 1  B. 2  C. 3  D. 4",  # one row of options
        "8. 下列说法正确的是",  # after a row ending in D: a question
    ]
    boxes = [[10, 10 + 30 * i, 300, 35 + 30 * i] for i in range(len(lines))]
    assert [s.number for s in split_page(lines, boxes)] == ["1", "2", "3", "8"]
    assert "孔子" in split_page(lines, boxes)[0].text and "事情的开始" in split_page(lines, boxes)[0].text
    assert [question_number(line) for line in ("0. 甲", "00、乙")] == [None, None]
    cut = [Segment(None, ["李师傅是某市一普通农民"], [0, 0, 9, 9]), Segment("2", ["企业公共关系"], [0, 9, 9, 19])]
    assert [s.number for s in number_the_first(cut)] == ["1", "2"]  # its "1." cut off at the edge
    assert [s.number for s in number_the_first([Segment(None, ["甲"]), Segment("1", ["乙"])])] == [None, "1"]


def test_a_turned_two_column_page_is_read_column_by_column():
    """Turned 8 degrees, a left column's long lines reach past where the right column starts (as
    rectangles); put upright by the lines' own slope, the gap between the columns shows again."""
    import math

    left = ["1. 左栏第一题的题干写得比较长", "A. 甲", "2. 左栏第二题的题干也很长", "B. 乙"]
    right = ["3. 右栏第三题的题干写得很长", "A. 丙", "4. 右栏第四题的题干也很长", "B. 丁"]
    turn = math.radians(8)

    def corners(x0, y0, x1, y1):
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        return [[x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)] for x, y in points]

    lines, boxes = [], []
    for row, (a, b) in enumerate(zip(left, right, strict=True)):
        lines += [a, b]
        boxes += [corners(10, 100 + 40 * row, 480, 130 + 40 * row), corners(520, 100 + 40 * row, 990, 130 + 40 * row)]
    assert [s.number for s in split_page(lines, boxes)] == ["1", "2", "3", "4"]


def test_a_hurried_shot_focuses_on_the_question_whole_at_both_ends():
    cut_above = Segment(None, ["上一题剩下的半行字，没有题号"], [0, 0, 500, 30])
    target = Segment("2", ["一辆汽车以每小时6千米的速度行驶", "A. 18 B. 20"], [0, 40, 600, 120])
    half_below = Segment("3", ["把20克食盐溶于80克水中，所得盐水的含盐率是多少，写出过程"], [0, 130, 600, 260])
    # the neighbour cut at the bottom holds more text; the question another follows is the one meant
    assert focus_segment([cut_above, target, half_below]) is target
    assert focus_segment([cut_above, target]) is target  # cut above: the only numbered one
    assert focus_segment([target, half_below]) is target
    assert focus_segment([target]) is None  # one question: search all that was read
    assert focus_segment([target, Segment("4", ["短"], [0, 0, 5, 5])]) is target  # a fragment follows it
    assert focus_segment([cut_above, Segment(None, ["另一段没有题号的文字行"], [0, 40, 600, 80])]) is None
    first = Segment("1", ["一辆汽车以每小时8千米的速度行驶", "A. 16 B. 20"], [0, 0, 600, 40])
    assert focus_segment([first, target, half_below]) is None  # two whole questions: a sheet


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("sheet")) as urls:
        docs = DocumentArray()
        for qid, (stem, options) in SHEET.items():
            text = stem + "".join(f"\n{label}. {option}" for label, option in zip("ABCD", options, strict=True))
            docs.append(Document(id=f"{qid}:text:0", text=text, tags={"question_id": qid}))
        for qid, stem in TWINS.items():
            docs.append(Document(id=f"{qid}:text:0", text=stem, tags={"question_id": qid}))
        QbankClient(urls["grpc"]).index(docs)
        yield urls


@pytest.fixture(scope="module")
def sheet_photos() -> dict[str, bytes]:
    from qbank_devtools.photos import distort, pen_marks
    from qbank_devtools.typeset import Typesetter

    lines = ["一、选择题"]
    for number, (stem, options) in enumerate(SHEET.values(), 1):
        if number == 3:
            lines.append("二、填空题")
        lines.append(f"{number}. {stem}")
        lines += [f"{label}. {option}" for label, option in zip("ABCD", options, strict=True)]
    photos = {}
    with Typesetter() as typesetter:
        page, boxes = typesetter.page_with_boxes(lines)
        two_columns = typesetter.page(lines, columns=2)  # a question may run on into the right column
    # a hurried shot of question 2: the last option of question 1 above it, half of question 3 below
    second, third = lines.index(f"2. {SHEET['sheet-speed'][0]}"), lines.index(f"3. {SHEET['sheet-salt'][0]}")
    buffer = io.BytesIO()
    page.crop((0, boxes[second - 1][1], page.width, boxes[third][3])).save(buffer, format="JPEG", quality=90)
    photos["hurried"] = buffer.getvalue()
    # question 1 as a student marked it: underlines, a circled option, a tick, a handwritten answer
    first = lines.index(f"1. {SHEET['sheet-set'][0]}")
    top, bottom = boxes[first][1] - 10, boxes[first + 4][3] + 10
    crop = page.crop((0, top, page.width, bottom))
    shifted = [(b[0], b[1] - top, b[2], b[3] - top) for b in boxes[first : first + 5]]
    buffer = io.BytesIO()
    pen_marks(crop, shifted, seed=5).save(buffer, format="JPEG", quality=90)
    photos["pen"] = buffer.getvalue()
    for kind in ("clean", "tilted", "jpeg40"):
        buffer = io.BytesIO()
        distort(page, kind, seed=3).save(buffer, format="JPEG", quality=90)
        photos[kind] = buffer.getvalue()
    buffer = io.BytesIO()
    distort(two_columns, "tilted", seed=4).save(buffer, format="JPEG", quality=90)
    photos["two columns"] = buffer.getvalue()
    return photos


@pytest.mark.service
@pytest.mark.parametrize("kind", ["clean", "tilted", "jpeg40", "two columns"])
def test_a_sheet_photo_answers_each_question_with_its_box(flow, sheet_photos, kind):
    found = QbankClient(flow["grpc"]).photo_search(sheet_photos[kind], limit=3, page=True)
    segments = found["segments"]
    assert [s["number"] for s in segments] == ["1", "2", "3"], [(s["number"], s["text"]) for s in segments]
    for segment, qid in zip(segments, SHEET, strict=True):
        assert segment["questions"][0].question_id == qid, (segment["text"], segment["questions"][:2])
    boxes = [s["box"] for s in segments]
    if kind != "two columns":  # in two columns the right one starts at the top again
        assert all(a[3] <= b[1] + 5 for a, b in zip(boxes, boxes[1:], strict=False))  # top to bottom, apart
    plain = QbankClient(flow["grpc"]).photo_search(sheet_photos[kind], limit=3)
    assert plain["segments"] == [] and plain["questions"]  # a photo without page keeps its answer


@pytest.mark.service
def test_a_hurried_shot_holding_part_of_its_neighbours_finds_the_question_it_is_of(flow, sheet_photos):
    """Without page, a photo holding its question, a line of the one above and half of the one below
    is searched by the words of the question it is mostly of (``focus``, with its box), not by all it
    read: the neighbours' words no longer rank their own questions."""
    found = QbankClient(flow["grpc"]).photo_search(sheet_photos["hurried"], limit=3)
    assert "食盐" in found["text"] and "食盐" not in found["focus"], found["focus"]
    assert "汽车" in found["focus"] and found["focus_box"][3] > found["focus_box"][1]
    assert found["questions"][0].question_id == "sheet-speed", found["questions"][:3]


@pytest.mark.service
def test_a_question_with_a_students_pen_marks_finds_its_question(flow, sheet_photos):
    """Underlines through its lines, a circled option, a tick and a handwritten answer in a Kai face
    (fonts-arphic-ukai) over the question: still its question at rank 1, not its twin."""
    found = QbankClient(flow["grpc"]).photo_search(sheet_photos["pen"], limit=3)
    assert found["questions"][0].question_id == "sheet-set", (found["text"], found["questions"][:3])


@pytest.mark.service
def test_qbank_photo_page_prints_a_block_per_question(flow, sheet_photos, tmp_path, capsys):
    from qbank_client.cli import main

    photo = tmp_path / "sheet.jpg"
    photo.write_bytes(sheet_photos["clean"])
    assert main(["--url", flow["grpc"], "photo", str(photo), "--page", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 questions found on the page") and out.count("question ") >= 3
    assert main(["--url", flow["grpc"], "--json", "photo", str(photo), "--page", "--limit", "1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [s["questions"][0]["question_id"] for s in payload["segments"]] == list(SHEET)
