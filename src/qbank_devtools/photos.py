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
        # the page on a white margin first: the quad below reaches 6 % inside each edge, which cut a
        # two-column sheet's question numbers off its left edge (a student keeps them in the shot)
        w, h = image.size
        margined = Image.new("RGB", (round(w * 1.14), round(h * 1.14)), "white")
        margined.paste(image, (round(w * 0.07), round(h * 0.07)))
        image = margined
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


# Phone conditions harder than DISTORTIONS (issue 45): what a hurried student's phone makes of a page.
PHONE_CONDITIONS = (
    "perspective",
    "curved",
    "shadow_edge",
    "motion_blur",
    "low_res",
    "moire",
    "curved_shadow_blur",
    "dim",
)
KAI_FONT = "/usr/share/fonts/truetype/arphic/ukai.ttc"  # Debian's fonts-arphic-ukai: a brush-like Kai face


def phone_photo(page: Image.Image, condition: str, seed: int = 0) -> Image.Image:
    """``page`` (typeset at 2x) as a phone photographs it under ``condition`` (one of PHONE_CONDITIONS),
    from a phone's distance, on a desk, with sensor noise and the phone's JPEG:

    * perspective: the camera tilted 15-25 degrees (one edge 15-30 % shorter) and turned a little;
    * curved: a page bulging off the desk (rows bent by 2.5-4 % of the photo's long side);
    * shadow_edge: a hand's or the phone's hard shadow over part of the page (to 45-60 % brightness);
    * motion_blur: the hand moved, 5-10 px along a random direction (at 15 px, 24 px text is past
      what a person reads);
    * low_res: the question takes 560-640 px of a small photo (text about 12 px high);
    * moire: a photo of a screen (two interfering pixel grids, a colour cast, slight blur);
    * curved_shadow_blur: all three of curved, shadow_edge and motion_blur;
    * dim: grey print (pencil, a faded copy) photographed in a dim room: the text 8-12 levels darker
      than the paper, under the sensor's noise (readable once brightened, as a phone's editor does)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.asarray(_on_a_desk(page.convert("RGB"), rng), dtype=np.float32)
    h, w = image.shape[:2]
    desk = tuple(float(v) for v in image[0, 0])  # what a turned or bent page uncovers: more desk
    if condition == "perspective":
        inset = rng.uniform(0.075, 0.15) * w
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        if rng.random() < 0.5:  # the top edge further away
            dst = np.float32([[inset, 0], [w - inset, 0], [w, h], [0, h]])
        else:
            dst = np.float32([[0, 0], [w, 0], [w - inset, h], [inset, h]])
        matrix = cv2.getPerspectiveTransform(src, dst)
        image = cv2.warpPerspective(image, matrix, (w, h), borderValue=desk, flags=cv2.INTER_LINEAR)
        turned = Image.fromarray(image.clip(0, 255).astype(np.uint8))
        turned = turned.rotate(
            float(rng.uniform(-4, 4)), expand=True, fillcolor=tuple(round(v) for v in desk), resample=Image.BICUBIC
        )
        return _as_a_phone_saves_it(np.asarray(turned, dtype=np.float32), rng)
    if condition in ("curved", "curved_shadow_blur"):
        amplitude = rng.uniform(0.025, 0.04) * max(h, w)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        bend = amplitude * np.sin(np.pi * xs / w) * (0.6 + 0.4 * ys / h)
        squeeze = 0.04 * w * np.sin(np.pi * (xs / w - 0.5))  # the sides turn away and narrow
        image = cv2.remap(
            image,
            xs + squeeze * 0.3,
            ys - bend,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=desk,
        )
    if condition in ("shadow_edge", "curved_shadow_blur"):
        xs, ys = np.meshgrid(np.arange(w), np.arange(h))
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(0.35, 0.65)
        side = (xs - w * offset) * np.cos(angle) + (ys - h * 0.5) * np.sin(angle) > 0
        mask = cv2.GaussianBlur(side.astype(np.float32), (0, 0), 2.0)
        image = image * (1 - mask * (1 - rng.uniform(0.45, 0.6)))[:, :, None]
    if condition in ("motion_blur", "curved_shadow_blur"):
        length = int(rng.integers(5, 11))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if condition == "dim":
        paper = rng.uniform(45, 55)
        image = paper - (255 - image) * rng.uniform(8, 12) / 255 * (paper / 50)
    if condition == "low_res":
        scale = rng.uniform(560, 640) / max(w, h)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if condition == "moire":
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        first = np.sin(2 * np.pi * (xs * np.cos(0.1) + ys * np.sin(0.1)) / rng.uniform(2.8, 3.4))
        second = np.sin(2 * np.pi * (xs * np.cos(-0.05) + ys * np.sin(-0.05)) / rng.uniform(3.0, 3.6))
        pattern = 1 + 0.2 * first * second
        cast = np.array([rng.uniform(0.85, 0.95), rng.uniform(0.95, 1.0), 1.0], np.float32)
        image = cv2.GaussianBlur(image * pattern[:, :, None] * cast, (0, 0), 0.8) * 0.9 + 12
    return _as_a_phone_saves_it(image, rng)


def _on_a_desk(page: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The page at a phone's distance: its text 0.6-0.75x the size typeset at 2x (about 24 px high, as
    a 12 MP photo of an A4 page shown at 1,600 px), on a darker desk showing 3-8 % around it."""
    scale = rng.uniform(0.6, 0.75)
    page = page.resize((max(1, round(page.width * scale)), max(1, round(page.height * scale))), Image.LANCZOS)
    pad_x, pad_y = (round(side * rng.uniform(0.03, 0.08)) for side in page.size)
    desk = tuple(int(v) for v in rng.integers(90, 150, size=3))
    framed = Image.new("RGB", (page.width + 2 * pad_x, page.height + 2 * pad_y), desk)
    framed.paste(page, (pad_x, pad_y))
    return framed


def _as_a_phone_saves_it(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Sensor noise (sigma 2-5 levels) and the phone's JPEG (quality 70-85)."""
    noisy = image + rng.normal(0, rng.uniform(2, 5), image.shape)
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=int(rng.integers(70, 86)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


PEN_ANSWERS = ("答：B", "答:C", "选A", "解：x=2", "D", "答：错", "√", "同上")


def pen_marks(page: Image.Image, line_boxes: list[tuple[int, ...]], seed: int = 0) -> Image.Image:
    """``page`` with what a student's pen leaves on it: an underline under a line or two, a circle
    around an option's letter, a tick, and a handwritten answer or note in a Kai face (blue or red ink,
    2-4 px strokes). ``line_boxes``: each printed line's (left, top, right, bottom)."""
    rng = np.random.default_rng(seed)
    image = page.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    ink = (25, 50, 170) if rng.random() < 0.6 else (190, 30, 30)
    width = int(rng.integers(2, 5))
    boxes = [b for b in line_boxes if b[3] > b[1]]
    for box in rng.choice(len(boxes), size=min(len(boxes), int(rng.integers(1, 3))), replace=False):
        left, top, right, bottom = boxes[box]
        end = left + (right - left) * rng.uniform(0.4, 0.9)
        xs = np.linspace(left + rng.uniform(0, 60), end, 24)
        ys = bottom - 4 + rng.normal(0, 1.5, len(xs))
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=ink, width=width)
    option = boxes[int(rng.integers(len(boxes)))]
    cx, cy = option[0] + 22, (option[1] + option[3]) / 2
    r = (option[3] - option[1]) * 0.55
    draw.ellipse([cx - r * 1.2, cy - r, cx + r * 1.3, cy + r * 1.05], outline=ink, width=width)
    tick_at = boxes[int(rng.integers(len(boxes)))]
    tx, ty = min(tick_at[2] - 60, tick_at[0] + rng.uniform(300, 700)), tick_at[1] + 10
    draw.line([(tx, ty + 18), (tx + 12, ty + 34), (tx + 40, ty - 6)], fill=ink, width=width + 1)
    if Path(KAI_FONT).exists():
        font = ImageFont.truetype(KAI_FONT, int(rng.integers(34, 48)))
        note = PEN_ANSWERS[int(rng.integers(len(PEN_ANSWERS)))]
        anchor = boxes[int(rng.integers(len(boxes)))]
        x = anchor[0] + (anchor[2] - anchor[0]) * rng.uniform(0.55, 0.8)
        draw.text((x, anchor[1] - 6), note, font=font, fill=ink)
    return image
