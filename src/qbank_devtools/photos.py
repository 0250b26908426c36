"""Phone-photo stand-ins for questions: a stem (and its figure) rendered in a Chinese font, then
distorted as a phone photo would be (rotation, blur, JPEG, downscale, tilt, shadow).

The OCR tests and bench/photo.py read these with the real OCR model. Fonts: Debian's
fonts-wqy-microhei (scripts/test.sh installs it) or Noto CJK.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)
DISTORTIONS = ("clean", "rotated", "blurred", "jpeg40", "small", "tilted", "shadow", "all")


def chinese_font(size: int) -> ImageFont.FreeTypeFont:
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    raise FileNotFoundError(
        f"no Chinese font found (looked for {', '.join(FONT_CANDIDATES)}): apt install fonts-wqy-microhei"
    )


def render_question(stem: str, figure: bytes | None = None, width: int = 1000, chars_per_line: int = 24) -> Image.Image:
    """The stem on a white page, wrapped, with the figure (PNG bytes) below it when given."""
    font = chinese_font(34)
    lines = [stem[i : i + chars_per_line] for i in range(0, len(stem), chars_per_line)]
    figure_image = Image.open(io.BytesIO(figure)).convert("RGB") if figure else None
    height = 60 + 52 * len(lines) + (figure_image.height + 40 if figure_image else 0) + 40
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for number, line in enumerate(lines):
        draw.text((50, 50 + 52 * number), line, font=font, fill=(20, 20, 20))
    if figure_image:
        page.paste(figure_image, (50, 60 + 52 * len(lines) + 20))
    return page


def distort(page: Image.Image, kind: str, seed: int = 0) -> Image.Image:
    """``page`` as a phone photo of kind ``kind`` (one of DISTORTIONS)."""
    rng = np.random.default_rng(seed)
    image = page
    if kind in ("rotated", "all"):
        image = image.rotate(float(rng.uniform(-8, 8)), expand=True, fillcolor="white", resample=Image.BICUBIC)
    if kind in ("tilted", "all"):
        w, h = image.size
        dx, dy = w * 0.06, h * 0.06
        quad = (rng.uniform(0, dx), rng.uniform(0, dy), rng.uniform(0, dx), h - rng.uniform(0, dy))
        quad += (w - rng.uniform(0, dx), h - rng.uniform(0, dy), w - rng.uniform(0, dx), rng.uniform(0, dy))
        image = image.transform((w, h), Image.QUAD, quad, resample=Image.BICUBIC, fillcolor="white")
    if kind in ("shadow", "all"):
        w, h = image.size
        gradient = np.linspace(1.0, 0.55, w)[None, :, None] * np.linspace(1.0, 0.8, h)[:, None, None]
        image = Image.fromarray((np.asarray(image, dtype=np.float32) * gradient).astype(np.uint8))
    if kind in ("blurred", "all"):
        image = image.filter(ImageFilter.GaussianBlur(1.2))
    if kind in ("small", "all"):
        image = image.resize((max(1, image.width // 3), max(1, image.height // 3)), Image.BILINEAR)
    if kind in ("jpeg40", "all"):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=40)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def photo_bytes(stem: str, kind: str = "clean", figure: bytes | None = None, seed: int = 0) -> bytes:
    """A JPEG 'photo' of the question, as a phone would send it."""
    buffer = io.BytesIO()
    distort(render_question(stem, figure), kind, seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()
