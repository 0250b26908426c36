"""The reading form of stored questions (LaTeX and HTML read as text), and search through it: a
typed {a_n} finds $\\left\\{a_{n}\\right\\}$, an OCR reading finds a typeset fraction among stems
that differ in one number, a typed log2a finds $\\log_{2}a$, typed words find the stem that holds
them in order, malformed markup is stored as given and never fails; collections of schemas 3 and 4
keep the form they were built with."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import png_bytes, running_flow
from docarray import Document, DocumentArray
from pymilvus import MilvusClient
from test_fulltext import earlier_collection

from qbank.config import IndexerSettings
from qbank.domain.reading import html_text, reading_form
from qbank.domain.schema import item_row
from qbank.domain.text import folded, match_form, search_form, sequence_similarity, text_coverage
from qbank.store import ItemStore
from qbank.store.errors import FullTextUnavailableError
from qbank_client import QbankClient, read_bank
from qbank_client.importer import import_bank
from qbank_client.transport import ServerError

READINGS = {
    r"已知复数$\frac{2+i}{1-2 i}$的共轭": "已知复数 (2+i)/(1-2 i) 的共轭",
    r"等比数列$\left\{a_{n}\right\}$的公比为$q$": "等比数列 {a_n} 的公比为 q",
    r"$x^{2}-3x+2=0$": "x^2-3x+2=0",
    r"\(\dfrac{\sqrt{3}}{2}\)": "(√(3))/2",
    r"$\angle A\perp\parallel\leq\geq\in\cap\cup\because\therefore\triangle ABC$": "∠A⊥∥≤≥∈∩∪∵∴△ABC",
    r"$\alpha+\beta$ 与 $\mathrm{i}$": "α+β 与 i",
    "增长了20%，求$\\frac{1}{2}$": "增长了20%，求 1/2",  # a per cent sign, not a LaTeX comment
    "$$\\overline{AB}$$": "AB",
    "<p>如图，x<sup>2</sup>&gt;0 <img src='figs/a.png'>，求</p><p>$\\frac{a}{b}$</p>": "如图，x2>0 ，求\na/b",
    "若a<b，则a+1<b+1": "若a<b，则a+1<b+1",  # a bare "<" is not HTML
    "坏的 $\\frac{1": "坏的 1",  # unclosed: read as far as it goes
    "plain  stem   kept as is ": "plain  stem   kept as is ",  # no markup: unchanged (embeddings too)
}


@pytest.mark.parametrize("stored, reads", READINGS.items())
def test_stored_markup_reads_as_the_page_shows_it(stored, reads):
    assert reading_form(stored) == reads


def test_html_inline_images_are_collected_in_order():
    assert html_text('<p>如图<img src="figs/a.png"/>和<IMG SRC=b.png></p>')[1] == ["figs/a.png", "b.png"]
    assert html_text("若a<b，则")[1] == []


def test_ocr_readings_meet_the_typeset_stem_in_the_matching_form():
    """What a photo of the typeset page reads as, against the stored LaTeX source."""
    assert match_form(r"已知复数$\frac{2+i}{1-2 i}$的共轭") == match_form("已知复数(2+i)/(1-2i)的共轭")
    assert match_form(r"等比数列$\left\{a_{n}\right\}$中，$a_{3}=8$") == match_form("等比数列{an}中，a3=8")
    assert match_form(r"$x^{2}-5x+6=0$") == match_form("x2-5x+6=0")
    assert sequence_similarity(r"数列$\left\{a_{n}\right\}$", "数列{an}") == 1.0


TWINS = {  # the same stem with one number changed: only the right one matches the reading in order
    "g5": r"等比数列$\left\{a_{n}\right\}$的公比为$q$，且$a_{1}=2$，$a_{3}=8$，求$a_{5}$的值",
    "g6": r"等比数列$\left\{a_{n}\right\}$的公比为$q$，且$a_{1}=3$，$a_{3}=12$，求$a_{6}$的值",
    "g7": r"等比数列$\left\{a_{n}\right\}$的公比为$q$，且$a_{1}=5$，$a_{3}=20$，求$a_{7}$的值",
    "f1": r"已知复数$z=\frac{2+i}{1-2 i}$，求$|z|$与$z^{2}$",
    "f2": r"已知复数$z=\frac{3+i}{1-3 i}$，求$|z|$与$z^{3}$",
    "bad": "未闭合的公式 $\\frac{1}{2 与 <p>未闭合的标签",
}
TYPED = {"g5": "等比数列 {a_n} 的公比为 q，且 a1=2，a3=8，求 a5 的值", "f2": "已知复数z=(3+i)/(1-3i)，求|z|与z3"}


def rows(dim: int = 8) -> list[dict]:
    rng = np.random.default_rng(5)
    return [
        item_row(f"{qid}:text:0", (rng.normal(size=dim)).tolist(), question_id=qid, text=text)
        for qid, text in TWINS.items()
    ]


@pytest.mark.service
def test_bm25_reads_the_reading_form_on_schema_5_and_the_stem_is_stored_as_given(tmp_path):
    store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        store.check_vectors("test-model", 8, create=True)
        store.upsert(rows())
        described = store.describe()
        assert described["schema"] == 5 and described["text_reading_form"] is True
        for qid, typed in TYPED.items():
            assert store.search_text([typed], 3)[0][0]["id"] == f"{qid}:text:0", typed
        assert store.get(["g5:text:0"])[0]["text"] == TWINS["g5"]  # display copy as given
        stored = store.get(["bad:text:0"])[0]
        assert stored["text"] == TWINS["bad"]
        assert store.search_text(["未闭合的标签"], 1)[0][0]["id"] == "bad:text:0"
    finally:
        store.close()


@pytest.mark.service
def test_bm25_hits_carry_the_match_form_the_collection_stores_of_their_stem_and_analysis(tmp_path):
    """Ranking BM25's candidates by the text compared reads each candidate's match form from the
    store instead of parsing its LaTeX again: it must be exactly match_form of the stem (and of the
    analysis, for a search in the analyses), display text untouched, hits without asking unchanged."""
    store = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    analysis = r"由$a_{3}=a_{1}q^{2}$得公比$q^{2}=4$，<b>故</b>$a_{5}=32$"
    try:
        store.check_vectors("test-model", 8, create=True)
        store.upsert(
            [{**row, "metadata": {"analysis": analysis}} if row["id"] == "g5:text:0" else row for row in rows()]
        )
        hits = store.search_text([TYPED["g5"]], len(TWINS), match_forms=True)[0]
        assert len(hits) >= 3
        for hit in hits:
            stem = TWINS[hit["id"].split(":")[0]]
            assert hit["match_form"] == match_form(stem), hit["id"]
            assert hit["entity"]["text"] == stem and "search_text" not in hit["entity"]
        assert all("match_form" not in hit for hit in store.search_text([TYPED["g5"]], 3)[0])
        (hit,) = store.search_text(["公比"], 1, part="analysis", match_forms=True)[0]
        assert hit["id"] == "g5:text:0" and hit["match_form"] == match_form(analysis)
    finally:
        store.close()


@pytest.mark.service
@pytest.mark.parametrize(
    "schema, reading, marker",
    [(3, False, "\\left"), (4, True, "_")],  # schema 3: the folded raw text; 4: the reading form, ^ and _ kept
)
def test_an_earlier_collection_keeps_the_form_it_was_built_with(tmp_path, schema, reading, marker):
    earlier_collection(tmp_path, schema_version=schema)
    old = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        assert old.describe()["schema"] == schema and old.describe()["text_reading_form"] is reading
        old.check_vectors("test-model", 8, create=False)
        old.upsert(rows())
        stored = old.connection.call(
            MilvusClient.query, "qbank_items", filter='id == "g5:text:0"', output_fields=["search_text"]
        )
        given = reading_form(TWINS["g5"]) if reading else TWINS["g5"]
        assert stored[0]["search_text"] == folded(given, scripts=False)  # what its other rows hold: re-index to change
        assert marker in stored[0]["search_text"]
        # that form is not the match form: its candidates are formed from their text when ranked
        assert all("match_form" not in hit for hit in old.search_text([TYPED["g5"]], 3, match_forms=True)[0])
    finally:
        old.close()


def test_powers_and_subscripts_meet_what_is_typed_and_read_in_bm25s_form():
    """Schema 5 joins the reading form's ^ and _ to what they mark: a typed or photographed log2a
    meets the stored $\\log_{2}a$ token for token (schema 4 stored log / 2 / a and missed it)."""
    stored, typed = r"使$\log_{2}a>\log_{3}27$成立的$a_{n}$", "使log2a>log327成立的an"

    def letters(schema: int, text: str) -> str:  # what BM25's tokens are cut from, spaces aside
        return search_form(text, 4096, schema).replace(" ", "")

    assert letters(5, typed) == letters(5, stored) == "使10g2a>10g327成立的an"
    assert letters(4, typed) != letters(4, stored)
    assert folded("填空x=____a") == "填空x=____a"  # a fill-in blank is no subscript


@pytest.mark.service
def test_a_collection_before_schema_5_says_its_analyses_are_not_searchable(tmp_path):
    earlier_collection(tmp_path, schema_version=4)
    old = ItemStore(IndexerSettings.resolve(data_dir=str(tmp_path)))
    try:
        old.check_vectors("test-model", 8, create=False)
        old.upsert(rows())
        assert old.search_text(["公比"], 3)[0]  # its stems still are
        with pytest.raises(FullTextUnavailableError, match="schema 4.*QBANK_COLLECTION"):
            old.search_text(["公比"], 3, part="analysis")
    finally:
        old.close()


def test_typed_coverage_is_the_share_of_the_query_held_in_order():
    assert text_coverage("男生89人，女生45人", "某班男生89人，女生45人，共多少人") == (1.0, 1.0)
    coverage, _ = text_coverage("男生89人，女生45人", "某班女生89人，男生45人")  # same words, other order
    assert coverage < 0.9
    assert text_coverage("", "x") == (0.0, 0.0)


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("reading-data")) as urls:
        yield urls


@pytest.mark.service
def test_through_the_flow_a_typed_subscript_and_a_read_fraction_find_their_latex_stems(flow):
    client = QbankClient(flow["grpc"])
    docs = DocumentArray(Document(id=f"{q}:text:0", text=t, tags={"question_id": q}) for q, t in TWINS.items())
    client.index(docs)
    for qid, typed in TYPED.items():
        hits = client.similar_questions(typed, limit=3, mode="bm25")
        assert hits[0].question_id == qid, (typed, [h.question_id for h in hits])
    assert client.questions(["bad"])["bad"][0].text == TWINS["bad"]


CSV_BANK = """,Question,A,B,C,D,Answer
0,已知复数$z=\\frac{2+i}{1-2 i}$，则$|z|$等于,1,$\\sqrt{2}$,2,$\\frac{1}{2}$,A
1,下列哪一种元素属于稀有气体,氦,氮,氧,氯,A
2,"未闭合的公式 $\\frac{1}{2 与 <p>未闭合的标签",甲,乙,丙,丁,B
"""


@pytest.mark.service
def test_a_csv_bank_imports_with_a_field_mapping_and_its_options_are_searched_and_kept(flow, tmp_path):
    """CMMLU's layout (an unnamed row-number column, Question, A-D, Answer) through a real `qbank
    import` with --map: ids from file and line, options in the stem's text and in its tags, the
    answer kept, malformed markup stored as given."""
    bank = tmp_path / "bank" / "physics.csv"
    bank.parent.mkdir()
    bank.write_text(CSV_BANK, encoding="utf-8")
    command = [sys.executable, "-m", "qbank_client.cli", "--url", flow["grpc"], "--json", "import", str(bank.parent)]
    command += ["--map", "stem=Question", "--map", "options=A,B,C,D", "--map", "answer=Answer"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["imported"] == 3 and summary["bad_rows"] == []
    client = QbankClient(flow["grpc"])
    stored = client.questions(["physics-2", "physics-3", "physics-4"])
    first = stored["physics-2"][0]
    assert first.text.startswith("已知复数$z=\\frac{2+i}{1-2 i}$") and "\nB. $\\sqrt{2}$" in first.text
    assert first.tags["options"] == [
        {"label": "A", "text": "1"},
        {"label": "B", "text": "$\\sqrt{2}$"},
        {"label": "C", "text": "2"},
        {"label": "D", "text": "$\\frac{1}{2}$"},
    ]
    assert first.tags["answer"] == "A" and "" not in first.tags
    assert stored["physics-4"][0].text.startswith("未闭合的公式 $\\frac{1}{2 与 <p>未闭合的标签")
    hits = client.similar_questions("氦 氮 氧 氯", limit=1, mode="bm25")  # found by its options
    assert hits[0].question_id == "physics-3"
    assert (
        "--map 'stem'"
        in subprocess.run([*command[:-6], "--map", "stem"], capture_output=True, text=True, timeout=60).stderr
    )


@pytest.mark.service
def test_an_html_stems_inline_images_become_its_searchable_figures_and_json_arrays_import(flow, tmp_path):
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "tri.png").write_bytes(png_bytes(4711, (64, 48)))
    records = [
        {"id": "html-1", "stem": '<p>如图，<img src="figs/tri.png">中x<sup>2</sup>&gt;1，求面积</p>', "answer": "6"},
        {"id": "html-2", "stem": "<div>普通的<b>HTML</b>题干</div>", "options": ["甲", "乙"]},
    ]
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    client = QbankClient(flow["grpc"])
    summary = import_bank(client, read_bank(bank), batch_size=8, progress=False)
    assert summary.imported == 2 and not summary.bad_rows
    items = client.questions(["html-1"])["html-1"]
    assert [d.id for d in items] == ["html-1:text:0", "html-1:image:0"]
    assert items[1].tags["figure"] == str((tmp_path / "figs" / "tri.png").resolve())
    found = client.image_to_text(png_bytes(4711, (64, 48)), limit=1)["figures"]
    assert found and found[0].question_id == "html-1"
    assert client.similar_questions("求面积", limit=1, mode="bm25")[0].question_id == "html-1"


@pytest.mark.service
def test_through_the_flow_typed_words_find_the_stem_that_holds_them_in_order(flow):
    """BM25 alone ranks the short stem with the same words in another order first (length
    normalisation); /search mode bm25 orders its candidates by in-order coverage of the query."""
    client = QbankClient(flow["grpc"])
    stems = {
        "long": "某校组织春游，某班男生89人，女生45人，每辆车限坐40人，学校准备租用大客车和小客车若干辆，"
        "问至少需要租多少辆车才能一次把全班同学送到目的地？",
        "swap": "某班女生89人，男生45人，求男女生人数比。",
    }
    client.index(
        DocumentArray(
            Document(id=f"{q}:text:0", text=t, tags={"question_id": q, "subject": "typed-order"})
            for q, t in stems.items()
        )
    )
    typed = "男生89人，女生45人"
    hits = client.similar_questions(typed, limit=2, mode="bm25", subject="typed-order")
    assert [h.question_id for h in hits] == ["long", "swap"]
    found = client.post(
        "/search", DocumentArray([Document(text=typed)]), {"mode": "bm25", "filter": {"subject": "typed-order"}}
    )[0]
    best = found[0].matches[0]
    assert best.scores["text_coverage"].value == best.scores["score"].value == 1.0
    assert found[0].matches[1].scores["bm25"].value > best.scores["bm25"].value  # BM25's own order differed


@pytest.mark.service
def test_the_analysis_is_searched_only_when_asked(flow, tmp_path):
    """An analysis is stored with its question and searched by its words only with search_in
    'analysis' (the CLI's --in-analysis); other modes refuse the parameter, naming it."""
    records = [
        {
            "id": "an-1",
            "stem": r"已知$a_{1}=2$，$q=2$，求$a_{5}$",
            "options": ["16", "32"],
            "answer": "B",
            "analysis": r"由等比数列的通项公式$a_{n}=a_{1}q^{n-1}$，得$a_{5}=32$",
            "subject": "解析检索",
        },
        {"id": "an-2", "stem": "等比数列的通项公式是什么", "analysis": "见课本", "subject": "解析检索"},
    ]
    bank = tmp_path / "analysed.json"
    bank.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    client = QbankClient(flow["grpc"])
    assert import_bank(client, read_bank(bank), batch_size=8, progress=False).imported == 2
    words = "等比数列的通项公式"
    in_stems = client.similar_questions(words, limit=5, mode="bm25", subject="解析检索")
    assert [h.question_id for h in in_stems] == ["an-2"]  # the analysis is not searched by default
    in_analyses = client.similar_questions(words, limit=5, mode="bm25", search_in="analysis", subject="解析检索")
    assert [h.question_id for h in in_analyses][0] == "an-1"
    assert client.questions(["an-1"])["an-1"][0].tags["analysis"] == records[0]["analysis"]
    command = [sys.executable, "-m", "qbank_client.cli", "--url", flow["grpc"], "--json", "similar", words]
    done = subprocess.run(
        [*command, "--in-analysis", "--subject", "解析检索"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and json.loads(done.stdout)[0]["question_id"] == "an-1", done.stderr[-2000:]
    with pytest.raises(ServerError, match="search_in"):
        client.similar_questions(words, mode="dense", search_in="analysis")
    with pytest.raises(ServerError, match="search_in"):
        client.similar_questions(words, mode="bm25", search_in="answers")


@pytest.mark.service
def test_a_photo_of_a_typeset_fraction_finds_its_stem_among_twins_that_differ_in_numbers(flow):
    """The stem typeset by KaTeX in headless Chromium (as printed), photographed tilted and as a
    JPEG, read by the real OCR model through the Flow: its own stem first, not its twin."""
    from qbank_devtools.photos import distort
    from qbank_devtools.typeset import Typesetter

    client = QbankClient(flow["grpc"])
    client.index(DocumentArray(Document(id=f"{q}:text:0", text=t, tags={"question_id": q}) for q, t in TWINS.items()))
    with Typesetter() as typesetter:
        pages = {qid: typesetter.page([TWINS[qid]]) for qid in ("f1", "f2", "g6")}
    for number, (qid, page) in enumerate(pages.items()):
        buffer = io.BytesIO()
        distort(page, ("tilted", "jpeg40", "rotated")[number], seed=number).save(buffer, format="JPEG", quality=90)
        answer = client.photo_search(buffer.getvalue(), limit=3)
        assert answer["questions"][0].question_id == qid, (qid, answer["text"])
