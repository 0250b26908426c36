"""The one matching form of question text (qbank.domain.text), on what PP-OCRv6 returned for
rendered question photos: each pair of (as stored, as read) must meet in one form."""

from __future__ import annotations

import pytest

from qbank.domain.text import folded, match_form, search_form, sequence_similarity

READ_BACK = [  # (stored stem, the text PP-OCRv6 read from a photo of it), observed
    ("已知直线l1∥l2，∠1=55°，求∠2的度数。", "已知直线I1||12,∠1=55°,求∠2的度数。"),
    ("函数f(x)=x²-23x+93的图象与x轴交于A、B两点", "函数f(x)=x2-23x+93的图象与x轴交于A、B两点"),
    ("一个标有“220V 1000W”的电热水壶正常工作15min", "一个标有“220V1000W”的电热水壶正常工作15min"),
    ("若集合A={x|0<x<5}，B={x|x≥2}，求A∩B。", "若集合A={x|0<x<5},B={x|x≥2},求a∩B."),
    ("质量为0.5kg的小球，g取10m/s²", "质量为0.5kg的小球,g取10m/s2"),
    ("物体长lO米", "物体长10米"),
]


@pytest.mark.parametrize(("stored", "read"), READ_BACK)
def test_a_stem_and_its_ocr_reading_have_one_form(stored, read):
    assert match_form(stored) == match_form(read)
    assert sequence_similarity(stored, read) == 1.0


def test_letters_and_digits_are_split_the_same_way_with_or_without_spaces():
    assert folded("220V 1000W") == folded("220V1000W") == "220 v 1000 w"
    assert folded("x²-23x") == folded("x2-23x") == "x 2-23 x"


def test_ordinary_words_keep_their_letters():
    """Only runs holding a digit (or made of look-alikes alone) are folded: English stems keep
    their BM25 tokens."""
    assert folded("The solution of cos x is Long") == "the solution of cos x is long"
    assert folded("OIL") == "011"  # look-alikes alone: the same on both sides, a rare conflation


def test_numbers_that_differ_stay_different():
    assert match_form("男生89人，女生45人") != match_form("男生45人，女生89人")
    assert sequence_similarity("男生89人，女生45人", "男生45人，女生89人") < 1.0
    assert match_form("R1=20Ω") != match_form("R1=30Ω")


def test_the_search_form_is_cut_at_a_character_boundary():
    text = "∥" * 10  # folds to "11" * 10 = 20 bytes
    assert search_form(text, 1000) == "1" * 20
    assert search_form("三角形" * 10, 10) == "三角形"  # 9 bytes: the 4th character would not fit
    assert len(search_form("l1" * 50_000, 65_535).encode()) <= 65_535
