"""The executors are importable classes: run in-process, without a Flow, through the same entry
(``__acall__``: endpoint and parameter checks, then the handler) that jina's runtime calls."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from docarray import Document, DocumentArray
from PIL import Image

from qbank.service.encoder import QbankClipEncoder
from qbank.service.indexer import QbankMilvusIndexer
from qbank.service.params import ParameterError, UnknownEndpointError


def call(executor, endpoint: str, docs: DocumentArray | None = None, **parameters):
    return asyncio.run(executor.__acall__(endpoint, docs=docs, parameters=parameters, tracing_context=None))


@pytest.fixture
def executors(tiny_model, tmp_path):
    encoder = QbankClipEncoder(model=str(tiny_model), device="cpu")
    indexer = QbankMilvusIndexer(model=str(tiny_model), data_dir=str(tmp_path))
    yield encoder, indexer
    indexer.close()
    encoder.close()


@pytest.mark.service
def test_encoder_and_indexer_index_and_search_without_a_flow(executors):
    encoder, indexer = executors
    stems = {"q1": "已知等腰三角形的两边长分别为3和7，求周长。", "q2": "把氯化钠溶于水，溶液的质量分数是多少？"}
    docs = DocumentArray(
        Document(id=f"{qid}:text:0", text=text, tags={"question_id": qid, "subject": "数学"})
        for qid, text in stems.items()
    )
    call(encoder, "/index", docs)
    assert docs.embeddings.shape[0] == 2
    call(indexer, "/index", docs)
    assert call(indexer, "/count") == {"count": 2}

    query = DocumentArray([Document(text=stems["q2"])])
    call(encoder, "/search", query)
    call(indexer, "/search", query, limit=2)
    assert [m.id for m in query[0].matches] == ["q2:text:0", "q1:text:0"]


@pytest.mark.service
def test_a_bm25_search_by_the_services_default_embeds_no_query(tiny_model, tmp_path):
    """QBANK_SEARCH_MODE=bm25 and no mode in the request: the encoder and the indexer run the same
    plan (qbank.domain.search_plan), so no query is embedded that the indexer would not use (before,
    the encoder embedded every typed query); a request naming dense still is."""
    encoder = QbankClipEncoder(model=str(tiny_model), device="cpu", search_mode="bm25")
    indexer = QbankMilvusIndexer(model=str(tiny_model), data_dir=str(tmp_path), search_mode="bm25")
    try:
        stems = {"q1": "已知等腰三角形的两边长分别为3和7，求周长。", "q2": "把氯化钠溶于水，溶液的质量分数是多少？"}
        docs = DocumentArray(Document(id=f"{q}:text:0", text=t, tags={"question_id": q}) for q, t in stems.items())
        call(encoder, "/index", docs)
        call(indexer, "/index", docs)
        typed = DocumentArray([Document(text="氯化钠溶于水")])
        call(encoder, "/search", typed)
        assert typed[0].embedding is None
        call(indexer, "/search", typed, limit=1)
        assert typed[0].matches[0].id == "q2:text:0"
        dense = DocumentArray([Document(text="氯化钠溶于水")])
        call(encoder, "/search", dense, mode="dense")
        assert dense[0].embedding is not None
    finally:
        indexer.close()
        encoder.close()


@pytest.mark.service
def test_executor_checks_reach_the_handlers_in_process(executors):
    encoder, indexer = executors
    with pytest.raises(ParameterError, match="'limit'"):
        call(indexer, "/search", DocumentArray([Document(text="x", embedding=[0.0] * 8)]), limit="3")
    with pytest.raises(UnknownEndpointError):
        call(indexer, "/default", DocumentArray())
    with pytest.raises(ParameterError, match="'drop_image_content'"):
        call(encoder, "/encode", DocumentArray([Document(text="x")]), drop_image_content="no")
    with pytest.raises(ParameterError, match="unknown parameter"):  # the indexer knows every name
        call(indexer, "/count", DocumentArray(), colour="red")


def test_the_reader_checks_size_and_ocr_before_reading_and_passes_unknown_endpoints_on():
    from qbank.service.params import RequestTooLargeError
    from qbank.service.reader import QbankReader
    from qbank_devtools.photos import photo_bytes

    reader = QbankReader(max_docs_per_request=2)
    try:
        figures = DocumentArray(Document(id=f"f{i}", blob=photo_bytes(f"第{i}题")) for i in range(3))
        with pytest.raises(RequestTooLargeError, match="3 documents, over the limit of 2.*QBANK_MAX_DOCS_PER_REQUEST"):
            call(reader, "/index", figures)
        assert not any("figure_text" in d.tags for d in figures)  # refused before any OCR
        with pytest.raises(ParameterError, match="'ocr' must be true or false"):
            call(reader, "/search", figures[:1], ocr="yes")
        assert call(reader, "/default", figures[:1]) is None  # the encoder refuses it, naming the endpoints
        call(reader, "/index", figures[:2])
        assert "第0题" in figures[0].tags["figure_text"]
    finally:
        reader.close()


def test_the_readers_bounds_refuse_a_request_naming_their_setting_before_any_ocr():
    from qbank.service.reader import OcrLimitError, QbankReader
    from qbank_devtools.photos import photo_bytes

    reader = QbankReader(ocr_max_images=2, ocr_max_request_pixels=1_000_000, ocr_timeout=0.001)
    try:
        photos = DocumentArray(Document(id=f"p{i}", blob=photo_bytes(f"第{i}题 求面积")) for i in range(3))
        with pytest.raises(OcrLimitError, match="3 images to read, over the limit of 2 .QBANK_OCR_MAX_IMAGES"):
            call(reader, "/search", photos, ocr=True)
        big = photo_bytes("一道很长的题目" * 30)  # 1000 px wide, 2 pages of it: over 1 Mpx together
        pages = DocumentArray(Document(id=f"b{i}", blob=big) for i in range(2))
        with pytest.raises(
            OcrLimitError, match="over the 1,000,000 one request may have read .QBANK_OCR_MAX_REQUEST_PIXELS"
        ):
            call(reader, "/index", pages)
        assert not any("figure_text" in d.tags for d in pages)  # refused before any OCR
        with pytest.raises(OcrLimitError, match="QBANK_OCR_TIMEOUT.*[12] of 2 images not read"):
            call(reader, "/search", photos[:2], ocr=True)  # time is up within the first photo
        assert call(reader, "/search", DocumentArray([Document(text="文字查询")]), ocr=True) is None  # nothing to read
    finally:
        reader.close()


def test_a_dense_page_stops_reading_when_its_timeout_passes_not_after_the_page():
    """QBANK_OCR_TIMEOUT is asked before every model run, not only between images: one dense page
    read 11-13 s with the timeout at 2 s. Here a page of 50 lines that takes the reader over a second alone stops
    within a few lines of a 0.3 s timeout, and the engine reads the next request whole."""
    from qbank.model.ocr import OcrEngine, ReadStopped
    from qbank.service.reader import OcrLimitError, QbankReader
    from qbank_devtools.photos import render_question

    page = render_question(
        "已知函数f(x)=x²+2x+3，求f(x)在区间[-2,3]上的最大值与最小值。" * 60, width=2000, chars_per_line=48
    )
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    dense = buffer.getvalue()
    reader = QbankReader(ocr_timeout=0.3, ocr_concurrency=1)
    try:
        started = time.monotonic()
        with pytest.raises(OcrLimitError, match=r"over 0.3 s \(QBANK_OCR_TIMEOUT.*1 of 1 images not read"):
            call(reader, "/search", DocumentArray([Document(id="page", blob=dense)]), ocr=True)
        stopped_after = time.monotonic() - started
    finally:
        reader.close()
    engine = OcrEngine()
    started = time.monotonic()
    whole = engine.read(page)
    alone = time.monotonic() - started
    assert len(whole.lines) > 40 and alone > 1.0, (len(whole.lines), alone)
    assert stopped_after < 0.3 + 0.5 * alone, (stopped_after, alone)
    runs = []

    def stop_after_three() -> bool:
        runs.append(1)
        return len(runs) > 3  # the detector and two lines

    with pytest.raises(ReadStopped):
        engine.read(page, stop_after_three)
    assert len(runs) == 4
    assert engine.read(page).lines == whole.lines  # a stopped read leaves the engine as it was


def test_a_page_photo_answers_at_most_ocr_max_segments_questions_and_names_the_rest():
    from PIL import ImageDraw

    from qbank.service.reader import QbankReader
    from qbank_devtools.photos import chinese_font

    lines = ["1. 已知集合A中有三个元素", "2. 一辆汽车每小时行驶六十千米", "3. 把二十克食盐溶于水中"]
    page = Image.new("RGB", (900, 60 + 60 * len(lines)), "white")
    draw = ImageDraw.Draw(page)
    for row, line in enumerate(lines):
        draw.text((40, 30 + 60 * row), line, font=chinese_font(34), fill=(20, 20, 20))
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    reader = QbankReader(ocr_max_segments=2, ocr_figure_search=False)
    try:
        docs = DocumentArray([Document(id="sheet", blob=buffer.getvalue())])
        call(reader, "/search", docs, ocr=True, page=True)
    finally:
        reader.close()
    (photo,) = docs
    assert [c.tags["segment_number"] for c in photo.chunks] == ["1", "2"]
    assert (
        "3 questions were found on the page; the first 2 were searched (QBANK_OCR_MAX_SEGMENTS)"
        in photo.tags["ocr_note"]
    )


def test_the_figure_crop_of_a_large_photo_is_bounded():
    """A photo search passes the figure on as a crop of at most FIGURE_CROP_SIDE pixels a side,
    whatever the photo's size; the region stays in the photo's own pixels."""
    import io

    from qbank.service.reader import FIGURE_CROP_SIDE, QbankReader
    from qbank_devtools.demo import draw_figure
    from qbank_devtools.photos import render_question

    page = render_question("已知等腰三角形的两边长分别为3和7，求这个三角形的周长。", draw_figure("triangle", 4))
    large = page.resize((page.width * 4, page.height * 4), Image.BICUBIC)
    buffer = io.BytesIO()
    large.save(buffer, format="JPEG", quality=90)
    reader = QbankReader()
    try:
        query = DocumentArray([Document(blob=buffer.getvalue())])
        call(reader, "/search", query, ocr=True, figures=True)
        left, top, right, bottom = query[0].tags["figure_region"]
        assert right - left > FIGURE_CROP_SIDE or bottom - top > FIGURE_CROP_SIDE  # the figure is large
        (chunk,) = query[0].chunks
        crop = Image.open(io.BytesIO(chunk.blob))
        # Cut from the photo as read (at most OCR_MAX_SIDE long): still more than CLIP's 224
        assert 224 <= max(crop.size) <= FIGURE_CROP_SIDE
        assert abs(crop.width / crop.height - (right - left) / (bottom - top)) < 0.05
    finally:
        reader.close()
