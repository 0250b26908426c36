"""Photo search through the real Flow with the real OCR model (PP-OCRv6 from the rapidocr wheel):
a phone-photo stand-in of a question finds its question among near-duplicates that differ in one
number."""

from __future__ import annotations

import io
import threading
import time

import pytest
from clip_client import Client
from conftest import png_bytes, running_flow
from docarray import Document, DocumentArray
from PIL import Image, ImageOps
from test_flow import jina_client

from qbank_client import QbankClient
from qbank_devtools.demo import draw_figure
from qbank_devtools.photos import DISTORTIONS, photo_bytes, render_question

pytestmark = pytest.mark.service  # every test here starts a Flow, a browser or a process

PLANTED = "photo-planted"
TEMPLATE = "已知等腰三角形的两边长分别为{a}和{b}，求这个三角形的周长。"
NEAR_DUPLICATES = [(a, b) for a in (3, 4, 5, 6) for b in (7, 8, 9)]  # (3, 7) is the planted one
SWAPPED = {  # the same words, two numbers swapped: BM25 ties them (bench/photo.py found these)
    "photo-swap-a": "一个长方形的长是27厘米，宽是48厘米，它的面积是多少平方厘米？",
    "photo-swap-b": "一个长方形的长是48厘米，宽是27厘米，它的面积是多少平方厘米？",
}
SYMBOL_TEMPLATE = "函数f(x)=x²-{a}x+{b}的图象与x轴交于A、B两点，求线段AB的长。"  # OCR reads x² as x2
SYMBOL_TWINS = [(a, b) for a in range(20, 35) for b in range(90, 100)]  # BM25 over raw text ties them all
FIGURES = {  # the bank's figures (image items): the planted question's triangle among others
    PLANTED: ("triangle", 4),
    "photo-dup-4-8": ("circuit", 5),
    "photo-other-0": ("bar_chart", 6),
    "photo-other-1": ("circle", 7),
    "photo-other-2": ("line_chart", 8),
}
OTHERS = [
    "把20克氯化钠溶于80克水中，所得溶液的溶质质量分数是多少？",
    "一个电阻两端的电压为6V，通过它的电流为0.5A，求它的电阻。",
    "小明以每小时5千米的速度步行2小时，他走了多少千米？",
]


def cropped(png: bytes, padding: int = 8) -> bytes:
    """A figure cut to its ink, as banks store figures (and as the reader cuts one from a photo)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    left, top, right, bottom = ImageOps.invert(image).getbbox()
    box = (max(0, left - padding), max(0, top - padding), right + padding, bottom + padding)
    buffer = io.BytesIO()
    image.crop(box).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    # ocr_max_queue: few enough that the quitting clients below overfill it
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("photo-data"), ocr_max_queue=4) as urls:
        docs = DocumentArray()
        for a, b in NEAR_DUPLICATES:
            qid = PLANTED if (a, b) == (3, 7) else f"photo-dup-{a}-{b}"
            docs.append(Document(id=f"{qid}:text:0", text=TEMPLATE.format(a=a, b=b), tags={"question_id": qid}))
        for qid, stem in SWAPPED.items():
            docs.append(Document(id=f"{qid}:text:0", text=stem, tags={"question_id": qid}))
        for a, b in SYMBOL_TWINS:
            qid = f"photo-fx-{a}-{b}"
            docs.append(Document(id=f"{qid}:text:0", text=SYMBOL_TEMPLATE.format(a=a, b=b), tags={"question_id": qid}))
        for n, stem in enumerate(OTHERS):
            docs.append(Document(id=f"photo-other-{n}:text:0", text=stem, tags={"question_id": f"photo-other-{n}"}))
        for qid, (kind, seed) in FIGURES.items():
            docs.append(Document(id=f"{qid}:image:0", blob=cropped(draw_figure(kind, seed)), tags={"question_id": qid}))
        Client(urls["grpc"]).index(docs)
        yield urls


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_a_photo_finds_its_question_among_near_duplicates(flow, kind):
    photo = photo_bytes(TEMPLATE.format(a=3, b=7), kind, seed=len(kind))
    found = QbankClient(flow["grpc"]).photo_search(photo, limit=5)
    assert "3和7" in found["text"] and not found["note"]
    assert found["questions"][0].question_id == PLANTED
    assert len(found["questions"]) == 5


@pytest.mark.parametrize("qid", sorted(SWAPPED))
def test_a_photo_tells_its_question_from_the_twin_with_numbers_swapped(flow, qid):
    """BM25 scores both twins the same; the candidates are ordered by the text read, in order."""
    found = QbankClient(flow["grpc"]).photo_search(photo_bytes(SWAPPED[qid], "tilted", seed=4), limit=3)
    first, second = found["questions"][:2]
    assert first.question_id == qid and set(SWAPPED) == {first.question_id, second.question_id}
    assert first.score == pytest.approx(1.0) and second.score < 0.95


@pytest.mark.parametrize("qid", sorted(SWAPPED))
def test_a_plain_limit_as_the_page_sends_it_ranks_from_the_same_candidates(flow, qid):
    """The search page sends a plain limit (no candidates of its own): the server fetches the
    candidates its text ranking chooses from (SearchPlan.candidates), so limit 1 still tells the
    twin with swapped numbers apart (BM25 ties them; the client used to ask for 4x itself)."""
    photo = photo_bytes(SWAPPED[qid], "tilted", seed=4)
    (query,) = jina_client(flow["http"]).post(
        "/search", [Document(blob=photo)], parameters={"ocr": True, "limit": 1, "group_by": "question_id"}
    )
    assert [m.tags["question_id"] for m in query.matches] == [qid]


@pytest.mark.parametrize("kind", ["clean", "all"])
def test_a_symbol_ocr_reads_in_another_form_still_finds_its_question(flow, kind):
    """OCR returns x² as x2: the stems' matching form (qbank.domain.text), which BM25 indexes, and
    the query's are the same, so the stem is recalled among 150 twins (raw BM25 ties them all)."""
    found = QbankClient(flow["grpc"]).photo_search(photo_bytes(SYMBOL_TEMPLATE.format(a=23, b=93), kind), limit=3)
    assert "x2-23x+93" in found["text"].replace(" ", "")
    assert found["questions"][0].question_id == "photo-fx-23-93"


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_the_figure_on_a_photo_is_found_and_matched_against_the_banks_figures(flow, kind):
    """The reader finds the figure outside the text lines under every distortion, and its crop's
    CLIP vector searches the bank's figures. That the clean photo's figure finds the figure it was
    drawn from first is all a random-weight CLIP can show; under distortions that takes real weights."""
    photo = photo_bytes(TEMPLATE.format(a=3, b=7), kind, figure=draw_figure(*FIGURES[PLANTED]), seed=1)
    found = QbankClient(flow["grpc"]).photo_search(photo, limit=3, figures=True)
    assert found["questions"][0].question_id == PLANTED and found["figure_matched"]  # by the text read
    left, top, right, bottom = found["figure_region"]
    width, height = Image.open(io.BytesIO(photo)).size
    assert top > height * 0.3 and right < width * 0.5  # below the stem, at the left where it was pasted
    assert (right - left) > width * 0.1 and (bottom - top) > height * 0.25
    assert len(found["figures"]) == 3 and {h.modality for h in found["figures"]} == {"image"}
    if kind == "clean":
        assert found["figures"][0].question_id == PLANTED and found["figures"][0].score > 0.95


def test_a_photo_without_a_figure_has_no_figure_matches(flow):
    found = QbankClient(flow["grpc"]).photo_search(photo_bytes(TEMPLATE.format(a=3, b=7), "all", seed=3), limit=3)
    assert found["figure_region"] is None and found["figures"] == []
    assert found["questions"][0].question_id == PLANTED


def test_a_photo_whose_words_find_its_question_leaves_its_figure_unmatched_unless_asked(flow):
    """The text read tells the question: the figure's region is reported, but no crop is passed on
    for the encoder to embed (a full-size CLIP encode costs about as much as the read) unless the
    request asks; with few words read the figure is matched by default."""
    client = QbankClient(flow["grpc"])
    figure = draw_figure(*FIGURES[PLANTED])
    photo = photo_bytes(TEMPLATE.format(a=3, b=7), "clean", figure=figure, seed=1)
    found = client.photo_search(photo, limit=3)
    assert found["questions"][0].question_id == PLANTED
    assert found["figure_region"] is not None and not found["figure_matched"] and found["figures"] == []
    (query,) = jina_client(flow["grpc"]).post("/search", [Document(blob=photo)], parameters={"ocr": True})
    assert query.tags["figure_region"] == found["figure_region"] and not query.chunks
    assert client.photo_search(photo, limit=3, figures=True)["figures"][0].question_id == PLANTED
    short = photo_bytes("如图，求这个三角形的周长。", "clean", figure=figure, seed=1)  # 11 letters: too few
    found = client.photo_search(short, limit=3)
    assert found["figure_matched"] and found["figures"][0].question_id == PLANTED
    assert not client.photo_search(short, limit=3, figures=False)["figure_matched"]


def test_the_cli_says_a_figure_was_left_unmatched_and_matches_it_with_figures(flow, tmp_path, capsys):
    from qbank_client.cli import main as cli

    path = tmp_path / "photo.jpg"
    path.write_bytes(photo_bytes(TEMPLATE.format(a=3, b=7), "clean", figure=draw_figure(*FIGURES[PLANTED]), seed=1))
    assert cli(["--url", flow["grpc"], "photo", str(path), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert "was not matched against the bank's figures" in printed and "--figures matches it" in printed
    assert cli(["--url", flow["grpc"], "photo", str(path), "--limit", "2", "--figures"]) == 0
    printed = capsys.readouterr().out
    assert "questions whose figures match the figure at" in printed and PLANTED in printed


def test_the_figures_parameter_is_a_boolean_of_a_photo_search(flow):
    client = Client(flow["grpc"])
    with pytest.raises(Exception, match="parameter .{0,4}figures.{0,4} must be true or false"):
        client.search([Document(blob=png_bytes(1))], parameters={"ocr": True, "figures": "yes"})
    with pytest.raises(Exception, match="parameter .{0,4}figures.{0,4} True matches the figure found on a photo"):
        client.search([Document(text="三角形")], parameters={"figures": True})
    # A photo search the plan refuses holds no place in the reader's queue (4 + 2 here) after it
    photo = photo_bytes(TEMPLATE.format(a=3, b=7), "clean", seed=1)
    for _ in range(8):
        with pytest.raises(Exception, match="parameter .{0,4}search_in"):
            client.search([Document(blob=photo)], parameters={"ocr": True, "search_in": "analysis"})
    assert QbankClient(flow["grpc"]).photo_search(photo, limit=1)["questions"][0].question_id == PLANTED


def test_a_photo_with_its_figure_and_over_http(flow):
    photo = photo_bytes(TEMPLATE.format(a=3, b=7), "all", figure=png_bytes(4, (240, 160)), seed=9)
    found = QbankClient(flow["http"]).photo_search(photo, limit=3)
    assert found["questions"][0].question_id == PLANTED


def test_clip_client_asks_for_it_through_parameters(flow):
    """clip_client copies only the matches back into its results; jina's Client shows the text read."""
    photo = photo_bytes(TEMPLATE.format(a=5, b=9), "rotated", seed=2)
    (query,) = Client(flow["grpc"]).search([Document(blob=photo)], limit=3, parameters={"ocr": True})
    assert query.matches[0].tags["question_id"] == "photo-dup-5-9"
    (query,) = jina_client(flow["websocket"]).post("/search", [Document(blob=photo)], parameters={"ocr": True})
    assert "5和9" in query.tags["ocr_text"] and query.matches[0].tags["question_id"] == "photo-dup-5-9"


def test_a_photo_without_text_falls_back_to_clip_and_says_so(flow):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(11, (320, 240)))).save(buffer, format="PNG")
    found = QbankClient(flow["grpc"]).photo_search(buffer.getvalue(), limit=3)
    assert found["text"] == "" and "CLIP vector" in found["note"]
    assert len(found["questions"]) == 3  # dense search still answers


def test_a_figure_is_found_by_the_words_on_it(flow):
    """/index reads the text inside a figure (labels, values): BM25 then finds the figure by them."""
    figure = io.BytesIO()
    labelled = render_question("电路图：电阻R1与滑动变阻器串联", width=700, chars_per_line=20)
    labelled.save(figure, format="PNG")
    tags = {"question_id": "photo-circuit"}
    Client(flow["grpc"]).index(DocumentArray([Document(id="photo-circuit:image:0", blob=figure.getvalue(), tags=tags)]))
    (query,) = jina_client(flow["grpc"]).post(
        "/search", [Document(text="滑动变阻器")], parameters={"mode": "bm25", "modality": "image", "limit": 3}
    )
    assert [m.id for m in query.matches] == ["photo-circuit:image:0"]
    assert "变阻器" in query.matches[0].text and "figure_text" not in query.matches[0].tags


def test_bad_photos_get_the_usual_errors(flow):
    client = Client(flow["grpc"])
    with pytest.raises(Exception, match="bad.*not a readable image"):
        client.search(
            [Document(id="bad", blob=b"%PDF-1.4 not a picture", mime_type="image/png")], parameters={"ocr": True}
        )
    with pytest.raises(Exception, match="parameter .{0,4}ocr.{0,4} must be true or false"):
        client.search([Document(blob=png_bytes(1))], parameters={"ocr": "yes"})


def test_the_cli_prints_what_it_read_and_the_question(flow, tmp_path, capsys):
    import json

    from qbank_client.cli import main as cli

    path = tmp_path / "photo.jpg"
    path.write_bytes(photo_bytes(TEMPLATE.format(a=6, b=8), "shadow", seed=5))
    assert cli(["--url", flow["grpc"], "photo", str(path), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert "read from the photo" in printed and "6和8" in printed and "photo-dup-6-8" in printed
    assert cli(["--url", flow["grpc"], "--json", "photo", str(path)]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["questions"][0]["question_id"] == "photo-dup-6-8" and "6和8" in found["text"]
    assert cli(["--url", flow["grpc"], "photo", str(tmp_path / "missing.jpg")]) == 2


def test_a_count_and_a_text_search_answer_within_a_second_while_a_large_photo_request_is_read(flow):
    """The reader's handlers never hold jina's one-request lock: requests with nothing to read pass
    at once while 16 dense photos are being read (before: /count waited the whole read)."""
    pages = [photo_bytes(TEMPLATE.format(a=i, b=i + 1) * 6, "clean", seed=i) for i in range(16)]
    finished: dict[str, float] = {}

    def read_photos() -> None:
        started = time.monotonic()
        QbankClient(flow["grpc"]).post(
            "/search", DocumentArray(Document(blob=page) for page in pages), {"ocr": True, "limit": 3}
        )
        finished["took"] = time.monotonic() - started

    client = QbankClient(flow["grpc"])
    client.count()  # connected before the clock starts
    reading = threading.Thread(target=read_photos)
    reading.start()
    time.sleep(0.5)  # the photos are in the reader
    waits = []
    while reading.is_alive():
        started = time.monotonic()
        client.count()
        client.similar_questions("三角形的周长", limit=1, mode="bm25")
        waits.append(time.monotonic() - started)
        time.sleep(0.1)
    reading.join()
    assert finished["took"] > 2.0 and len(waits) >= 5, (finished, waits)
    assert max(waits) < 1.0, waits


@pytest.mark.parametrize("kind", ["clean", "tilted", "jpeg40"])
@pytest.mark.parametrize("lines", [1, 2])
def test_a_short_wide_photo_of_a_one_or_two_line_question_finds_its_question(flow, kind, lines):
    """A question photographed close, cropped to its one or two lines: 1800 px wide, 110-400 high."""
    from qbank_devtools.photos import distort

    stem = TEMPLATE.format(a=3, b=7)
    per_line = -(-len(stem) // lines)
    page = render_question(stem, width=100 + 34 * per_line, chars_per_line=per_line)
    left, top, right, bottom = ImageOps.invert(page).getbbox()
    line = page.crop((left - 12, top - 12, right + 12, bottom + 12))
    wide = line.resize((1800, round(line.height * 1800 / line.width)), Image.BICUBIC)
    assert 100 <= wide.height <= 400 and wide.width / wide.height > 4.5, wide.size
    buffer = io.BytesIO()
    distort(wide, kind, seed=3).save(buffer, format="JPEG", quality=90)
    answer = QbankClient(flow["grpc"]).photo_search(buffer.getvalue(), limit=3)
    assert answer["questions"][0].question_id == PLANTED, answer["text"]


def photo_search_with_deadline(url: str, pages: list[bytes], seconds: float) -> str:
    """A photo search over gRPC that gives up after ``seconds`` (a client's deadline): its outcome."""
    import grpc
    from jina.types.request.data import DataRequest

    transport = QbankClient(url).transport._grpc
    request = DataRequest()
    request.header.exec_endpoint = "/search"
    request.data.docs = DocumentArray(Document(blob=page) for page in pages)
    request.parameters = {"ocr": True, "limit": 3}
    try:
        response = transport._call(request, timeout=seconds)
    except grpc.RpcError as exc:
        return exc.code().name
    finally:
        transport.close()
    return response.status.description if response.status.code == response.status.ERROR else "answered"


def quitting_clients_then_a_search(flow, give_up, step: int) -> tuple[float, float, list[str]]:
    """A photo search timed, then 10 clients that each send 4 dense pages through ``give_up(pages)``
    (which returns its outcome), then the same search timed again: (normal, after, outcomes)."""
    one = photo_bytes(TEMPLATE.format(a=3, b=7), "clean", seed=1)
    client = QbankClient(flow["grpc"])
    client.photo_search(one, limit=1)  # warm
    started = time.monotonic()
    assert client.photo_search(one, limit=1)["questions"][0].question_id == PLANTED
    normal = time.monotonic() - started
    dense = [photo_bytes(TEMPLATE.format(a=i, b=i + step) * 6, "clean", seed=i) for i in range(4)]
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(give_up(dense))) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.3)  # the disconnects reach the gateway
    started = time.monotonic()
    assert client.photo_search(one, limit=1)["questions"][0].question_id == PLANTED
    return normal, time.monotonic() - started, outcomes


def test_photo_searches_whose_clients_gave_up_are_dropped_and_a_new_search_answers_in_its_time(flow):
    """10 clients each send 4 dense pages and give up after 1 s: the reader drops what waits and
    stops what it reads before the next page, the queue beyond QBANK_OCR_MAX_QUEUE is refused at once,
    and a new user's photo search answers in about its normal time (before: 709 s behind 20 such)."""
    normal, after, outcomes = quitting_clients_then_a_search(
        flow, lambda pages: photo_search_with_deadline(flow["grpc"], pages, 1.0), step=1
    )
    # what the reader still owes: at most the page each engine was reading when its client left
    assert after < normal + 3.0, (normal, after, outcomes)
    assert outcomes.count("DEADLINE_EXCEEDED") >= 4, outcomes
    refused = [o for o in outcomes if "QBANK_OCR_MAX_QUEUE" in o]
    assert refused and all("retry" in o for o in refused), outcomes


def http_photo_search_giving_up(url: str, pages: list[bytes], seconds: float) -> str:
    """A photo search over HTTP whose client closes its connection after ``seconds``: its outcome."""
    import requests
    from jina.types.request.data import DataRequest

    request = DataRequest()
    request.data.docs = DocumentArray(Document(blob=page) for page in pages)
    body = {
        "execEndpoint": "/search",
        "data": request.to_dict()["data"],
        "parameters": {"ocr": True, "limit": 3},
    }
    try:
        response = requests.post(f"{url}/post", json=body, timeout=seconds)
    except requests.Timeout:
        return "gave up"
    return f"{response.status_code}: {response.text[:300]}"


def test_http_photo_searches_whose_clients_disconnected_are_cancelled(flow):
    """10 HTTP clients each send 4 dense pages and close their connection after 1 s: the gateway
    cancels each request when its client disconnects, the reader stops it before its next model run,
    and a new search answers in about its normal time (before, HTTP had no deadline: every page was
    read for nobody, and the reader refused new searches as full)."""
    normal, after, outcomes = quitting_clients_then_a_search(
        flow, lambda pages: http_photo_search_giving_up(flow["http"], pages, 1.0), step=2
    )
    assert after < normal + 3.0, (normal, after, outcomes)
    assert outcomes.count("gave up") >= 4, outcomes


def test_a_count_answers_within_a_second_while_blank_40_megapixel_photos_fall_back_to_clip(flow):
    """Photos with no text are embedded by the encoder (their dense fallback), which decodes each:
    4 clients sending blank 40 Mpx photos held /count 4-6 s behind the encoder before its store-only
    endpoints became async."""
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 5000), "white").save(buffer, format="PNG")
    blank = buffer.getvalue()
    client = QbankClient(flow["grpc"])
    client.count()
    done = threading.Event()

    def send() -> None:
        sender = QbankClient(flow["grpc"])
        while not done.is_set():
            sender.photo_search(blank, limit=1)

    senders = [threading.Thread(target=send) for _ in range(4)]
    for thread in senders:
        thread.start()
    time.sleep(1.0)  # the photos are in the reader and the encoder
    waits = []
    try:
        for _ in range(15):
            started = time.monotonic()
            client.count()
            waits.append(time.monotonic() - started)
            time.sleep(0.2)
    finally:
        done.set()
        for thread in senders:
            thread.join()
    assert max(waits) < 1.0, waits
