"""Where the figure is in a photo of a question: the largest block of ink that is not text.

A photographed question is lines of text plus, often, a figure (a triangle, a circuit, a graph).
The OCR detector already says where the text lines are; what is dark on the page outside them
(after the uneven light of a phone photo is divided out) is the figure, whose crop CLIP then matches
against the bank's figures. numpy, PIL and OpenCV's connected components (rapidocr's own dependency):
no layout model is packaged with rapidocr, and this needs none for the pages the benchmark renders
(bench/photo.py reports how often a figure is found, and how often one is "found" where there is
none).

Math the detector leaves out is ink outside the text lines too: on typeset CMMLU LaTeX questions
(bench/realbank.py) 8-11 of 120 photos had a "figure" that was a formula or a line of text the
detector missed, each costing a CLIP encode and a figure search. A figure is drawn in strokes that
join: its largest connected piece of ink measured at least 1.02 text lines in both directions (a
line's height as its detected box spans it) on each of the 190 figures found in 192 photos of
the demo's six figure kinds under bench/photo.py's distortions, two seeds (the lowest on rotated
pages, whose boxes are taller), and at most 0.56 on those formulas (glyphs, fraction bars, a
determinant's narrow bars). A block counts as a figure only with a piece of at least
MIN_STROKE_LINES lines each way, between the two (1.36x from each): it kept every figure found
before and found none of the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

INK_RATIO = 0.72  # darker than 72 % of the local background is ink (shadows darken the page itself)
TEXT_MARGIN = 6  # pixels around each detected text line that count as that line
MIN_SIDE_FRACTION = 0.08  # a figure spans at least 8 % of the photo's shorter side both ways
MIN_INK_FRACTION = 0.001  # less ink than this share of the photo outside the text is specks
MIN_INK_PIXELS = 60
ROW_GAP_FRACTION = 0.04  # ink rows this close (of the photo's height) belong to one block
PADDING = 8
MIN_STROKE_LINES = 0.75  # a figure's largest joined piece of ink spans this many text lines both ways
EDGE_CONTACT_SHARE = 0.25  # ink along the photo's edge for this share of its shorter side is the desk


def ink_mask(image: Image.Image) -> np.ndarray:
    """True where the photo is ink: darker than INK_RATIO of the paper around it. The paper's
    brightness is the photo closed by a square a tenth of its shorter side wide (the brightest
    pixel around each pixel, then the darkest of those): wider than a stroke or a chart's bar, which
    it fills with the paper beside them, while a region darker than the paper and wider than that (a
    shadow, the desk around the page) keeps its own level and is not ink, sharp edge included. A
    phone's uneven light divides out. (The brightest pixel of each block, smoothed, made a band of
    "ink" along every shadow edge and around the page, found as a figure on photos that had none.)"""
    import cv2

    gray = np.asarray(image.convert("L"), np.uint8)
    height, width = gray.shape
    side = max(4, min(height, width) // 10) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    paper = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    return gray.astype(np.float32) < INK_RATIO * np.maximum(paper.astype(np.float32), 1.0)


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
    line_heights = []
    for box in text_boxes:
        points = np.asarray(box, np.float32).reshape(-1, 2)
        line_heights.append(float(points[:, 1].max() - points[:, 1].min()))
        left, top = np.floor(points.min(axis=0)).astype(int) - TEXT_MARGIN
        right, bottom = np.ceil(points.max(axis=0)).astype(int) + TEXT_MARGIN
        mask[max(0, top) : max(0, bottom), max(0, left) : max(0, right)] = False
    mask = _without_edge_pieces(mask)
    min_ink = max(MIN_INK_PIXELS, int(MIN_INK_FRACTION * height * width))
    if mask.sum() < min_ink:
        return None
    min_side = MIN_SIDE_FRACTION * min(width, height)
    min_stroke = MIN_STROKE_LINES * float(np.median(line_heights)) if line_heights else 0.0
    blocks: list[tuple[int, tuple[int, int, int, int]]] = []
    for top, bottom in _runs(mask.sum(axis=1) >= 2, gap=max(2, int(ROW_GAP_FRACTION * height))):
        band = mask[top:bottom]
        for left, right in _runs(band.sum(axis=0) >= 1, gap=max(2, int(ROW_GAP_FRACTION * width))):
            ink = int(band[:, left:right].sum())
            if right - left >= min_side and bottom - top >= min_side and ink >= min_ink:
                blocks.append((ink, (left, top, right, bottom)))
    for _, (left, top, right, bottom) in sorted(blocks, reverse=True):  # the most ink first
        if _largest_piece_side(mask[top:bottom, left:right]) >= min_stroke:
            return (
                max(0, left - PADDING),
                max(0, top - PADDING),
                min(width, right + PADDING),
                min(height, bottom + PADDING),
            )
    return None


def _without_edge_pieces(mask: np.ndarray) -> np.ndarray:
    """``mask`` without the pieces of ink (8-connected) that run along the photo's edge for at least
    EDGE_CONTACT_SHARE of its shorter side: the desk beside the page, where a band of it narrower
    than the paper's closing counts as ink. A figure the photo's edge cuts through meets the edge
    at its strokes only, and stays: dropping every piece that touched the edge lost 62 of 79 such
    figures found (a hurried shot cut through its figure, 84 photos under 7 phone conditions)."""
    import cv2

    count, labels, _, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    height, width = mask.shape
    border = np.concatenate([labels[0, :], labels[-1, :], labels[1:-1, 0], labels[1:-1, -1]])
    along_edge = np.bincount(border, minlength=count) >= EDGE_CONTACT_SHARE * min(height, width)
    along_edge[0] = False  # the background
    return mask & ~along_edge[labels] if along_edge.any() else mask


def _largest_piece_side(mask: np.ndarray) -> int:
    """The shorter side of the bounding box of the largest (by that side) 8-connected piece of ink."""
    import cv2  # opencv-python-headless: the ocr extra, which the reader that calls this needs anyway

    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int(np.minimum(stats[1:count, cv2.CC_STAT_WIDTH], stats[1:count, cv2.CC_STAT_HEIGHT]).max(initial=0))
