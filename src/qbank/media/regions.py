"""Where the figure is in a photo of a question: the largest block of ink that is not text.

A photographed question is lines of text plus, often, a figure (a triangle, a circuit, a graph).
The OCR detector already says where the text lines are; what is dark on the page outside them
(after the uneven light of a phone photo is divided out) is the figure, whose crop CLIP then matches
against the bank's figures. numpy and PIL only: no layout model is packaged with rapidocr, and this
needs none for the pages the benchmark renders (bench/photo.py reports how often a figure is found,
and how often one is "found" where there is none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

INK_RATIO = 0.72  # darker than 72 % of the local background is ink (shadows darken the page itself)
TEXT_MARGIN = 6  # pixels around each detected text line that count as that line
MIN_SIDE_FRACTION = 0.08  # a figure spans at least 8 % of the photo's shorter side both ways
MIN_INK_FRACTION = 0.001  # less ink than this share of the photo outside the text is specks
MIN_INK_PIXELS = 60
ROW_GAP_FRACTION = 0.04  # ink rows this close (of the photo's height) belong to one block
PADDING = 8


def ink_mask(image: Image.Image) -> np.ndarray:
    """True where the photo is ink: darker than INK_RATIO of the paper around it. The paper's
    brightness is the brightest pixel of each block a tenth of the shorter side wide (wider than a
    stroke or a chart's bar, so it always holds paper), smoothed: a phone's uneven light divides out."""
    gray = np.asarray(image.convert("L"), np.float32)
    height, width = gray.shape
    block = max(4, min(height, width) // 10)
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(gray, ((0, rows * block - height), (0, cols * block - width)), mode="edge")
    paper = padded.reshape(rows, block, cols, block).max(axis=(1, 3))
    paper_image = Image.fromarray(paper.astype(np.uint8)).filter(ImageFilter.BoxBlur(1))
    background = np.asarray(paper_image.resize((width, height), Image.BILINEAR), np.float32)
    return gray < INK_RATIO * np.maximum(background, 1.0)


def _runs(flags: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of True in ``flags``, bridging gaps of at most ``gap``."""
    runs: list[tuple[int, int]] = []
    for index in np.flatnonzero(flags):
        if runs and index - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], int(index) + 1)
        else:
            runs.append((int(index), int(index) + 1))
    return runs


def figure_region(image: Image.Image, text_boxes: Sequence[np.ndarray]) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the largest block of ink outside ``text_boxes`` (the OCR
    detector's 4-point boxes of the text lines; leave out a figure's own labels, such as "A" or
    "5cm", or they cut holes in it), or None when there is no block big enough to be a figure."""
    mask = ink_mask(image)
    height, width = mask.shape
    for box in text_boxes:
        points = np.asarray(box, np.float32).reshape(-1, 2)
        left, top = np.floor(points.min(axis=0)).astype(int) - TEXT_MARGIN
        right, bottom = np.ceil(points.max(axis=0)).astype(int) + TEXT_MARGIN
        mask[max(0, top) : max(0, bottom), max(0, left) : max(0, right)] = False
    min_ink = max(MIN_INK_PIXELS, int(MIN_INK_FRACTION * height * width))
    if mask.sum() < min_ink:
        return None
    min_side = MIN_SIDE_FRACTION * min(width, height)
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for top, bottom in _runs(mask.sum(axis=1) >= 2, gap=max(2, int(ROW_GAP_FRACTION * height))):
        band = mask[top:bottom]
        for left, right in _runs(band.sum(axis=0) >= 1, gap=max(2, int(ROW_GAP_FRACTION * width))):
            ink = int(band[:, left:right].sum())
            if right - left >= min_side and bottom - top >= min_side and ink >= min_ink:
                if best is None or ink > best[0]:
                    best = (ink, (left, top, right, bottom))
    if best is None:
        return None
    left, top, right, bottom = best[1]
    return (max(0, left - PADDING), max(0, top - PADDING), min(width, right + PADDING), min(height, bottom + PADDING))
