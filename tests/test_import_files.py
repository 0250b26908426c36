"""Banks as Chinese teams export them, through a real `qbank import` (and a real Flow where rows are
stored): GBK/GB18030/UTF-16/BOM files made from CMMLU with iconv, .xlsx written by openpyxl, CSVs
with a 150 KB field and an encoding break, JSONL lines nested 100,000 deep, duplicate ids, data:
images, hostile rows beside good ones in one batch, a service that refuses or goes away. Every good
row stored, every bad row named with its line, the exit code as documented."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, png_bytes, running_flow

from qbank_client import QbankClient
from qbank_client.bank import FieldMap, open_bank
from qbank_client.sources import MAX_COLUMNS, MAX_ROW_BYTES

CMMLU = REPO.parent / "shared" / "data" / "cmmlu"
PHYSICS = CMMLU / "test" / "high_school_physics.csv"
CMMLU_MAP = ["--map", "stem=Question", "--map", "options=A,B,C,D", "--map", "answer=Answer"]
needs_cmmlu = pytest.mark.skipif(not PHYSICS.is_file(), reason="../shared/data/cmmlu is not beside the checkout")


def qbank(*args: str, url: str = "grpc://127.0.0.1:9", timeout: float = 300) -> tuple[int, dict | None, str]:
    """`qbank --json ...` as a user runs it: (exit code, the JSON summary when printed, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "qbank_client.cli", "--url", url, "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        payload = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        payload = None
    return done.returncode, payload, done.stderr


def iconv(source: Path, target: Path, encoding: str) -> Path:
    """The file as another encoding, by the system's iconv (what a team's export tool writes)."""
    with target.open("wb") as out:
        subprocess.run(["iconv", "-f", "UTF-8", "-t", encoding, str(source)], stdout=out, check=True)
    return target


def line_of(message: str) -> int:
    """The line (or sheet row) a message names: ``/path/bank.csv:12: why``."""
    return int(re.search(r"\.\w+(?:\[[^\]]*\])?:(\d+)", message).group(1))


def cmmlu_rows(limit: int | None = None) -> list[dict]:
    with PHYSICS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[:limit] if limit else rows


# -- reading (no service) -----------------------------------------------------------------------


@pytest.mark.service
@needs_cmmlu
def test_gbk_gb18030_utf16_and_bom_files_read_as_their_utf8_original(tmp_path):
    fields = FieldMap.parse(["stem=Question", "options=A,B,C,D", "answer=Answer"], ["subject={file}"])
    original = [(q.stem, q.tags["answer"]) for q in open_bank(PHYSICS, fields).rows()]
    assert len(original) == len(cmmlu_rows()) and "A." in original[0][0]
    marketing = CMMLU / "test" / "marketing.csv"  # one of the files GBK can hold
    variants = {
        "gbk.csv": (iconv(marketing, tmp_path / "gbk.csv", "GBK"), "GB18030", marketing),
        "gb18030.csv": (iconv(PHYSICS, tmp_path / "gb18030.csv", "GB18030"), "GB18030", PHYSICS),
        "utf16.csv": (iconv(PHYSICS, tmp_path / "utf16.csv", "UTF-16"), "UTF-16", PHYSICS),
        "bom.csv": (tmp_path / "bom.csv", "UTF-8-SIG", PHYSICS),
    }
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + PHYSICS.read_bytes())
    for name, (path, encoding, source) in variants.items():
        bank = open_bank(path, fields)
        assert encoding in bank.files[0].describe(), name
        got = [(q.stem, q.tags["answer"]) for q in bank.rows()]
        expected = [(q.stem, q.tags["answer"]) for q in open_bank(source, fields).rows()]
        assert got == expected, name
        assert all(q.tags["subject"] == path.stem for q in open_bank(path, fields).rows())
    # JSONL and a JSON array with a BOM, and a GB18030 JSONL: every question, the first included
    questions = [
        {"id": f"p{i}", "stem": r["Question"], "options": [r[k] for k in "ABCD"]} for i, r in enumerate(cmmlu_rows(40))
    ]
    text = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions)
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "gb.jsonl").write_bytes(text.encode("gb18030"))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(questions, ensure_ascii=False).encode("utf-8"))
    (tmp_path / "utf16.json").write_bytes(json.dumps(questions, ensure_ascii=False).encode("utf-16"))
    for name in ("bom.jsonl", "gb.jsonl", "bom.json", "utf16.json"):
        read = list(open_bank(tmp_path / name).rows())
        assert [q.id for q in read] == [q["id"] for q in questions], name
        assert read[0].stem.startswith(questions[0]["stem"]), name
    # a forced encoding is used as given
    assert "GB18030 (given)" in open_bank(tmp_path / "gb.jsonl", encoding="gb18030").files[0].describe()
    rc, _, err = qbank("import", str(tmp_path / "gb.jsonl"), "--encoding", "klingon", "--check")
    assert rc == 2 and "no such encoding" in err


@pytest.mark.service
def test_xlsx_every_sheet_or_one_with_the_same_map(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    first = book.active
    first.title = "选择题"
    first.append(["题号", "题目", "A", "B", "C", "D", "答案", "难度"])
    for n in range(1, 13):
        first.append([1000 + n, f"第{n}题：下列说法正确的是", "甲", "乙", "丙", "丁", "C", 0.5 if n % 2 else 3.0])
    second = book.create_sheet("填空题")
    second.append(["题号", "题目", "答案"])
    second.append([2001, "圆的周长公式是____", "C=2πr"])
    book.create_sheet("空白")  # workbooks carry empty sheets: skipped, not an error
    path = tmp_path / "bank.xlsx"
    book.save(path)
    fields = FieldMap.parse(["id=题号", "stem=题目", "options=A,B,C,D", "answer=答案"], ["type={sheet}"])
    rows = list(open_bank(path, fields).rows())
    assert [q.id for q in rows] == [str(1000 + n) for n in range(1, 13)] + ["2001"]
    assert rows[0].tags["type"] == "选择题" and rows[-1].tags["type"] == "填空题"
    assert rows[0].stem.endswith("D. 丁") and rows[0].tags["难度"] == "0.5" and rows[1].tags["难度"] == "3"
    assert rows[0].source.endswith("[选择题]:2")
    # a column one sheet lacks (填空题 has no options) is named; one no sheet has is refused
    command = ["import", str(path), "--map", "id=题号", "--map", "stem=题目", "--map", "options=A,B,C,D", "--check"]
    rc, summary, err = qbank(*command)
    assert rc == 0 and summary["questions"] == 13 and "[填空题]: no column 'A'" in err
    rc, _, err = qbank("import", str(path), "--map", "stem=题目", "--map", "answer=正确答案", "--check")
    assert rc == 2 and "no column '正确答案'" in err and "'答案'" in err
    one = list(open_bank(path, FieldMap.parse(["id=题号", "stem=题目"]), sheet="填空题").rows())
    assert [q.id for q in one] == ["2001"]
    rc, _, err = qbank("import", str(path), "--sheet", "附加题", "--check")
    assert rc == 2 and "no sheet '附加题'" in err and "选择题" in err


@pytest.mark.service
@needs_cmmlu
def test_mappings_are_checked_against_the_header_before_anything_is_read(tmp_path):
    bank = shutil.copy(PHYSICS, tmp_path / "physics.csv")
    rc, _, err = qbank("import", str(bank), "--check")  # no --map: the columns, and a suggestion
    assert rc == 2 and "no column holds the stem" in err and "'Question'" in err
    assert "--map stem=Question" in err and "--map options=A,B,C,D" in err
    rc, _, err = qbank("import", str(bank), "--map", "stem=Qestion", "--check")
    assert rc == 2 and "no column 'Qestion'" in err and "'Question'" in err
    rc, _, err = qbank("import", str(bank), "--map", "stem=Question", "--map", "stem=A", "--check")
    assert rc == 2 and "already mapped" in err
    rc, _, err = qbank("import", str(bank), *CMMLU_MAP, "--map", "subject=化学", "--check")
    assert rc == 2 and "no column '化学'" in err
    rc, summary, err = qbank("import", str(bank), *CMMLU_MAP, "--map", "id=#1", "--set", "subject={file}", "--check")
    assert rc == 0 and summary["questions"] == len(cmmlu_rows()) and summary["complete"], err
    fields = FieldMap.parse(["id=#1", "stem=Question"], ["subject={file}", "source=CMMLU"])
    question = next(iter(open_bank(bank, fields).rows()))
    assert question.id == "0" and question.tags["subject"] == "physics" and question.tags["source"] == "CMMLU"
    (tmp_path / "dup.csv").write_text("id,stem,stem\n1,甲,乙\n", encoding="utf-8")
    rc, _, err = qbank("import", str(tmp_path / "dup.csv"), "--check")
    assert rc == 2 and "2 columns named 'stem'" in err and "--map stem=#2" in err
    rc, summary, _ = qbank("import", str(tmp_path / "dup.csv"), "--map", "stem=#3", "--check")
    assert rc == 0 and summary["questions"] == 1
    for name, words in (("bank.xls", "old Excel"), ("bank.txt", "plain text"), ("bank.yaml", "unknown bank format")):
        (tmp_path / name).write_text("x", encoding="utf-8")
        rc, _, err = qbank("import", str(tmp_path / name), "--check")
        assert rc == 2 and words in err, name
    (tmp_path / "m.jsonl").write_text('{"id": "1", "题干": "甲"}\n{"id": "2", "题干": "乙"}\n', encoding="utf-8")
    rc, _, err = qbank("import", str(tmp_path / "m.jsonl"), "--map", "stem=题目", "--check")  # JSONL: its first row
    assert rc == 2 and "no field '题目'" in err and "'题干'" in err
    rc, summary, _ = qbank("import", str(tmp_path / "m.jsonl"), "--map", "stem=题干", "--check")
    assert rc == 0 and summary["questions"] == 2
    wide = tmp_path / "wide.csv"  # a header of 1,000,000 columns: refused by its limit, in flat memory
    wide.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "x," * 999_999 + "x\n", encoding="utf-8")
    rc, _, err = qbank("import", str(wide), "--check")
    assert rc == 2 and f"over the limit of {MAX_COLUMNS}" in err


@pytest.mark.service
def test_a_bad_row_is_named_by_its_line_and_reading_goes_on(tmp_path):
    rows = [["id", "stem", "answer"]] + [[f"c{n}", f"第{n}题 已知函数f(x)=x^2，求f({n})", "B"] for n in range(1, 1601)]
    rows[5][1] = "长" * 150_000  # a 450 KB field: over the csv module's 128 KiB and over the text limit
    rows[7][1] = "含\n换行\n的题干"  # a quoted field over three lines: the next rows keep their line numbers
    path = tmp_path / "bank.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    data = path.read_bytes()
    broken_at = data.index("第1502题".encode())
    path.write_bytes(data[:broken_at] + "第1502题".encode("gbk") + data[broken_at + len("第1502题".encode()) :])
    rc, summary, err = qbank("import", str(path), "--check")
    assert rc == 1, err
    bad = {line_of(b): b for b in summary["bad_rows"]}
    assert sorted(bad) == [6, 1505]  # header + 5 rows; 3 lines of row 8 push row 1502 to line 1505
    assert "150000 characters" in bad[6] and "QBANK_MAX_TEXT_CHARS" in bad[6]
    assert "not valid UTF-8" in bad[1505] and "line 1505" in bad[1505]
    assert summary["questions"] == 1598  # every other row, those after the long field and the break too

    lines = [json.dumps({"id": f"j{n}", "stem": f"第{n}题"}) for n in range(1, 11)]
    lines[2] = "[" * 100_000 + "]" * 100_000  # nested 100,000 deep
    lines[4] = '{"id": "big", "stem": "x", "n": ' + "9" * 5000 + "}"  # a 5,000-digit number
    lines[6] = json.dumps({"id": "deep", "stem": "x", "meta": json.loads("[" * 40 + "]" * 40)})
    lines[8] = json.dumps({"id": "huge", "stem": "x" * (MAX_ROW_BYTES + 10)})  # one line over MAX_ROW_BYTES
    (tmp_path / "bank.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.monotonic()
    rc, summary, err = qbank("import", str(tmp_path / "bank.jsonl"), "--check")
    assert rc == 1 and time.monotonic() - started < 60, err
    bad = {line_of(b): b for b in summary["bad_rows"]}
    assert sorted(bad) == [3, 5, 7, 9] and summary["questions"] == 6
    assert "nested deeper than" in bad[3] and "nested deeper than" in bad[7]
    assert "digits" in bad[5] and f"over {MAX_ROW_BYTES} bytes" in bad[9]


@pytest.mark.service
def test_duplicate_ids_are_named_and_the_first_is_kept_and_strict_refuses(tmp_path):
    lines = [
        {"id": "d1", "stem": "第一次出现"},
        {"id": "d2", "stem": "乙"},
        {"id": "d1", "stem": "第二次出现，内容不同"},
    ]
    lines.append({"id": "d2", "stem": "乙"})  # the same row again
    (tmp_path / "bank.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8"
    )
    rc, summary, _ = qbank("import", str(tmp_path / "bank.jsonl"), "--check")
    assert rc == 1 and summary["questions"] == 2 and summary["conflicts"] == 1
    first, second = summary["duplicates"]
    assert first.startswith(f"{tmp_path / 'bank.jsonl'}:3") and "bank.jsonl:1" in first and "different content" in first
    assert second.startswith(f"{tmp_path / 'bank.jsonl'}:4") and "the same content" in second
    rc, _, err = qbank("import", str(tmp_path / "bank.jsonl"), "--strict")
    assert rc == 1 and "--strict" in err and "nothing imported" in err


# -- through a real Flow -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("import-files")) as urls:
        yield urls


def stored_stem(client: QbankClient, question_id: str) -> str:
    items = client.questions([question_id]).get(question_id)
    return next(d.text for d in items if d.id.endswith(":text:0")) if items else ""


@pytest.mark.service
@needs_cmmlu
def test_thirty_good_rows_are_stored_beside_hostile_ones_in_one_batch(flow, tmp_path):
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "not-an-image.png").write_bytes(b"GIF89a but not really an image" * 10)
    good = [
        {"id": f"g{i}", "stem": r["Question"], "options": [r[k] for k in "ABCD"], "answer": r["Answer"]}
        for i, r in enumerate(cmmlu_rows(30))
    ]
    inline = base64.b64encode(png_bytes(7)).decode()
    hostile = [
        {"id": "g3", "stem": "同一编号，另一道题"},  # duplicate id, different content
        {"id": "long", "stem": "长" * 20_001},
        {"id": "analysis", "stem": "解析太长", "analysis": "解" * 24_000},  # 70 KB of UTF-8
        {"id": "options", "stem": "选项太多", "options": {f"L{i}": "选项" for i in range(3000)}},
        {"id": "notimage", "stem": "图不是图片", "figures": ["figs/not-an-image.png"]},
        {"id": "inline", "stem": f'<p>如图，求阴影部分面积。<img src="data:image/png;base64,{inline}"></p>'},
    ]
    rows = good[:10] + hostile[:3] + good[10:20] + hostile[3:] + good[20:]
    bank = tmp_path / "bank.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines += ["[" * 100_000 + "]" * 100_000, '{"id": "big", "stem": "x", "n": ' + "9" * 5000 + "}"]  # lines 37, 38
    bank.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, summary, err = qbank("import", str(bank), "--batch-size", "32", url=flow["grpc"])
    assert rc == 1, err
    bad = {line_of(b): b for b in summary["bad_rows"]}
    assert sorted(bad) == [12, 13, 24, 25, 37, 38], summary["bad_rows"]
    assert "20001 characters" in bad[12] and "QBANK_MAX_TEXT_CHARS" in bad[12]
    assert "QBANK_MAX_TAG_BYTES" in bad[13] and "'analysis'" in bad[13]
    assert "3000 options" in bad[24] and "not a readable image" in bad[25]
    assert "nested deeper" in bad[37] and "digits" in bad[38]
    assert len(summary["duplicates"]) == 1 and summary["duplicates"][0].startswith(f"{bank}:11")
    assert summary["imported"] == 31 and summary["failed"] == [] and summary["items_sent"] == 32
    client = QbankClient(flow["grpc"])
    assert client.existing([f"g{i}:text:0" for i in range(30)]) == {f"g{i}:text:0" for i in range(30)}
    assert stored_stem(client, "g3").startswith(good[3]["stem"])  # the first row with the id
    assert client.existing(["inline:image:0"]) == {"inline:image:0"}  # the data: image became its figure
    assert "base64" not in stored_stem(client, "inline") and "inline:1" in stored_stem(client, "inline")
    rc, summary, _ = qbank("import", str(bank), url=flow["grpc"])  # again: the same one kept, all skipped
    assert rc == 1 and summary["items_sent"] == 0 and summary["imported"] == 31
    assert stored_stem(client, "g3").startswith(good[3]["stem"])


@pytest.mark.service
@needs_cmmlu
def test_a_gbk_csv_and_an_xlsx_of_cmmlu_import_whole(flow, tmp_path):
    import openpyxl

    folder = tmp_path / "bank"
    folder.mkdir()
    iconv(CMMLU / "test" / "marketing.csv", folder / "marketing.csv", "GBK")
    book = openpyxl.Workbook()
    book.active.append(["", "Question", "A", "B", "C", "D", "Answer"])
    for n, row in enumerate(cmmlu_rows(50)):
        book.active.append([n, row["Question"], row["A"], row["B"], row["C"], row["D"], row["Answer"]])
    book.save(folder / "physics.xlsx")
    (folder / "notes.txt").write_text("不是题库", encoding="utf-8")
    rows = sum(1 for _ in csv.reader((CMMLU / "test" / "marketing.csv").open(encoding="utf-8"))) - 1
    command = ["import", str(folder), *CMMLU_MAP, "--set", "subject={file}", "--batch-size", "16"]
    rc, summary, err = qbank(*command, url=flow["grpc"])
    assert rc == 0 and summary["complete"], err
    assert summary["imported"] == rows + 50 and "GB18030 (detected)" in err and "notes.txt" in err
    client = QbankClient(flow["grpc"])
    assert client.count(subject="marketing") == rows and client.count(subject="physics") == 50
    rc, summary, _ = qbank(*command, url=flow["grpc"])  # resumed: nothing sent again
    assert rc == 0 and summary["items_sent"] == 0 and summary["items_skipped"] == rows + 50


@pytest.mark.service
def test_a_csv_with_a_long_field_and_an_encoding_break_stores_every_other_row(flow, tmp_path):
    rows = [["id", "stem"]] + [[f"e{n}", f"第{n}题 下列说法正确的是"] for n in range(40)]
    rows[10][1] = "长" * 50_000  # 150 KB of UTF-8: over the csv module's own limit
    path = tmp_path / "bank.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    data = path.read_bytes().replace("第30题".encode(), "第30题".encode("gbk"))
    path.write_bytes(data)
    rc, summary, err = qbank("import", str(path), "--batch-size", "8", url=flow["grpc"])
    assert rc == 1 and sorted(line_of(b) for b in summary["bad_rows"]) == [11, 32], err
    assert summary["imported"] == 38 and QbankClient(flow["grpc"]).count() >= 38
    stored = QbankClient(flow["grpc"]).existing([f"e{n}:text:0" for n in range(40)])
    assert stored == {f"e{n}:text:0" for n in range(40) if n not in (9, 30)}


@pytest.mark.service
def test_a_batch_the_service_refuses_is_split_and_only_the_refused_row_is_lost(tiny_model, tmp_path):
    """The service runs with smaller limits than the client knows (QBANK_MAX_TEXT_CHARS=300): the
    encoder refuses the batch, and the client resends the rest."""
    lines = [{"id": f"s{n}", "stem": f"第{n}题 求函数的最小值"} for n in range(20)]
    lines[7]["stem"] = "长" * 400
    (tmp_path / "bank.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8"
    )
    with running_flow(model=tiny_model, data_dir=tmp_path / "data", max_text_chars=300) as urls:
        rc, summary, err = qbank("import", str(tmp_path / "bank.jsonl"), "--batch-size", "20", url=urls["grpc"])
        assert rc == 1 and summary["imported"] == 19 and summary["bad_rows"] == [], err
        assert len(summary["failed"]) == 1 and summary["failed"][0].startswith(f"{tmp_path / 'bank.jsonl'}:8: s7")
        assert "QBANK_MAX_TEXT_CHARS" in summary["failed"][0]
        assert QbankClient(urls["grpc"]).count() == 19


@pytest.mark.service
def test_a_service_that_dies_mid_import_still_gets_the_summary(tiny_model, tmp_path):
    lines = [{"id": f"k{n}", "stem": f"第{n}题 已知等差数列的前n项和"} for n in range(400)]
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")
    command = [sys.executable, "-m", "qbank_client.cli", "--json"]
    with running_flow(model=tiny_model, data_dir=tmp_path / "data") as urls:
        client = QbankClient(urls["grpc"])
        process = subprocess.Popen(
            [*command, "--url", urls["grpc"], "import", str(bank), "--batch-size", "2", "--concurrency", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while client.count() < 40 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        seen = client.count()
        client.close()
    out, err = process.communicate(timeout=120)  # the Flow is gone: retries, then the summary
    summary = json.loads(out)
    assert process.returncode == 1 and summary["stopped"] and summary["not_sent"] > 0, err
    assert seen <= summary["imported"] < 400 and summary["failed"] == []
