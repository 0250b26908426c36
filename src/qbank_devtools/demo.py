"""``qbank-demo``: the README's main command. Writes a generated question bank (JSONL + figures drawn
in code) to disk, starts flow.yml on its embedded default (Milvus Lite), imports the bank with the
client's resumable importer, shows text->image, image->text and similar-question lookups, then keeps
serving until Ctrl-C.

Model: $QBANK_MODEL if set; else Chinese-CLIP if it is already on this machine (HF cache); else a
toy Chinese-CLIP trained here on figures drawn in code (qbank_devtools.toy_clip: once, about a
minute and a quarter on 2 cores, cached in --models-dir), with a plain note that it is a toy.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import time
from pathlib import Path

from qbank.config import DEFAULT_MODEL, ConfigError, EncoderSettings, IndexerSettings, ServeSettings
from qbank.quiet import quiet_known_warnings

SUBJECTS = {
    "数学": [
        ("triangle", "如图，在等腰三角形ABC中，AB=AC，∠A={n}0°，求∠B的度数。"),
        ("triangle", "如图，直角三角形的两条直角边分别为{n}和{m}，求斜边的长。"),
        ("circle", "如图，圆O的半径为{n}，求圆的周长和面积。"),
        ("circle", "如图，AB是圆O的直径，AB={n}，点C在圆上，求∠ACB的度数。"),
        ("rectangle", "如图，长方形的长为{n}厘米，宽为{m}厘米，求它的周长和面积。"),
        ("line_chart", "下面的折线统计图表示某城市一周的气温变化，第{n}天比前一天高了几度？"),
        ("bar_chart", "某班{n}名同学参加兴趣小组，条形统计图如图所示，参加人数最多的是哪一组？"),
    ],
    "物理": [
        ("circuit", "如图所示电路中，电源电压为{n}V，电阻R={m}Ω，求通过电阻的电流。"),
        ("circuit", "如图所示，两个电阻R1={n}Ω、R2={m}Ω串联，求电路的总电阻。"),
        ("bar_chart", "如图是四种物质的密度柱状图，密度最大的物质比最小的大多少（单位{n}）？"),
        ("line_chart", "如图是某物体运动的路程—时间图像，求前{n}秒内的平均速度。"),
    ],
    "化学": [
        ("bar_chart", "下图是几种元素在地壳中含量的柱状图，含量排第{n}位的元素是什么？"),
        ("rectangle", "如图为实验装置示意图，加热到{n}0℃时，写出该反应的化学方程式。"),
        ("line_chart", "如图是某物质的溶解度曲线，{n}0℃时该物质的溶解度是多少克？"),
    ],
}
KNOWLEDGE_POINTS = {
    "triangle": ["三角形", "勾股定理"],
    "circle": ["圆", "圆周角"],
    "rectangle": ["长方形", "周长与面积"],
    "line_chart": ["统计图", "折线图"],
    "bar_chart": ["统计图", "条形图"],
    "circuit": ["电路", "欧姆定律"],
}
GRADES = ["七年级", "八年级", "九年级"]
TYPES = {"数学": "解答题", "物理": "计算题", "化学": "填空题"}


FIGURE_KINDS = ("triangle", "circle", "rectangle", "bar_chart", "line_chart", "circuit")


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
        r, cx, cy, angle = rng.randint(50, 90), jitter(112), jitter(112), rng.uniform(0, 2 * math.pi)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline="black", width=3)
        draw.line([cx, cy, cx + r * math.cos(angle), cy + r * math.sin(angle)], fill="black", width=2)
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
    else:  # a blank "figure" would pass for one in a benchmark (bench/photo.py drew "graph" blank)
        raise ValueError(f"figure kind {kind!r} is not one of {FIGURE_KINDS}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def demo_bank(n_questions: int = 300, seed: int = 7) -> list[dict]:
    """Questions as dicts: id, stem, figure PNG bytes, subject, grade, type, knowledge points.

    Some stems repeat with other numbers (or exactly): near-duplicates are what a bank really holds."""
    rng = random.Random(seed)
    questions = []
    for i in range(n_questions):
        subject = rng.choice(sorted(SUBJECTS))
        kind, stem = rng.choice(SUBJECTS[subject])
        questions.append(
            {
                "id": f"demo-{i:04d}",
                "stem": stem.format(n=rng.randint(2, 12), m=rng.randint(2, 9)),
                "figure": draw_figure(kind, seed * 1000 + i),
                "figure_kind": kind,
                "subject": subject,
                "grade": rng.choice(GRADES),
                "type": TYPES[subject],
                "knowledge_points": KNOWLEDGE_POINTS[kind],
            }
        )
    return questions


def write_demo_bank(folder: Path, n_questions: int = 300) -> Path:
    """The demo bank as users' banks look: bank.jsonl + figs/*.png. Returns the JSONL path."""
    import json

    (folder / "figs").mkdir(parents=True, exist_ok=True)
    lines = []
    for q in demo_bank(n_questions):
        figure = f"figs/{q['id']}.png"
        (folder / figure).write_bytes(q["figure"])
        record = {k: v for k, v in q.items() if k != "figure"} | {"figures": [figure]}
        lines.append(json.dumps(record, ensure_ascii=False))
    path = folder / "bank.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def choose_model(models_dir: Path) -> tuple[str, bool]:
    """(model, is_real): $QBANK_MODEL, a cached Chinese-CLIP, or the toy trained here (cached)."""
    if "model" in EncoderSettings.from_environment():
        return EncoderSettings.resolve().model, True
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(DEFAULT_MODEL, local_files_only=True)
        return DEFAULT_MODEL, True
    except OSError:
        pass
    from qbank_devtools.toy_clip import MARKER, toy_clip

    folder = models_dir / "toy-chinese-clip"
    if not (folder / MARKER).is_file():
        print(f"training the toy CLIP once (about a minute and a quarter on 2 cores) into {folder} ...", flush=True)
    return str(toy_clip(folder, progress=lambda line: print("  " + line, flush=True)).resolve()), False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qbank-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=300, help="size of the generated demo bank")
    parser.add_argument("--data-dir", default="data/demo", help="Milvus Lite folder")
    parser.add_argument("--models-dir", default="models", help="where the tiny stand-in model is built")
    parser.add_argument("--no-serve", action="store_true", help="exit after the demo instead of serving")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    quiet_known_warnings()

    try:
        model, is_real = choose_model(Path(args.models_dir))
        data_dir = IndexerSettings.resolve(data_dir=args.data_dir).data_dir  # QBANK_DATA_DIR wins
        ports = ServeSettings.resolve()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not is_real:
        print(
            "\n*** No CLIP weights on this machine: using a TOY CLIP trained here on figures drawn in code.\n"
            "*** It knows six kinds of drawn figure (triangle, circle, rectangle, bar chart, line chart,\n"
            "*** circuit) and the words for them, nothing else: it is not Chinese-CLIP.\n"
            f"*** For real results: QBANK_MODEL={DEFAULT_MODEL} (downloads) or QBANK_MODEL=/path/to/model.\n",
            flush=True,
        )

    from qbank.service.flow import load_flow, patched_env, run
    from qbank_client import BadRow, QbankClient, read_bank
    from qbank_client.bank import open_bank
    from qbank_client.cli import format_table
    from qbank_client.importer import import_bank

    bank_path = write_demo_bank(Path(data_dir) / "bank", args.questions)
    grpc = f"grpc://127.0.0.1:{ports.grpc_port}"

    def demo() -> None:
        client = QbankClient(grpc)
        summary = import_bank(client, open_bank(bank_path), batch_size=32)  # progress in the bank's bytes
        print(
            f"\nimported {summary.imported} questions from {bank_path}: {summary.items_sent} items written, "
            f"{summary.items_skipped} already stored; model {model}"
        )
        questions = [q for q in read_bank(bank_path) if not isinstance(q, BadRow)]
        probe = next(q for q in questions if "三角形" in q.stem)
        print(
            "\n"
            + format_table(
                "text -> image: '等腰三角形' (questions whose figures match)", client.text_to_image("等腰三角形", 5)
            )
        )
        found = client.image_to_text(probe.figures[0], 5, subject=probe.tags["subject"])
        print(
            "\n"
            + format_table(f"image -> text: figure of {probe.id}, stems of {probe.tags['subject']}", found["stems"])
        )
        print("\n" + format_table(f"image -> image: figures like the one of {probe.id}", found["figures"]))
        print(
            "\n"
            + format_table(
                f"similar questions to {probe.id}: {probe.stem[:24]}...", client.similar_questions(probe.stem, 5)
            )
        )
        print(
            f"\nserving {time.perf_counter() - started:.0f} s after the demo started: {grpc}  "
            f"http://127.0.0.1:{ports.http_port}  ws://127.0.0.1:{ports.ws_port}"
        )
        print(f"search page: http://127.0.0.1:{ports.http_port}/ui (figures served from {bank_path.parent})")
        print(f"try: .venv/bin/qbank --url {grpc} similar '已知圆的半径' --subject 数学")
        if not args.no_serve:
            print("Ctrl-C (or SIGTERM) to stop.", flush=True)

    # The Flow's executors read their settings from the environment they start in (flow.yml ENV,
    # QBANK_*): the demo's settings are set for the Flow's life only, and restored after. The page
    # may show the demo bank's figure files (QBANK_FIGURE_ROOTS), and no other file.
    demo_env = {"QBANK_MODEL": model, "QBANK_DATA_DIR": data_dir, "QBANK_FIGURE_ROOTS": str(bank_path.parent.resolve())}
    with patched_env(demo_env):
        return run(load_flow(), demo, serve=not args.no_serve)


if __name__ == "__main__":
    sys.exit(main())
