"""``qbank-demo``: the README's main command. Starts flow.yml on its embedded default (Milvus Lite),
imports a small generated question bank with figures, shows a text->image and an image->text
search through clip_client, then keeps serving until Ctrl-C.

Model: $QBANK_MODEL if set; else Chinese-CLIP if it is already on this machine (HF cache); else a
tiny random model built locally, with a plain warning that its results are not semantic.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
from pathlib import Path

from qbank.config import DEFAULT_MODEL

SUBJECTS = {
    "数学": [
        ("triangle", "如图，在等腰三角形ABC中，AB=AC，∠A=40°，求∠B的度数。"),
        ("circle", "如图，圆O的半径为{n}，求圆的周长和面积。"),
        ("rectangle", "如图，长方形的长为{n}厘米，宽为3厘米，求它的周长。"),
        ("line_chart", "下面的折线统计图表示某城市一周的气温变化，哪一天温度最高？"),
    ],
    "物理": [
        ("circuit", "如图所示电路中，电源电压为{n}V，电阻R=5Ω，求通过电阻的电流。"),
        ("bar_chart", "如图是四种物质的密度柱状图，密度最大的是哪一种？"),
    ],
    "化学": [
        ("bar_chart", "下图是几种元素在地壳中含量的柱状图，含量最多的元素是什么？"),
        ("rectangle", "如图为实验装置示意图，写出该反应的化学方程式（反应温度{n}0℃）。"),
    ],
}
GRADES = ["七年级", "八年级", "九年级"]
TYPES = {"数学": "解答题", "物理": "计算题", "化学": "填空题"}


def draw_figure(kind: str, seed: int) -> bytes:
    """A plausible exam figure drawn in code (PNG bytes)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    jitter = lambda v: v + rng.randint(-12, 12)  # noqa: E731
    if kind == "triangle":
        draw.polygon(
            [(jitter(112), jitter(30)), (jitter(40), jitter(190)), (jitter(184), jitter(190))], outline="black", width=3
        )
    elif kind == "circle":
        r = rng.randint(50, 90)
        draw.ellipse([112 - r, 112 - r, 112 + r, 112 + r], outline="black", width=3)
        draw.line([112, 112, 112 + r, 112], fill="black", width=2)
    elif kind == "rectangle":
        draw.rectangle([jitter(40), jitter(60), jitter(184), jitter(164)], outline="black", width=3)
    elif kind == "bar_chart":
        for i in range(4):
            h = rng.randint(30, 170)
            draw.rectangle([30 + i * 45, 200 - h, 60 + i * 45, 200], fill=(70, 110, 200))
        draw.line([20, 200, 210, 200], fill="black", width=2)
    elif kind == "line_chart":
        points = [(25 + i * 30, rng.randint(40, 190)) for i in range(7)]
        draw.line(points, fill=(200, 60, 60), width=3)
        draw.line([20, 200, 210, 200], fill="black", width=2)
    elif kind == "circuit":
        left, top, right, bottom = jitter(40), jitter(50), jitter(184), jitter(174)
        draw.rectangle([left, top, right, bottom], outline="black", width=3)
        x = rng.randint(left + 10, right - 45)
        draw.rectangle([x, top - 10, x + 35, top + 10], fill="white", outline="black", width=3)  # resistor
        x = rng.randint(left + 10, right - 20)
        draw.line([x, bottom - 6, x, bottom + 6], fill="black", width=4)  # battery
        draw.line([x + 12, bottom - 12, x + 12, bottom + 12], fill="black", width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def demo_bank(n_questions: int = 60, seed: int = 7) -> list[dict]:
    """Questions as dicts: id, stem, figure PNG bytes, subject, grade, type."""
    rng = random.Random(seed)
    questions = []
    for i in range(n_questions):
        subject = rng.choice(sorted(SUBJECTS))
        kind, stem = rng.choice(SUBJECTS[subject])
        questions.append(
            {
                "id": f"demo-{i:04d}",
                "stem": stem.format(n=rng.randint(2, 12)),
                "figure": draw_figure(kind, seed * 1000 + i),
                "figure_kind": kind,
                "subject": subject,
                "grade": rng.choice(GRADES),
                "type": TYPES[subject],
            }
        )
    return questions


def to_documents(questions: list[dict]):
    """Each question: one text item and one image item, sharing question_id."""
    from docarray import Document, DocumentArray

    from qbank.schema import IMAGE, TEXT, item_id

    docs = DocumentArray()
    for q in questions:
        tags = {
            "question_id": q["id"],
            "subject": q["subject"],
            "grade": q["grade"],
            "type": q["type"],
            "figure_kind": q["figure_kind"],
        }
        docs.append(Document(id=item_id(q["id"], TEXT), text=q["stem"], tags=tags))
        docs.append(Document(id=item_id(q["id"], IMAGE), blob=q["figure"], mime_type="image/png", tags=tags))
    return docs


def choose_model(models_dir: Path) -> tuple[str, bool]:
    """(model, is_real): $QBANK_MODEL, a cached Chinese-CLIP, or a tiny local stand-in."""
    if os.environ.get("QBANK_MODEL"):
        return os.environ["QBANK_MODEL"], True
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(DEFAULT_MODEL, local_files_only=True)
        return DEFAULT_MODEL, True
    except OSError:
        pass
    from qbank.tiny_clip import build_tiny_clip

    folder = models_dir / "tiny-chinese-clip"
    if not (folder / "config.json").is_file():
        build_tiny_clip(folder, "chinese_clip")
    return str(folder.resolve()), False


def print_matches(title: str, matches) -> None:
    print(f"\n{title}")
    print(f"  {'rank':<4} {'score':>6}  {'question':<10} {'subject':<4} {'modality':<8} content")
    for rank, match in enumerate(matches, 1):
        content = match.text or match.uri or f"[figure: {match.tags.get('figure_kind', '')}]"
        print(
            f"  {rank:<4} {match.scores['similarity'].value:>6.3f}  {match.tags.get('question_id', ''):<10} "
            f"{match.tags.get('subject', ''):<4} {match.modality:<8} {content[:48]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbank-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=60, help="size of the generated demo bank")
    parser.add_argument("--data-dir", default="data/demo", help="Milvus Lite folder")
    parser.add_argument("--models-dir", default="models", help="where the tiny stand-in model is built")
    parser.add_argument("--no-serve", action="store_true", help="exit after the demo instead of serving")
    args = parser.parse_args(argv)

    model, is_real = choose_model(Path(args.models_dir))
    os.environ["QBANK_MODEL"] = model
    os.environ.setdefault("QBANK_DATA_DIR", args.data_dir)
    if not is_real:
        print(
            "\n*** No CLIP weights on this machine: using a tiny RANDOM-INITIALISED model.\n"
            f"*** Results below are NOT semantic (only an item's own text/figure reliably finds itself).\n"
            f"*** For real results: QBANK_MODEL={DEFAULT_MODEL} (downloads) or QBANK_MODEL=/path/to/model.\n",
            flush=True,
        )

    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.serve import load_flow

    questions = demo_bank(args.questions)
    docs = to_documents(questions)
    flow = load_flow()
    with flow:
        grpc = f"grpc://127.0.0.1:{os.environ['QBANK_GRPC_PORT']}"
        client = Client(grpc)
        client.index(docs, batch_size=32, show_progress=True)
        print(f"\nindexed {len(questions)} questions = {len(docs)} items (text + figure) with model {model}")

        probe = next(q for q in questions if q["figure_kind"] == "triangle")
        text_query = "等腰三角形的图形"
        found = client.search([text_query], limit=5, parameters={"modality": "image"})
        print_matches(f"text -> image: {text_query!r} (figures only)", found[0].matches)

        image_query = DocumentArray([Document(blob=probe["figure"], mime_type="image/png")])
        found = client.search(
            image_query, limit=5, parameters={"modality": "text", "filter": {"subject": probe["subject"]}}
        )
        print_matches(
            f"image -> text: the figure of {probe['id']} ({probe['figure_kind']}), stems of {probe['subject']} only",
            found[0].matches,
        )

        found = client.search(image_query, limit=3, parameters={"modality": "image"})
        print_matches("image -> image: figures like this one", found[0].matches)

        ports = {p: os.environ[f"QBANK_{k}_PORT"] for p, k in [("grpc", "GRPC"), ("http", "HTTP"), ("ws", "WS")]}
        print(
            f"\nserving: grpc://127.0.0.1:{ports['grpc']}  http://127.0.0.1:{ports['http']}  ws://127.0.0.1:{ports['ws']}"
        )
        example = f"Client('grpc://127.0.0.1:{ports['grpc']}').search(['三角形'], limit=3)[0].matches[:, 'text']"
        print(f'try: python -c "from clip_client import Client; print({example})"')
        if not args.no_serve:
            print("Ctrl-C to stop.", flush=True)
            try:
                flow.block()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
