"""The search page, in a real browser (Debian's headless Chromium driven by Selenium) through a real
Flow that requires a token, over a planted bank imported with the real importer; and the figure
route's refusals over real HTTP.

The browser tests run in order on one page (one tab: the token typed in the first test is kept in
the tab's sessionStorage, as for a user). A screenshot of the results lands in test-artifacts/.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, png_bytes, running_flow

from qbank.service.page import PAGE_FILES, FigureRefused, figure_file, image_type
from qbank_client import QbankClient, read_bank
from qbank_client.importer import import_bank
from qbank_devtools.demo import write_demo_bank

TOKEN = "page-s3cret"
PLANTED = "planted-tri"
PLANTED_STEM = "如图，在等腰梯形ABCD中，对角线AC与BD相交于点O，求证三角形AOB全等于三角形DOC"
XSS = "planted-xss"
XSS_STEM = '<script>window.__xss = 1</script><img alt=x onerror="window.__xss = 2">恶意题干测试'
MATH = "planted-math"
MATH_RECORD = {
    "id": MATH,
    "stem": "已知$\\frac{1}{2}+x=1$，求$x$的值。另有$\\href{javascript:window.__xss=3}{点我}$与<script>window.__xss=4</script>",
    "options": ["$\\frac{1}{2}$", "1", "2", "3"],
    "answer": "A",
    "analysis": "移项得$x=1-\\frac{1}{2}$",
    "subject": "数学",
}
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# -- the figure route's rules, on real files ---------------------------------------------------------
def test_figure_file_serves_images_under_a_root_only(tmp_path):
    root = tmp_path / "figs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "secret.png").write_bytes(png_bytes(2))
    (root / "notes.txt").write_text("not an image")
    (root / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    roots = [root.resolve()]

    data, kind = figure_file(str(root / "sub" / "a.png"), roots, 1 << 20)
    assert data == png_bytes(1) and kind == "image/png"
    refusals = {
        str(root / "sub" / ".." / ".." / "secret.png"): (403, "outside the figure folders"),
        str(tmp_path / "secret.png"): (403, "QBANK_FIGURE_ROOTS"),
        str(root / "link.png"): (403, "outside"),  # a link out of the root is followed, then refused
        "figs/sub/a.png": (400, "absolute path"),
        str(root / "missing.png"): (404, "no file at"),
        str(root / "sub"): (404, "is a folder"),
        str(root / "notes.txt"): (415, "not a PNG"),
        str(root / "vector.svg"): (415, "not a PNG"),
        "": (400, "'ref'"),
    }
    for ref, (status, words) in refusals.items():
        with pytest.raises(FigureRefused, match=words) as refused:
            figure_file(ref, roots, 1 << 20)
        assert refused.value.status == status, ref
    with pytest.raises(FigureRefused, match="QBANK_MAX_FIGURE_BYTES") as refused:
        figure_file(str(root / "sub" / "a.png"), roots, 10)
    assert refused.value.status == 413
    with pytest.raises(FigureRefused, match="no QBANK_FIGURE_ROOTS") as refused:
        figure_file(str(root / "sub" / "a.png"), [], 1 << 20)
    assert refused.value.status == 404
    assert image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"


def test_a_figure_swapped_for_a_link_while_it_is_served_never_leaks_the_file_outside(tmp_path):
    """A writer inside the root flips a figure between an image and a link to a file outside, as
    fast as it can, while the route serves it 400 times: the route checked the path, then opened it
    again, and served the outside file in up to 39 of 200 tries. Now it reads what it checked."""
    root, outside = tmp_path / "figs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = png_bytes(99)
    (outside / "secret.png").write_bytes(secret)
    image, link, target = root / "real.png", root / "link.tmp", root / "fig.png"
    image.write_bytes(png_bytes(1))
    link.symlink_to(outside / "secret.png")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            staged = root / "staged.png"
            staged.write_bytes(png_bytes(1))
            os.replace(staged, target)  # the image...
            link_copy = root / "link-copy.tmp"
            link_copy.unlink(missing_ok=True)
            link_copy.symlink_to(outside / "secret.png")
            os.replace(link_copy, target)  # ...then a link out of the root, atomically

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    served, refused = 0, 0
    try:
        for _ in range(400):
            try:
                data, _ = figure_file(str(target), [root.resolve()], 1 << 20)
            except FigureRefused as refusal:
                assert refusal.status in (403, 404), refusal
                refused += 1
                continue
            assert data != secret, "a file outside the root was served"
            served += 1
    finally:
        stop.set()
        flipper.join()
    assert served and refused  # both states were seen: the race was really run


@pytest.mark.service
def test_the_page_ships_in_the_package(tmp_path):
    """Images install the project from source (k8s/images): the page's files must be in the wheel."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(REPO),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("qbank_search-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"qbank/service/page_assets/{name}" for name, _ in PAGE_FILES.values()} <= names


# -- a real Flow with a planted bank -------------------------------------------------------------------
@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """The demo bank (40 questions with figures) plus a planted question with its own figure and a
    stem that carries HTML."""
    folder = tmp_path_factory.mktemp("page-bank")
    path = write_demo_bank(folder, 40)
    (folder / "figs" / "planted.png").write_bytes(png_bytes(4242, (96, 80)))
    planted = [
        {"id": PLANTED, "stem": PLANTED_STEM, "figures": ["figs/planted.png"], "subject": "数学", "grade": "八年级"},
        {"id": XSS, "stem": XSS_STEM, "subject": "语文", "grade": "七年级"},
        MATH_RECORD,
    ]
    with path.open("a", encoding="utf-8") as handle:
        for record in planted:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def flow(tiny_model, bank, tmp_path_factory):
    data = tmp_path_factory.mktemp("page-data")
    settings = {
        "model": tiny_model,
        "data_dir": data,
        "auth_token": TOKEN,
        "figure_roots": bank.parent,
        "max_limit": 50,  # below what the page's count field allows: its error comes from the service
    }
    with running_flow(**settings) as urls:
        with QbankClient(urls["grpc"], token=TOKEN) as client:
            summary = import_bank(client, read_bank(bank), batch_size=16, progress=False)
            assert summary.imported == 43 and not summary.bad_rows
        yield urls


def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.service
def test_page_files_are_open_and_figures_need_the_token(flow, bank):
    status, headers, body = get(flow["http"] + "/ui")
    assert status == 200 and "题库搜索" in body.decode()
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    assert get(flow["http"] + "/ui/app.js")[0] == 200
    figure = str(bank.parent / "figs" / "planted.png")
    url = flow["http"] + "/ui/figure?" + urllib.parse.urlencode({"ref": figure})
    assert get(url)[0] == 401
    status, headers, body = get(url, TOKEN)
    assert status == 200 and body == png_bytes(4242, (96, 80)) and headers["content-type"] == "image/png"
    escape = flow["http"] + "/ui/figure?" + urllib.parse.urlencode({"ref": f"{bank.parent}/figs/../../../etc/passwd"})
    status, _, body = get(escape, TOKEN)
    assert status == 403 and b"outside the figure folders" in body


@pytest.mark.service
def test_a_fifo_in_a_figure_root_is_refused_at_once_and_never_stalls_the_gateway(flow, bank):
    """The route read the file inside the event loop all three protocols share: a FIFO there held
    gRPC /count and GET /ui until something wrote to it. Now it is refused from the opened file."""
    fifo = bank.parent / "figs" / "pipe.png"
    os.mkfifo(fifo)
    try:
        url = flow["http"] + "/ui/figure?" + urllib.parse.urlencode({"ref": str(fifo)})
        started = time.monotonic()
        status, _, body = get(url, TOKEN)
        assert status == 404 and b"not a regular file" in body
        assert time.monotonic() - started < 5
        with QbankClient(flow["grpc"], token=TOKEN) as client:
            assert client.count() > 0
    finally:
        fifo.unlink()


@pytest.mark.service
def test_questions_endpoint_returns_whole_questions_in_order(flow):
    with QbankClient(flow["grpc"], token=TOKEN) as client:
        docs, _ = client.post("/questions", parameters={"question_ids": [XSS, PLANTED, "no-such-question"]})
        assert [d.id for d in docs] == [f"{XSS}:text:0", f"{PLANTED}:text:0", f"{PLANTED}:image:0"]
        assert docs[0].text == XSS_STEM and docs[2].tags["figure"].endswith("figs/planted.png")
        assert docs[2].tags["question_id"] == PLANTED and docs[2].modality == "image"
        found = client.questions([PLANTED, "no-such-question"])
        assert list(found) == [PLANTED] and [d.id for d in found[PLANTED]] == [d.id for d in docs[1:]]
        with pytest.raises(Exception, match="question_ids"):
            client.post("/questions", parameters={"question_ids": PLANTED})


# -- in the browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Chromium and chromedriver are missing: scripts/test.sh installs them (apt chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def errors_in_console(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def search(driver, text: str = "", mode: str = "", modality: str = "", subject: str = "", image: Path | None = None):
    """Fill the form, submit, and wait for the search to finish; returns the cards' question ids."""
    js(driver, "document.getElementById('clear-image').click(); document.getElementById('results').replaceChildren()")
    for field, value in (("query-text", text), ("subject", subject)):
        element = driver.find_element("id", field)
        element.clear()
        if value:
            element.send_keys(value)
    js(driver, "document.getElementById('mode').value = arguments[0]", mode)
    js(driver, "document.getElementById('modality').value = arguments[0]", modality)
    if image is not None:
        driver.find_element("id", "query-image").send_keys(str(image))
        wait_for(lambda: js(driver, "return !document.getElementById('image-preview').hidden"), "the image preview")
    driver.find_element("id", "search-button").click()
    wait_for(
        lambda: js(driver, "return document.getElementById('message').textContent !== 'searching…'"),
        "the search to finish",
    )
    message = js(
        driver, "return document.getElementById('message').hidden ? '' : document.getElementById('message').textContent"
    )
    assert not message or message == "no questions found", message
    return js(driver, "return [...document.querySelectorAll('#results > .card')].map(c => c.dataset.question)")


@pytest.mark.service
def test_without_the_token_the_page_shows_the_refusal_then_works_with_it(flow, browser):
    browser.get(flow["http"] + "/ui?lang=en")
    wait_for(lambda: browser.find_element("id", "token-panel").is_displayed(), "the token prompt")
    message = wait_for(lambda: browser.find_element("id", "message").text, "the refusal")
    assert "missing or wrong token" in message
    browser.find_element("id", "token-input").send_keys("wrong")
    browser.find_element("css selector", "#token-form button").click()
    wait_for(lambda: "missing or wrong token" in browser.find_element("id", "message").text, "the second refusal")
    field = browser.find_element("id", "token-input")
    field.clear()
    field.send_keys(TOKEN)
    browser.find_element("css selector", "#token-form button").click()
    stats = wait_for(
        lambda: js(
            browser,
            "return document.getElementById('stats').dataset.loaded && document.getElementById('stats').textContent",
        ),
        "stats",
    )
    assert "full text on" in stats and "items" in stats
    assert not browser.find_element("id", "token-panel").is_displayed()
    # Only the refused requests (401) may have complained.
    assert all("401" in line for line in errors_in_console(browser))


@pytest.mark.service
def test_page_loads_with_the_stats_and_no_console_errors(flow, browser):
    browser.get(flow["http"] + "/ui?lang=en")  # the same tab: the token is still in sessionStorage
    stats = wait_for(
        lambda: js(
            browser,
            "return document.getElementById('stats').dataset.loaded && document.getElementById('stats').textContent",
        ),
        "stats",
    )
    assert stats.startswith("84 items"), stats  # 40 demo questions (stem + figure), planted (2), XSS and math stems (2)
    assert errors_in_console(browser) == []


@pytest.mark.service
def test_a_text_query_shows_the_planted_question_first_with_its_figure(flow, browser):
    found = search(browser, "等腰梯形 对角线", mode="bm25")
    assert found[0] == PLANTED
    card = browser.find_element("css selector", "#results > .card")
    assert PLANTED_STEM in card.text and "matched: stem" in card.text
    marked = js(browser, "return [...arguments[0].querySelectorAll('mark')].map(m => m.textContent)", card)
    assert "等腰梯形" in marked and "对角线" in marked
    width = wait_for(
        lambda: js(
            browser,
            "const i = arguments[0].querySelector('.figures img'); return i && i.complete && i.naturalWidth",
            card,
        ),
        "the planted figure to load",
    )
    assert width == 96
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "search-page.png"))
    assert errors_in_console(browser) == []


@pytest.mark.service
def test_the_tab_keeps_at_most_200_figures_and_releases_the_oldest(flow, browser):
    """Each figure is a blob: URL holding its bytes; past FIGURE_CACHE_SIZE the oldest is revoked."""
    search(browser, "等腰梯形 对角线", mode="bm25")
    shown = wait_for(
        lambda: js(
            browser, "const i = document.querySelector('#results .figures img'); return i && i.complete && i.src"
        ),
        "a figure",
    )
    assert shown.startswith("blob:")
    readable = (  # a fresh image from the URL (fetch may not: CSP connect-src 'self'); WebDriver awaits it
        "return new Promise(done => { const i = new Image(); i.onload = () => done(true);"
        " i.onerror = () => done(false); i.src = arguments[0]; })"
    )
    assert js(browser, readable, shown) is True
    # 200 more figures (paths outside the roots: each one a refused fetch) push every earlier one out.
    js(browser, "return Promise.allSettled([...Array(200).keys()].map(n => figureSource(`/nowhere/${n}.png`)))")
    assert js(browser, "return state.figures.size") == 200
    assert js(browser, readable, shown) is False  # revoked: its bytes are released
    drawn = js(browser, "const i = document.querySelector('#results .figures img'); return i.naturalWidth")
    assert drawn == 96  # what is on the screen stays
    browser.get_log("browser")  # the 200 refused fetches' console lines are this test's, not the next one's


@pytest.mark.service
def test_uploading_a_figure_finds_its_question(flow, browser, bank):
    found = search(browser, image=bank.parent / "figs" / "planted.png", mode="dense", modality="image")
    assert found[0] == PLANTED
    assert "matched: figure" in browser.find_element("css selector", "#results > .card").text


@pytest.mark.service
def test_a_filter_changes_the_results(flow, browser):
    everything = search(browser, "如图", mode="bm25")
    subjects = js(browser, "return [...document.querySelectorAll('#results > .card .meta')].map(m => m.textContent)")
    assert len({s.split(" · ")[0] for s in subjects}) > 1, subjects  # several subjects unfiltered
    only = search(browser, "如图", mode="bm25", subject="物理")
    subjects = js(browser, "return [...document.querySelectorAll('#results > .card .meta')].map(m => m.textContent)")
    assert only and only != everything and all(s.startswith("物理") for s in subjects), subjects


@pytest.mark.service
def test_a_stem_with_html_shows_as_text(flow, browser):
    found = search(browser, "恶意题干测试", mode="bm25")
    assert found[0] == XSS
    card = browser.find_element("css selector", "#results > .card")
    assert "<script>window.__xss = 1</script>" in card.text and "onerror" in card.text
    assert js(browser, "return window.__xss") is None
    assert js(browser, "return document.querySelectorAll('#results script, #results img[src=\"x\"]').length") == 0


@pytest.mark.service
def test_stored_latex_is_typeset_options_listed_and_answer_folded_with_trust_off(flow, browser):
    """KaTeX from the package (no CDN) typesets the stored $\\frac{1}{2}$ as a fraction in the stem,
    the options and the analysis; \\href{javascript:...} and a <script> in the stem stay inert."""
    found = search(browser, "求x的值 另有 点我", mode="bm25")
    assert found[0] == MATH
    card = f"#results > .card[data-question='{MATH}']"
    wait_for(lambda: js(browser, f'return document.querySelectorAll("{card} .stem .katex .mfrac").length'), "KaTeX")
    options = js(browser, f'return [...document.querySelectorAll("{card} .options li")].map(li => li.dataset.label)')
    assert options == ["A", "B", "C", "D"]
    assert js(browser, f"return document.querySelector(\"{card} .options li\").querySelector('.katex .mfrac') !== null")
    assert "<script>window.__xss=4</script>" in browser.find_element("css selector", card).text
    assert js(browser, "return document.querySelectorAll('a[href^=\"javascript\"], #results script').length") == 0
    assert js(browser, "return window.__xss") is None
    browser.find_element("css selector", card).click()
    wait_for(lambda: js(browser, "return document.getElementById('detail').dataset.question") == MATH, "the detail")
    wait_for(lambda: js(browser, "return document.querySelector('#detail details.analysis') !== null"), "the analysis")
    assert js(browser, "return document.querySelector('#detail details.answer').open") is False  # folded
    assert js(browser, "return document.querySelector('#detail details.answer p').textContent") == "A"
    wait_for(
        lambda: js(browser, "return document.querySelector('#detail details.analysis .katex .mfrac') !== null"),
        "the analysis typeset",
    )
    assert not [e for e in errors_in_console(browser) if "Content Security Policy" in e or "katex" in e.lower()]
    assert js(browser, "return window.__xss") is None


@pytest.mark.service
def test_clicking_a_card_shows_the_whole_question_and_similar_ones(flow, browser):
    search(browser, "等腰梯形 对角线", mode="bm25")
    browser.find_element("css selector", "#results > .card").click()
    wait_for(lambda: js(browser, "return document.getElementById('detail').dataset.question") == PLANTED, "the detail")
    similar = wait_for(
        lambda: js(browser, "return [...document.querySelectorAll('#similar > .card')].map(c => c.dataset.question)"),
        "similar questions",
    )
    assert PLANTED not in similar and len(similar) == 5
    detail = browser.find_element("id", "detail").text
    assert PLANTED_STEM in detail and "八年级" in detail
    wait_for(
        lambda: js(
            browser, "return [...document.querySelectorAll('#detail img')].every(i => i.complete && i.naturalWidth)"
        ),
        "the detail's figures",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "search-page-detail.png"))


@pytest.mark.service
def test_the_service_error_is_shown_as_the_service_gave_it(flow, browser):
    js(browser, "document.getElementById('limit').value = 80")
    browser.find_element("id", "query-text").clear()
    browser.find_element("id", "query-text").send_keys("三角形")
    browser.find_element("id", "search-button").click()
    message = wait_for(
        lambda: (
            browser.find_element("id", "message").text if "limit" in browser.find_element("id", "message").text else ""
        ),
        "the error",
    )
    assert message == "/search: parameter 'limit' must be an integer in 1..50 (QBANK_MAX_LIMIT), got the number 80"
    js(browser, "document.getElementById('limit').value = 10")


@pytest.mark.service
def test_a_photo_of_a_question_finds_it(flow, browser, tmp_path):
    from qbank_devtools.photos import photo_bytes

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_bytes(PLANTED_STEM, "tilted", figure=png_bytes(4242, (96, 80))))
    js(browser, "document.getElementById('photo').checked = true")
    try:
        found = search(browser, image=photo)
    finally:
        js(browser, "document.getElementById('photo').checked = false")
    assert found[0] == PLANTED
    read = browser.find_element("id", "read-text").text
    assert read.startswith("read from the photo:") and "等腰梯形" in read


@pytest.mark.service
@pytest.mark.parametrize("how", ["drop", "paste"])
def test_an_image_can_be_dropped_or_pasted(flow, browser, how):
    """A real DataTransfer holding a File, dispatched as the browser does for a drop or a paste."""
    js(browser, "document.getElementById('clear-image').click(); document.getElementById('results').replaceChildren()")
    script = """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "figure.png", {type: "image/png"}));
        const target = arguments[1] === "drop" ? document.getElementById("drop-zone") : document;
        const event = arguments[1] === "drop"
            ? new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
            : new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true});
        target.dispatchEvent(event);
    """
    js(browser, script, base64.b64encode(png_bytes(4242, (96, 80))).decode(), how)
    wait_for(lambda: js(browser, "return !document.getElementById('image-preview').hidden"), "the image preview")
    js(browser, "document.getElementById('mode').value = 'dense'; document.getElementById('modality').value = 'image'")
    browser.find_element("id", "query-text").clear()
    browser.find_element("id", "search-button").click()
    first = wait_for(
        lambda: js(browser, "const c = document.querySelector('#results > .card'); return c && c.dataset.question"),
        "results",
    )
    assert first == PLANTED


HOSTILE_MATH = {
    "hm-frac160": "怪诞公式 分式一百六十层 $" + "\\frac{1}{" * 160 + "x" + "}" * 160 + "$",  # crashed the tab
    "hm-frac1900": "怪诞公式 分式一千九百层 $" + "\\frac{1}{" * 1900 + "x" + "}" * 1900 + "$",  # RangeError
    "hm-sqrt": "怪诞公式 根号 $" + "\\sqrt{" * 2800 + "x" + "}" * 2800 + "$",
    "hm-power": "怪诞公式 乘方 $" + "x^{" * 3000 + "2" + "}" * 3000 + "$",
    "hm-spans": "怪诞公式 五千个公式 " + "$x$ " * 4990,  # blocked the page 2-4 s
    "hm-broken": "怪诞公式 写错的公式 $\\frac{1}{$ 和 $\\sqrt{2$",  # KaTeX's error markup used a style attribute
}


@pytest.mark.service
def test_a_result_list_with_hostile_formulas_shows_every_card_and_the_tab_survives(flow, browser):
    """Stored formulas nested 160 to 3,000 deep, 5,000 spans, broken ones: each is shown as written, the
    ordinary cards beside them are typeset, the tab stays alive, an analysis nested 1,500 deep opens."""
    from docarray import Document, DocumentArray

    docs = [Document(id=f"{q}:text:0", text=t, tags={"question_id": q}) for q, t in HOSTILE_MATH.items()]
    docs += [
        Document(
            id=f"hm-plain{i}:text:0",
            text=f"怪诞公式 普通题{i} 求 $\\frac{{1}}{{{i + 2}}}$ 的值",
            tags={"question_id": f"hm-plain{i}"},
        )
        for i in range(2)
    ]
    deep_analysis = "$" + "\\frac{1}{" * 1500 + "x" + "}" * 1500 + "$"
    docs.append(
        Document(
            id="hm-analysis:text:0",
            text="怪诞公式 解析很深的题",
            tags={"question_id": "hm-analysis", "analysis": deep_analysis, "answer": "$\\frac{1}{2}$"},
        )
    )
    with QbankClient(flow["grpc"], token=TOKEN) as client:
        client.index(DocumentArray(docs))
    browser.get(flow["http"] + "/ui?lang=en")
    js(browser, "sessionStorage.setItem('qbank-token', arguments[0])", TOKEN)
    browser.get(flow["http"] + "/ui?lang=en")
    wait_for(lambda: js(browser, "return document.getElementById('stats').dataset.loaded"), "the page")
    browser.get_log("browser")  # what came before
    started = time.monotonic()
    found = search(browser, "怪诞公式", mode="bm25")
    assert sorted(found) == sorted(d.tags["question_id"] for d in docs)
    for i in range(2):  # the ordinary cards are typeset
        card = f"#results > .card[data-question='hm-plain{i}']"
        wait_for(
            lambda card=card: js(browser, f'return document.querySelectorAll("{card} .katex .mfrac").length'), card
        )
    elapsed = time.monotonic() - started
    assert js(browser, "return 1 + 1") == 2 and elapsed < 20  # the tab is alive
    shown = js(
        browser,
        "return [...document.querySelectorAll('#results .stem.math-source')].map(e => e.closest('.card').dataset.question)",
    )
    assert sorted(shown) == sorted(q for q in HOSTILE_MATH if q != "hm-broken"), shown
    broken = browser.find_element("css selector", "#results > .card[data-question='hm-broken'] .stem").text
    assert "\\frac{1}{" in broken and "\\sqrt{2" in broken  # left as written by KaTeX, not as error markup
    assert not [e for e in errors_in_console(browser) if "Content Security Policy" in e or "call stack" in e]
    browser.find_element("css selector", "#results > .card[data-question='hm-analysis']").click()
    wait_for(
        lambda: js(browser, "return document.getElementById('detail').dataset.question") == "hm-analysis", "the detail"
    )
    wait_for(lambda: js(browser, "return document.querySelector('#detail details.analysis') !== null"), "the analysis")
    assert js(browser, "return document.querySelector('#detail details.analysis').classList.length >= 0")
    assert "\\frac{1}{" in js(browser, "return document.querySelector('#detail details.analysis').textContent")
    with QbankClient(flow["grpc"], token=TOKEN) as client:  # leave the module's bank as it was
        client.delete_questions([d.tags["question_id"] for d in docs])


@pytest.mark.service
def test_a_whole_page_photo_boxes_each_question_and_lists_its_matches_under_its_number(flow, browser, bank, tmp_path):
    """'whole page' sends page: true; the photo is shown with a box over each question found on it
    (placed in percent of the photo, over its question's lines), and each question's own matches are
    listed under its number."""
    from PIL import Image, ImageDraw

    from qbank_devtools.photos import chinese_font

    stems = [q.stem for q in read_bank(bank)]
    other = next(s for s in stems if stems.count(s) == 1 and s != PLANTED_STEM and "<" not in s and "$" not in s)
    other_id = next(q.id for q in read_bank(bank) if q.stem == other)
    lines = ["一、解答题"]
    for number, stem in enumerate((PLANTED_STEM, other), 1):
        wrapped = [stem[i : i + 22] for i in range(0, len(stem), 22)]
        lines += [f"{number}. {wrapped[0]}", *wrapped[1:]]
    page = Image.new("RGB", (1000, 80 + 56 * len(lines)), "white")
    draw = ImageDraw.Draw(page)
    for row, line in enumerate(lines):
        draw.text((50, 40 + 56 * row), line, font=chinese_font(34), fill=(20, 20, 20))
    photo = tmp_path / "sheet.jpg"
    page.save(photo, format="JPEG", quality=90)
    js(browser, "document.getElementById('whole-page').checked = true")
    try:
        search(browser, image=photo)
    finally:
        js(browser, "document.getElementById('whole-page').checked = false")
    sections = js(
        browser,
        "return [...document.querySelectorAll('#results > .segment')].map(s => "
        "[s.dataset.number, s.querySelector('.card') && s.querySelector('.card').dataset.question])",
    )
    assert sections == [["1", PLANTED], ["2", other_id]], sections
    boxes = js(
        browser,
        "const photo = document.getElementById('page-image').getBoundingClientRect();"
        "return [...document.querySelectorAll('#page-photo .segment-box')].map(b => { const r = b.getBoundingClientRect();"
        "return [b.textContent, (r.top - photo.top) / photo.height, (r.bottom - photo.top) / photo.height,"
        " r.width / photo.width]; })",
    )
    assert [b[0] for b in boxes] == ["1", "2"], boxes
    rows = len(lines)
    first_rows = 1 + (len(PLANTED_STEM) - 1) // 22
    # each box covers its question's printed rows (of the photo's height), and the first is above the second
    assert (
        abs(boxes[0][1] - (40 + 56) / page.height) < 0.05
        and abs(boxes[1][1] - (40 + 56 * (1 + first_rows)) / page.height) < 0.05
    )
    assert boxes[0][2] <= boxes[1][1] + 0.01 and boxes[1][2] <= (40 + 56 * rows) / page.height + 0.05
    assert all(0.2 < b[3] <= 1.0 for b in boxes)
    assert not js(browser, "return document.getElementById('page-view').hidden")
    assert not errors_in_console(browser)


@pytest.mark.service
def test_the_page_speaks_chinese_by_default_labels_fused_scores_and_switches_to_english(flow, browser):
    """/ui is in Chinese (labels, messages, the stats line, the cards); a hybrid search's score says it
    is an RRF rank, with what that means on hover; the language link shows the page in English."""
    browser.get(flow["http"] + "/ui")
    js(browser, "sessionStorage.setItem('qbank-token', arguments[0])", TOKEN)
    browser.get(flow["http"] + "/ui")
    stats = wait_for(
        lambda: js(
            browser,
            "return document.getElementById('stats').dataset.loaded && document.getElementById('stats').textContent",
        ),
        "stats",
    )
    assert "个条目" in stats and "全文检索已开启" in stats, stats
    assert js(browser, "return document.documentElement.lang") == "zh-CN"
    assert browser.find_element("tag name", "h1").text == "题库搜索"
    assert browser.find_element("id", "search-button").text == "搜索"
    assert "题目照片" in browser.find_element("css selector", "label [data-i18n='photo']").text
    browser.find_element("id", "query-text").send_keys(PLANTED_STEM[:12])
    js(browser, "document.getElementById('mode').value = 'hybrid'")
    browser.find_element("id", "search-button").click()
    card = wait_for(lambda: browser.find_elements("css selector", "#results > .card"), "the results")[0]
    assert "匹配：题干" in card.text or "匹配：图形" in card.text, card.text
    score = card.find_element("css selector", ".score")
    assert score.text.startswith("RRF 排名融合 0.0") and "倒数排名融合" in score.get_attribute("title"), score.text
    browser.find_element("id", "subject").send_keys("天文")
    browser.find_element("id", "search-button").click()
    wait_for(lambda: "题库中没有符合" in browser.find_element("id", "message").text, "the empty result's reason")
    assert '"subject":"天文"' in browser.find_element("id", "message").text
    browser.find_element("id", "subject").clear()
    browser.find_element("id", "query-text").clear()
    browser.find_element("id", "search-button").click()
    wait_for(lambda: browser.find_element("id", "message").text == "请输入题目或提供图片", "the empty-query message")
    browser.find_element("id", "language").click()
    wait_for(lambda: browser.find_element("tag name", "h1").text == "Question bank search", "the English page")
    assert js(browser, "return document.documentElement.lang") == "en"
    assert browser.find_element("id", "search-button").text == "Search"
    assert errors_in_console(browser) == []
