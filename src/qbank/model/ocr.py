"""Reading the text in a photo or a figure: PP-OCRv6 (detection + recognition, Chinese, the "small"
models) from the rapidocr wheel, on ONNX Runtime.

The models are the real pretrained ones packaged in the wheel (Apache-2.0, (c) PaddleOCR); rapidocr's
default configuration uses them and downloads nothing, and this module never selects another model
(other choices download at run time). rapidocr loads models on the first call (1.4-2.9 s measured),
so the reader reads one blank image when it is built: a replica is ready when it says so.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger("qbank.model.ocr")


class OcrUnavailableError(RuntimeError):
    """rapidocr (the `ocr` extra) is not installed, or its packaged models cannot be loaded."""


@dataclass
class OcrResult:
    """What was read: the lines (top to bottom as detected) kept above the score threshold."""

    lines: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The lines joined as one text, NFKC-normalised (OCR returns full-width forms unevenly)."""
        return unicodedata.normalize("NFKC", "".join(self.lines)).strip()


class OcrReader:
    """One rapidocr engine with qbank's settings (see ``qbank.config.OcrSettings``)."""

    def __init__(
        self, det_side: int = 960, use_cls: bool = False, min_score: float = 0.5, threads: int = 0, cuda=False
    ):
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise OcrUnavailableError(
                f"OCR needs the rapidocr package (install the project's `ocr` extra): {exc}"
            ) from None
        params = {
            "Global.use_cls": use_cls,
            "Global.text_score": min_score,
            "Global.log_level": "error",  # "text detection result is empty" is an answer, not a warning
            "Det.limit_type": "max",
            "Det.limit_side_len": det_side,
            "EngineConfig.onnxruntime.use_cuda": bool(cuda),
        }
        if threads > 0:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        try:
            self.engine = RapidOCR(params=params)
            self.engine(np.full((64, 64, 3), 255, dtype=np.uint8))  # loads the models now, not on a request
        except Exception as exc:  # rapidocr raises its own and plain errors on a broken install
            raise OcrUnavailableError(f"the OCR models could not be loaded: {exc}") from None
        self.min_score = min_score
        logger.info("OCR ready: PP-OCRv6 det/rec small, detector side %d, direction classifier %s", det_side, use_cls)

    def read(self, image: Image.Image) -> OcrResult:
        """The text lines of ``image`` (an RGB PIL image; rapidocr takes BGR arrays)."""
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        output = self.engine(bgr)
        texts, scores = output.txts or (), output.scores or ()
        kept = [(t, float(s)) for t, s in zip(texts, scores, strict=True) if t and float(s) >= self.min_score]
        return OcrResult([t for t, _ in kept], [s for _, s in kept])
