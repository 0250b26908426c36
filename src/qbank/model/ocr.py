"""Reading the text in a photo or a figure: PP-OCRv6 (detection + recognition, Chinese, the "small"
models) from the rapidocr wheel, on ONNX Runtime (or OpenVINO on the CPU, when asked).

The models are the real pretrained ones packaged in the wheel (Apache-2.0, (c) PaddleOCR); rapidocr's
default configuration uses them and downloads nothing, and this module never selects another model
(other choices download at run time). rapidocr loads models on the first call (1.4-2.9 s measured),
so the reader reads one blank image when it is built: a replica is ready when it says so.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from qbank.config import OCR_MAX_SIDE, OcrSettings

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger("qbank.model.ocr")

LITTLE_TEXT_CHARS = 8  # a read shorter than this is looked at again: CMMLU's shortest stems are longer
SECOND_LOOK_PIXELS = 2_500_000  # a second look's detector input at most: 0.4-0.6 s on 2 cores


class OcrUnavailableError(RuntimeError):
    """rapidocr (the `ocr` extra) is not installed, or its packaged models cannot be loaded."""


class ReadStopped(Exception):
    """A read was stopped between two model runs because its caller asked (``read(stop=...)``)."""


class _StoppableSession:
    """A rapidocr model session that asks its reader's ``stop`` before each run. A dense page is one
    detection and then one recognition run per line (rec_batch 1): a 2000 x 2000 page of small text
    read for 11-13 s with QBANK_OCR_TIMEOUT at 2 s, since the timeout was only looked at between
    images; checked before every run, a read overshoots by one run."""

    def __init__(self, session: Any, reader: OcrEngine):
        self.session = session
        self.reader = reader

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stop = self.reader.stop
        if stop is not None and stop():
            raise ReadStopped()
        return self.session(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@dataclass
class OcrResult:
    """What was read: the lines (top to bottom as detected) kept above the score threshold."""

    lines: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # each line's 4 corner points, in pixels

    def text_line_boxes(self, min_chars: int = 3) -> list[np.ndarray]:
        """The boxes of the stem's lines, not of a figure's labels ("A", "5cm") or of chart parts the
        detector took for letters: lines of at least ``min_chars`` characters, and shorter ones only
        where they look like a stem's last line (the stem's line height, starting at its margin).
        Measured on rendered photos (bench/photo.py): masking every box hid small charts; masking
        only long lines made a short last line such as "少？" a figure."""
        long_boxes, short_boxes = [], []
        for line, box in zip(self.lines, self.boxes, strict=True):
            (long_boxes if len(line.strip()) >= min_chars else short_boxes).append(np.asarray(box, np.float32))
        if not long_boxes:
            return short_boxes
        line_height = float(np.median([b[:, 1].max() - b[:, 1].min() for b in long_boxes]))
        margin = float(min(b[:, 0].min() for b in long_boxes))
        return long_boxes + [
            b
            for b in short_boxes
            if 0.6 * line_height <= b[:, 1].max() - b[:, 1].min() <= 1.6 * line_height  # the detector pads
            and abs(b[:, 0].min() - margin) <= line_height  # short boxes more: "少？" came 1.4x as tall
        ]

    @property
    def text(self) -> str:
        """The lines joined as one text, NFKC-normalised (OCR returns full-width forms unevenly)."""
        return unicodedata.normalize("NFKC", "".join(self.lines)).strip()


# The reader's defaults have one home, the settings class (qbank.config.OcrSettings): a reader
# built here without arguments reads as the service's does.
_SETTING = {name: field.default for name, field in OcrSettings.__fields__.items()}


class OcrEngine:
    """One rapidocr engine with qbank's settings (see ``qbank.config.OcrSettings``)."""

    def __init__(
        self,
        det_side: int = _SETTING["ocr_det_side"],
        use_cls: bool = _SETTING["ocr_use_cls"],
        min_score: float = _SETTING["ocr_min_score"],
        threads: int = _SETTING["ocr_threads"],
        cuda: bool = False,
        rec_batch: int = _SETTING["ocr_rec_batch"],
        arena: bool = True,
        engine: str = _SETTING["ocr_engine"],
        rec_min_width: int = _SETTING["ocr_rec_min_width"],
        spinning: bool = _SETTING["ocr_spinning"],
    ):
        """``rec_batch``: text lines recognised per model call. rapidocr pads a batch to its widest
        line, and a page's lines range from "A. 16" to a full stem: on typeset CMMLU pages one line a
        call read as well and took 0.51 s against 0.73 s for rapidocr's 6 (bench/ocr.py).

        ``engine``: "onnxruntime" or "openvino" (the `openvino` extra), for the CPU; CUDA always runs
        on onnxruntime. The same models read the same text on both. Alone, OpenVINO read a photo it
        had not seen in 0.69x onnxruntime's time on bench/photo.py's pages and 0.92x on typeset CMMLU
        pages (bench/ocr.py --rounds 1, 2 cores); through the Flow, on the CMMLU pages, it took 1.04-1.07x
        (bench/reader_flow.py), so onnxruntime stays the default.

        ``det_side`` 736 and ``rec_min_width`` 96 (rapidocr pads every line to 320 px, and a page's
        option lines are 40-140 px wide): on typeset CMMLU pages through the Flow 0.84x the reader's
        CPU-s and 0.85x the p50 of 960 / 320, recall@1 kept (bench/reader_flow.py); alone, the text
        read matched the page as well or better (0.9654 against 0.9599; dense pages of three
        questions 0.9975 against 0.9974).

        ``spinning``: onnxruntime's intra-op threads busy-wait for work between operators (its default,
        which rapidocr exposes no setting for) or sleep (False). The models run many small operators
        on a page's lines, so spinning burns the cores the encoder and the gateway need: asleep, photo
        search through the Flow took 0.92x the p50 (214 against 233 ms) and 0.78x the reader's CPU-s
        a photo (0.384 against 0.491) on typeset CMMLU pages (bench/reader_flow.py, 4 rounds, 2 cores);
        alone, 0.94x the wall time and 0.84x the CPU."""
        try:
            from rapidocr import EngineType, RapidOCR
        except ImportError as exc:
            raise OcrUnavailableError(
                f"OCR needs the rapidocr package (install the project's `ocr` extra): {exc}"
            ) from None
        if engine not in ("openvino", "onnxruntime"):
            raise ValueError(f"OCR engine must be 'openvino' or 'onnxruntime', got {engine!r}")
        if cuda:
            engine = "onnxruntime"
        if engine == "openvino":
            try:
                import openvino  # noqa: F401
            except ImportError as exc:
                raise OcrUnavailableError(
                    f"the OCR engine 'openvino' needs the openvino package (the project's `openvino` extra), "
                    f"or set QBANK_OCR_ENGINE=onnxruntime: {exc}"
                ) from None
        engine_type = EngineType.OPENVINO if engine == "openvino" else EngineType.ONNXRUNTIME
        self.spinning = spinning or engine != "onnxruntime" or cuda  # only CPU onnxruntime is rebuilt
        params = {
            "Global.use_cls": use_cls,
            "Global.text_score": min_score,
            "Global.log_level": "error",  # "text detection result is empty" is an answer, not a warning
            "Det.limit_type": "max",
            "Det.limit_side_len": det_side,
            "EngineConfig.onnxruntime.use_cuda": bool(cuda),
            # rapidocr turns onnxruntime's CPU arena off; on, a typeset page took 7 % less (24 CMMLU
            # pages, each way alone; bench/ocr.py measures it with rec_batch together)
            "EngineConfig.onnxruntime.enable_cpu_mem_arena": arena,
            "Rec.rec_batch_num": rec_batch,
            # A line is recognised 48 px high and padded to at least this width (rapidocr: 320, from
            # PaddleOCR's batch alignment): a page's option lines ("A. 16") are far narrower
            "Rec.rec_img_shape": [3, 48, rec_min_width],
        }
        for stage in ("Det", "Rec", "Cls"):
            params[f"{stage}.engine_type"] = engine_type
        if threads > 0:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            params["EngineConfig.openvino.inference_num_threads"] = threads
        self.stop: Callable[[], bool] | None = None  # the read in progress's stop question (one thread a reader)
        try:
            self.engine = RapidOCR(params=params)
            self._warm_up(use_cls)
            if not self.spinning:
                self._stop_spinning()
                self._warm_up(use_cls)  # the rebuilt sessions' first run, not a request's
            for stage in (self.engine.text_det, self.engine.text_cls, self.engine.text_rec):
                if stage is not None:
                    stage.session = _StoppableSession(stage.session, self)
        except Exception as exc:  # rapidocr raises its own and plain errors on a broken install
            raise OcrUnavailableError(f"the OCR models could not be loaded: {exc}") from None
        self.min_score = min_score
        self.use_cls = use_cls
        self.engine_name = engine
        logger.info(
            "OCR ready: PP-OCRv6 det/rec small on %s, detector side %d, direction classifier %s",
            engine,
            det_side,
            use_cls,
        )

    def _warm_up(self, use_cls: bool) -> None:
        """Load and run every model now, not on a request. A blank page has no line to recognise and
        rapidocr loads each model on its first use, so the recogniser gets a call of its own (rapidocr
        keeps the stages a call asked for: read() names them every time)."""
        blank = np.full((64, 64, 3), 255, dtype=np.uint8)
        self.engine(blank)
        self.engine(blank, use_det=False, use_cls=use_cls, use_rec=True)

    def _stop_spinning(self) -> None:
        """Rebuild each loaded onnxruntime session with rapidocr's own options and spinning off
        (rapidocr builds its sessions itself and takes a prebuilt one only through a configuration
        that cannot hold one)."""
        from onnxruntime import InferenceSession
        from rapidocr.inference_engine.onnxruntime.main import OrtInferSession

        options = OrtInferSession._init_sess_opts(self.engine.cfg.EngineConfig.onnxruntime)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for stage in (self.engine.text_det, self.engine.text_cls, self.engine.text_rec):
            ort = getattr(stage, "session", None)
            if not isinstance(ort, OrtInferSession):
                continue
            built = ort.session
            providers = [(name, built.get_provider_options().get(name, {})) for name in built.get_providers()]
            ort.session = InferenceSession(built._model_path, sess_options=options, providers=providers)

    def read(self, image: Image.Image, stop: Callable[[], bool] | None = None) -> OcrResult:
        """The text lines of ``image`` (an RGB PIL image; rapidocr takes BGR arrays). ``stop`` is asked
        before each model run; when it answers True the read ends with ReadStopped.

        A photo that reads less than LITTLE_TEXT_CHARS is looked at again before its caller falls back
        to the photo's CLIP vector (issue 45): sized by its short side, when the detector shrank it
        (a one-line strip of small text 1788 px wide reads nothing at 736 px: its text is 4 px there),
        then with its contrast equalised (faint print in a dim room: text a few levels above the paper,
        under the phone's noise). The look that reads the most is kept."""
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        self.stop = stop
        try:
            result = self._read_bgr(bgr)
            if len(result.text) >= LITTLE_TEXT_CHARS:
                return result
            for look in (self._read_sized_by_short_side, self._read_equalised):
                again = look(bgr)
                if again is not None and len(again.text) > len(result.text):
                    result = again
                if len(result.text) >= LITTLE_TEXT_CHARS:
                    break
            return result
        finally:
            self.stop = None

    def _read_bgr(self, bgr: np.ndarray) -> OcrResult:
        output = self.engine(bgr, use_det=True, use_cls=self.use_cls, use_rec=True)
        texts, scores = output.txts or (), output.scores or ()
        boxes = list(output.boxes) if output.boxes is not None else [None] * len(texts)
        kept = [
            (t, float(s), b) for t, s, b in zip(texts, scores, boxes, strict=True) if t and float(s) >= self.min_score
        ]
        return OcrResult([t for t, _, _ in kept], [s for _, s, _ in kept], [b for _, _, b in kept])

    def _read_sized_by_short_side(self, bgr: np.ndarray) -> OcrResult | None:
        """Read again with the detector sized as rapidocr sizes it by default (the short side to
        ``det_side``, at most SECOND_LOOK_PIXELS), when that shows the text at least 1.5x larger than
        the first read did; None when it would not."""
        detector = self.engine.text_det
        high, wide = bgr.shape[:2]
        bounded = min(1.0, OCR_MAX_SIDE / max(high, wide))  # rapidocr's own bound, before the detector
        long_side, short_side = max(high, wide) * bounded, min(high, wide) * bounded
        first = min(1.0, detector.limit_side_len / long_side) if detector.limit_type == "max" else 1.0
        scale = max(1.0, detector.limit_side_len / short_side)
        scale = min(scale, (SECOND_LOOK_PIXELS / (long_side * short_side)) ** 0.5)
        if scale < 1.5 * first:
            return None
        saved = detector.limit_type, detector.limit_side_len
        detector.limit_type, detector.limit_side_len = "min", max(32, round(short_side * scale))
        try:
            return self._read_bgr(bgr)
        finally:
            detector.limit_type, detector.limit_side_len = saved

    def _read_equalised(self, bgr: np.ndarray) -> OcrResult:
        """Read again with the lightness equalised tile by tile (CLAHE), which lifts faint print out of
        a dim or shadowed photo; boxes stay in the photo's own pixels."""
        import cv2

        lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
        lab[:, :, 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
        return self._read_bgr(np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)))
