"""Finding the figure on a photographed question (qbank.media.regions) with the real OCR's text
boxes: where it was pasted, under each distortion, and nothing on a page of text alone."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from qbank.media.regions import figure_region
from qbank.model.ocr import OcrEngine
from qbank_devtools.demo import draw_figure
from qbank_devtools.photos import DISTORTIONS, PHONE_CONDITIONS, distort, phone_photo, render_question

STEM = "已知等腰三角形的两边长分别为3和7，求这个三角形的周长。"
SHORT_LAST_LINE = "圆的半径是26厘米，圆心角为21度的扇形面积是多少？"  # wraps to "少？": text, not a figure


@pytest.fixture(scope="module")
def reader():
    return OcrEngine()


def region_of(reader: OcrEngine, page: Image.Image) -> tuple[int, int, int, int] | None:
    return figure_region(page, reader.read(page).text_line_boxes())


@pytest.mark.parametrize("kind", ["triangle", "circuit", "bar_chart", "line_chart", "circle"])
def test_the_figure_is_found_where_it_was_pasted(reader, kind):
    page = render_question(STEM, draw_figure(kind, 3))
    left, top, right, bottom = region_of(reader, page)
    # render_question pastes the 224 x 224 figure at (50, 60 + 52 * lines + 20) below two lines
    pasted = (50, 60 + 52 * 2 + 20, 50 + 224, 60 + 52 * 2 + 20 + 224)
    assert pasted[0] - 10 <= left and right <= pasted[2] + 10 and pasted[1] - 10 <= top and bottom <= pasted[3] + 10
    assert right - left > 60 and bottom - top > 60  # the drawing, not a speck of it


@pytest.mark.parametrize("distortion", DISTORTIONS)
def test_a_figure_is_found_under_every_distortion_and_none_on_text_alone(reader, distortion):
    with_figure = distort(render_question(STEM, draw_figure("triangle", 5)), distortion, seed=2)
    assert region_of(reader, with_figure) is not None
    for stem in (STEM, SHORT_LAST_LINE):
        assert region_of(reader, distort(render_question(stem), distortion, seed=2)) is None


@pytest.mark.parametrize("condition", [c for c in PHONE_CONDITIONS if c != "dim"])
def test_the_desk_around_the_page_and_a_shadow_edge_are_no_figure_and_a_figure_on_the_page_is(reader, condition):
    """A phone photo shows the desk around the page, often a hard shadow across it: darker than the
    paper beside them, they were taken for ink, and a "figure" filling the photo was found on 42 of
    48 photos of typeset questions without one (each a CLIP encode). A figure drawn on the page is
    still found, below the text where it was printed. (Dim photos: the figure's ink is too faint for
    the ink rule; their text is read on the second look.)"""
    for seed, stem in enumerate((STEM, SHORT_LAST_LINE, "下列说法正确的是（ ）A.甲 B.乙 C.丙 D.丁")):
        assert region_of(reader, phone_photo(render_question(stem), condition, seed=seed)) is None, (stem, seed)
    photo = phone_photo(render_question(STEM, draw_figure("circuit", 2)), condition, seed=4)
    left, top, right, bottom = region_of(reader, photo)
    assert top > photo.height * 0.3 and right < photo.width * 0.6 and bottom - top > photo.height * 0.2
    # A hurried shot whose edge cuts through the figure: the figure meets the edge, and is found
    hurried = photo.crop((0, 0, photo.width, (top + bottom) // 2 + (bottom - top) // 6))
    left, top, right, bottom = region_of(reader, hurried)
    assert bottom == hurried.height and bottom - top > hurried.height * 0.15


def test_a_blank_page_has_no_figure(reader):
    assert figure_region(Image.new("RGB", (400, 300), "white"), []) is None
    specks = Image.new("RGB", (400, 300), "white")
    specks.putpixel((100, 100), (0, 0, 0))
    specks.putpixel((300, 200), (0, 0, 0))
    assert figure_region(specks, []) is None


def test_both_cpu_engines_read_the_same_text_of_a_photo(reader):
    """onnxruntime (the default) and OpenVINO run the same packaged models: the same lines come
    out of the same photo, so choosing the faster one on a machine changes no result."""
    page = distort(render_question(STEM, draw_figure("circuit", 4)), "tilted", seed=3)
    openvino_reader = OcrEngine(engine="openvino")
    assert reader.engine_name == "onnxruntime" and openvino_reader.engine_name == "openvino"
    assert reader.read(page).text == openvino_reader.read(page).text
    assert "等腰三角形" in reader.read(page).text


def onnxruntime_session(stage):  # noqa: ANN001, ANN201 - a rapidocr stage, its InferenceSession
    """The onnxruntime InferenceSession inside a rapidocr stage's session wrappers (rapidocr's
    OrtInferSession, the reader's stoppable session)."""
    session = stage.session
    while not hasattr(session, "get_session_options"):
        session = session.session
    return session


def spinning_entry(session) -> str | None:  # noqa: ANN001 - an onnxruntime InferenceSession
    """The session's allow_spinning entry; None where it was never set (onnxruntime's default: spin)."""
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:
        return None


def test_both_spinning_settings_read_the_same_text_and_every_model_is_loaded_before_a_request(reader):
    """QBANK_OCR_SPINNING rebuilds the loaded onnxruntime sessions: the same lines come out, and the
    recogniser is loaded when the reader is built (a blank warm-up page has no line to recognise)."""
    page = distort(render_question(STEM, draw_figure("triangle", 2)), "all", seed=4)
    sleeping = OcrEngine(spinning=not reader.spinning)
    for built in (reader, sleeping):
        sessions = [onnxruntime_session(built.engine.text_det), onnxruntime_session(built.engine.text_rec)]
        assert [spinning_entry(session) for session in sessions] == [None if built.spinning else "0"] * 2
    assert reader.read(page).text == sleeping.read(page).text
    assert "等腰三角形" in sleeping.read(page).text


def test_an_unknown_ocr_engine_is_refused_by_name():
    with pytest.raises(ValueError, match="'openvino' or 'onnxruntime', got 'paddle'"):
        OcrEngine(engine="paddle")


DETERMINANT = [  # KaTeX sets the matrix taller than a line; the detector reads parts of it, not all
    r"四阶行列式 $D=\left|\begin{array}{cccc}a_1 & 0 & 0 & b_1 \\ 0 & a_2 & b_2 & 0 \\ "
    r"0 & b_3 & a_3 & 0 \\ b_4 & 0 & 0 & a_4\end{array}\right|$ 的值等于（ ）",
    "A. $a_1a_2a_3a_4$",
    "B. $b_1b_2b_3b_4$",
]


@pytest.mark.service
def test_typeset_math_the_detector_leaves_out_is_no_figure_and_a_figure_beside_it_still_is(reader):
    """The matrix's entries and bars lie outside the text lines the detector found: before the
    joined-stroke test they were a "figure" under every distortion (a CLIP encode and a figure search
    on a page that has none). A drawn triangle on a typeset page is still found."""
    from qbank_devtools.typeset import Typesetter

    with Typesetter() as typesetter:
        page = typesetter.page(DETERMINANT)
    for distortion in DISTORTIONS:
        assert region_of(reader, distort(page, distortion, seed=0)) is None, distortion
    with_figure = page.copy()
    with_figure.paste(Image.open(io.BytesIO(draw_figure("triangle", 1))), (page.width - 240, 10))
    left, top, right, bottom = region_of(reader, with_figure)
    assert left >= page.width - 250 and right - left > 60 and bottom - top > 60


def _as_photographed(page: Image.Image, seed: int) -> Image.Image:
    """Sensor noise and the phone's JPEG over ``page`` (qbank_devtools.photos' last step)."""
    import numpy as np

    from qbank_devtools.photos import _as_a_phone_saves_it

    return _as_a_phone_saves_it(np.asarray(page, np.float32), np.random.default_rng(seed))


def _bgr(image: Image.Image):
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def test_a_wide_strip_of_small_text_is_read_on_a_second_look_sized_by_its_short_side(reader):
    """A one-line strip 1788 px wide with 8 px text: at the detector's 736 px its text is 3 px and
    nothing is found; sized by its short side (as rapidocr does by default) the line reads."""
    from PIL import ImageDraw

    from qbank.model.ocr import LITTLE_TEXT_CHARS
    from qbank_devtools.photos import chinese_font

    strip = Image.new("RGB", (1788, 263), "white")
    ImageDraw.Draw(strip).text((30, 100), STEM * 3, font=chinese_font(8), fill=(20, 20, 20))
    strip = _as_photographed(strip, seed=0)
    assert len(reader._read_bgr(_bgr(strip)).text) < LITTLE_TEXT_CHARS  # the first look alone
    assert "等腰三角形的两边长" in reader.read(strip).text


def test_faint_print_in_a_dim_photo_is_read_on_a_second_look_with_its_contrast_equalised(reader):
    """Grey print photographed in a dim room: the text is 8 levels above the paper under the
    phone's noise, and the first look finds nothing; equalised tile by tile it reads."""
    from PIL import ImageDraw

    from qbank_devtools.photos import chinese_font

    page = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(page)
    for number, line in enumerate(("已知等腰三角形的两边长分别为3和7，", "求这个三角形的周长。")):
        draw.text((30, 40 + 80 * number), line, font=chinese_font(28), fill=(215, 215, 215))
    dim = _as_photographed(page.point(lambda v: round(v * 0.2)), seed=1)
    assert reader._read_bgr(_bgr(dim)).text == ""
    assert "三角形的周长" in reader.read(dim).text
