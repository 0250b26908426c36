"""Printed pages of real questions: a stem and its options typeset by KaTeX (the copy the search
page ships) in headless Chromium at 2x, as an exam paper or workbook prints them; bench/realbank.py
photographs them with :func:`qbank_devtools.photos.distort`.

The stem is set as text (never parsed as HTML) and KaTeX's auto-render typesets its math spans
(``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) with errors shown as text, as the search page does.
Needs Chromium and chromedriver (scripts/test.sh installs them) and selenium (the dev extra).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KATEX = Path(__file__).resolve().parents[1] / "qbank" / "service" / "page_assets" / "katex"
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{katex}/katex.min.css">
<script src="{katex}/katex.min.js"></script><script src="{katex}/auto-render.min.js"></script>
<style>
body {{ margin: 0; background: #fff; }}
#page {{ width: 540px; padding: 24px; font: 18px/1.8 "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif;
  color: #141414; background: #fff; }}
#page p {{ margin: 0; white-space: pre-wrap; break-inside: avoid; }}
#page.two-columns {{ width: 860px; column-count: 2; column-gap: 48px; column-fill: balance; }}
</style></head><body><div id="page"></div></body></html>
"""
DELIMITERS = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
]
TYPESET = """
const [lines, delimiters, columns] = arguments;
const page = document.getElementById('page');
page.className = columns === 2 ? 'two-columns' : '';
page.replaceChildren();
for (const line of lines) {
  const p = document.createElement('p');
  p.textContent = line;
  page.appendChild(p);
}
renderMathInElement(page, {delimiters, throwOnError: false, trust: false, maxExpand: 100});
return document.fonts.ready.then(() => true);
"""


class Typesetter:
    """One headless Chromium at device scale 2 typesetting pages, one at a time (a context manager)."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for path in (CHROMIUM, CHROMEDRIVER):
            if not Path(path).exists():
                raise FileNotFoundError(f"{path} is missing: scripts/test.sh installs chromium and chromium-driver")
        self._folder = tempfile.TemporaryDirectory(prefix="qbank-typeset-")
        page = Path(self._folder.name) / "page.html"
        page.write_text(PAGE.format(katex=KATEX.as_uri()), encoding="utf-8")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--force-device-scale-factor=2",
            "--allow-file-access-from-files",
            "--window-size=1000,2000",
        ):
            options.add_argument(argument)
        self._driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self._driver.set_script_timeout(30)
        self._driver.get(page.as_uri())

    def page(self, lines: list[str], columns: int = 1) -> Image.Image:
        """``lines`` (a stem, then its options) typeset on a white page, as an RGB image at 2x."""
        return self.page_with_boxes(lines, columns)[0]

    def page_with_boxes(self, lines: list[str], columns: int = 1) -> tuple[Image.Image, list[tuple[int, ...]]]:
        """The page, and each line's box (left, top, right, bottom) in its pixels: where a hand crop
        of one question, or a pen mark over one line, falls. ``columns`` 2: an exam sheet's two
        balanced columns, 860 px wide."""
        from selenium.webdriver.common.by import By

        self._driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            + "(function(){"
            + TYPESET
            + "}).apply(null, Array.from(arguments).slice(0, 3)).then(done);",
            lines,
            DELIMITERS,
            columns,
        )
        page = self._driver.find_element(By.ID, "page")
        rects = self._driver.execute_script(
            "const top = arguments[0].getBoundingClientRect();"
            "return Array.from(arguments[0].children).map(p => { const r = p.getBoundingClientRect();"
            "return [r.left - top.left, r.top - top.top, r.right - top.left, r.bottom - top.top]; });",
            page,
        )
        image = Image.open(io.BytesIO(page.screenshot_as_png)).convert("RGB")
        return image, [tuple(round(2 * v) for v in rect) for rect in rects]

    def close(self) -> None:
        self._driver.quit()
        self._folder.cleanup()

    def __enter__(self) -> Typesetter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
