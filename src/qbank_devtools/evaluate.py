"""``qbank-eval``: recall of dense, bm25 and hybrid search on a labelled set this module generates.

The set: distinct Chinese questions (math, physics, chemistry; names, objects, places and numbers
drawn so that no two share all their content words), and for each one four query variants, the
changes a bank's near-copies really show: paraphrased (synonyms), reordered (conditions swapped),
number-changed, and punctuation-changed (ASCII / full-width). Each variant must find its source.
The questions go into a fresh collection of a Milvus Lite file (or a server by --milvus-uri) and
the queries run through the same store code as the service. Dense and hybrid need a real model;
with a random-initialised one their figures measure nothing and the report says so.

Cross-modal: on the demo bank (figures drawn in code, stems about them), how many of the first
five figures a kind's words find are of that kind, and how many of the first five stems a figure
finds are about its kind (``cross_modal``): what the toy CLIP (qbank_devtools.toy_clip) learned.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import tempfile
import time
from typing import Any

from qbank.config import EncoderSettings, IndexerSettings
from qbank.domain.fusion import SEARCH_MODES
from qbank.domain.schema import TEXT, item_id, item_row

PEOPLE = ["小明", "小红", "小刚", "小华", "李老师", "王叔叔", "张阿姨", "小丽", "小军", "小芳", "刘爷爷", "陈同学"]
ITEMS = ["苹果", "铅笔", "笔记本", "足球", "橡皮", "书包", "篮球", "练习本", "彩笔", "故事书", "西瓜", "乒乓球"]
PLACES = ["超市", "文具店", "书店", "体育用品店", "水果店", "商场"]
VEHICLES = ["小车", "木块", "自行车", "电动玩具车", "滑板", "货车"]
SURFACES = ["水平桌面", "斜面", "公路", "冰面", "操场跑道", "木板"]
SUBSTANCES = ["氯化钠", "硫酸铜", "碳酸钙", "氢氧化钠", "高锰酸钾", "硝酸钾", "葡萄糖", "蔗糖"]
SOLVENTS = ["水", "稀盐酸", "酒精", "蒸馏水"]

TEMPLATES = [
    ("数学", "{person}在{place}买了{n}个{item}，每个{p}元，一共花了多少元？"),
    ("数学", "{person}有{n}个{item}，送给同学{m}个后，又在{place}买了{k}个，现在有多少个{item}？"),
    ("数学", "{place}原有{item}{n}箱，每箱{m}个，卖出{k}个后还剩多少个？"),
    ("物理", "{person}推着{vehicle}在{surface}上以{n}米每秒的速度匀速运动{m}秒，求{vehicle}通过的路程。"),
    ("物理", "已知{vehicle}的质量为{n}千克，放在{surface}上，求它受到的重力（g取10牛每千克）。"),
    ("化学", "将{n}克{substance}溶于{m}克{solvent}中，求所得溶液中溶质的质量分数。"),
    ("化学", "{person}在实验室称取{n}克{substance}，加入{solvent}后完全反应，求生成气体的质量。"),
]
SYNONYMS = [
    ("买了", "购买了"),
    ("一共", "总共"),
    ("求", "计算"),
    ("多少", "几"),
    ("每个", "每一个"),
    ("现在", "如今"),
    ("速度", "速率"),
    ("通过的", "经过的"),
    ("溶于", "溶解在"),
    ("所得", "得到的"),
    ("原有", "原来有"),
    ("还剩", "剩下"),
    ("称取", "称量"),
    ("完全反应", "充分反应"),
    ("已知", "设"),
]
VARIANTS = ("paraphrased", "reordered", "number-changed", "punctuation-changed")
RANDOM_MODEL_NOTE = "the model is random-initialised: dense and hybrid figures here measure nothing"


def _question(rng: random.Random, subject: str, template: str) -> str:
    slots = {
        "person": rng.choice(PEOPLE),
        "item": rng.choice(ITEMS),
        "place": rng.choice(PLACES),
        "vehicle": rng.choice(VEHICLES),
        "surface": rng.choice(SURFACES),
        "substance": rng.choice(SUBSTANCES),
        "solvent": rng.choice(SOLVENTS),
        "n": rng.randint(2, 60),
        "m": rng.randint(2, 30),
        "k": rng.randint(2, 20),
        "p": rng.randint(2, 15),
    }
    return template.format(**slots)


def paraphrase(text: str) -> str:
    for old, new in SYNONYMS:
        text = text.replace(old, new)
    return text


def reorder(text: str) -> str:
    """Swap the first two clauses (the conditions); the question clause stays last."""
    end = text[-1] if text[-1] in "。？" else ""
    clauses = text.removesuffix(end).split("，")
    if len(clauses) >= 3:
        clauses[0], clauses[1] = clauses[1], clauses[0]
    elif len(clauses) == 2:
        clauses.reverse()
    return "，".join(clauses) + end


def change_numbers(text: str, rng: random.Random) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group()) + rng.randint(1, 9)), text)


def change_punctuation(text: str) -> str:
    """ASCII punctuation with spaces, and full-width digits: how pasted copies differ."""
    table = str.maketrans({"，": ", ", "。": ".", "？": "?", "（": "(", "）": ")"})
    full_width = str.maketrans("0123456789", "０１２３４５６７８９")
    return text.translate(table).translate(full_width)


def generate_eval_set(n_questions: int = 200, seed: int = 11) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(questions, queries): distinct questions and four labelled variants of each."""
    rng = random.Random(seed)
    questions, seen = [], set()
    while len(questions) < n_questions:
        subject, template = rng.choice(TEMPLATES)
        text = _question(rng, subject, template)
        words = re.sub(r"\d+", "#", text)  # content words alone must differ from every other question
        if words in seen:
            continue
        seen.add(words)
        questions.append({"id": f"eval-{len(questions):04d}", "text": text, "subject": subject})
    queries = []
    for q in questions:
        variants = {
            "paraphrased": paraphrase(q["text"]),
            "reordered": reorder(q["text"]),
            "number-changed": change_numbers(q["text"], rng),
            "punctuation-changed": change_punctuation(q["text"]),
        }
        for kind, text in variants.items():
            queries.append({"id": f"{q['id']}-{kind}", "text": text, "target": q["id"], "variant": kind})
    return questions, queries


def _metrics(ranked: list[list[str]], targets: list[str], k: int = 10) -> dict[str, float]:
    ranks = [(ids.index(t) + 1 if t in ids[:k] else None) for ids, t in zip(ranked, targets, strict=True)]
    n = len(ranks) or 1
    return {
        "recall@1": round(sum(r == 1 for r in ranks) / n, 4),
        f"recall@{k}": round(sum(r is not None for r in ranks) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
    }


def evaluate(
    encoder: Any,
    settings: IndexerSettings,
    n_questions: int = 200,
    seed: int = 11,
    modes: tuple[str, ...] = SEARCH_MODES,
) -> dict[str, Any]:
    """Index the generated questions with ``encoder`` (a ClipEncoder) and score every mode."""
    from qbank.store import ItemStore

    questions, queries = generate_eval_set(n_questions, seed)
    store = ItemStore(settings)
    try:
        vectors = encoder.encode_texts([q["text"] for q in questions])
        store.check_vectors(encoder.name, int(vectors.shape[1]), create=True)
        rows = [
            item_row(
                item_id(q["id"], TEXT),
                [float(x) for x in vector],
                question_id=q["id"],
                text=q["text"],
                subject=q["subject"],
            )
            for q, vector in zip(questions, vectors, strict=True)
        ]
        store.upsert(rows)
        texts = [q["text"] for q in queries]
        query_vectors = encoder.encode_texts(texts)
        report: dict[str, Any] = {"questions": len(questions), "queries": len(queries), "modes": {}}
        for mode in modes:
            started = time.perf_counter()
            if mode == "dense":
                hits = store.search(query_vectors, 10)
            elif mode == "bm25":
                hits = store.search_text(texts, 10)
            else:
                hits = store.search_hybrid(query_vectors, texts, 10, rrf_k=settings.rrf_k)
            seconds = time.perf_counter() - started
            ranked = [[h.get("entity", h).get("question_id") for h in row] for row in hits]
            targets = [q["target"] for q in queries]
            by_variant = {}
            for kind in VARIANTS:
                picked = [i for i, q in enumerate(queries) if q["variant"] == kind]
                by_variant[kind] = _metrics([ranked[i] for i in picked], [targets[i] for i in picked])
            report["modes"][mode] = {
                **_metrics(ranked, targets),
                "by_variant": by_variant,
                "queries_per_second": round(len(queries) / seconds, 1),
            }
        return report
    finally:
        store.close()


# Words a user types to find a figure of each kind the demo bank draws (qbank_devtools.demo).
KIND_QUERIES = {
    "triangle": ["等腰三角形", "直角三角形", "三角形"],
    "circle": ["圆", "圆的半径", "圆周角"],
    "rectangle": ["长方形", "矩形"],
    "bar_chart": ["条形统计图", "柱状图"],
    "line_chart": ["折线统计图", "溶解度曲线"],
    "circuit": ["电路图", "电阻"],
}


def kind_share(found: list[str], kind: str, k: int = 5) -> float:
    """The share of the first ``k`` results that are of ``kind`` (stricter than "one of k is")."""
    return sum(f == kind for f in found[:k]) / k


def cross_modal(encoder: Any, n_questions: int = 300, k: int = 5) -> dict[str, float]:
    """Cross-modal figures on the demo bank (its figures drawn in code, its stems about them):
    text->figure, the share of the first ``k`` figures found by a kind's words that are of that
    kind (``KIND_QUERIES``); figure->stem, the share of the first ``k`` stems found by a question's
    figure that are about its kind of figure. Exact cosine ranking, as a Milvus Lite FLAT index does."""
    import io

    import numpy as np
    from PIL import Image

    from qbank_devtools.demo import demo_bank

    bank = demo_bank(n_questions)
    kinds = [q["figure_kind"] for q in bank]
    figures = encoder.encode_images([Image.open(io.BytesIO(q["figure"])).convert("RGB") for q in bank])
    stems = encoder.encode_texts([q["stem"] for q in bank])
    queries = [(kind, word) for kind, words in KIND_QUERIES.items() for word in words]
    words = encoder.encode_texts([word for _, word in queries])
    text_to_figure = [
        kind_share([kinds[j] for j in np.argsort(-(figures @ vector))], kind, k)
        for (kind, _), vector in zip(queries, words, strict=True)
    ]
    figure_to_stem = [
        kind_share([kinds[j] for j in np.argsort(-(stems @ v))], kinds[i], k) for i, v in enumerate(figures)
    ]
    return {
        f"text_to_figure_kind@{k}": round(float(np.mean(text_to_figure)), 4),
        f"figure_to_stem_kind@{k}": round(float(np.mean(figure_to_stem)), 4),
    }


def format_report(report: dict[str, Any], note: str = "") -> str:
    lines = [
        f"{report['questions']} questions, {report['queries']} queries ({', '.join(VARIANTS)})",
        f"{'mode':<8} {'recall@1':>9} {'recall@10':>10} {'mrr':>7} {'q/s':>8}   recall@10 by variant",
    ]
    for mode, m in report["modes"].items():
        variants = "  ".join(f"{k[:5]} {v['recall@10']:.2f}" for k, v in m["by_variant"].items())
        lines.append(
            f"{mode:<8} {m['recall@1']:>9.3f} {m['recall@10']:>10.3f} {m['mrr']:>7.3f} "
            f"{m['queries_per_second']:>8.1f}   {variants}"
        )
    if "cross_modal" in report:
        figures = ", ".join(f"{name} {value:.3f}" for name, value in report["cross_modal"].items())
        lines.append(f"cross-modal on the demo bank's {report['cross_modal_questions']} drawn figures: {figures}")
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qbank-eval", description=__doc__.split("\n\n")[0])
    encoder_settings = EncoderSettings.resolve()  # QBANK_MODEL, QBANK_ENGINE, QBANK_ONNX_PATH as defaults
    parser.add_argument("--model", default=encoder_settings.model)
    parser.add_argument("--engine", default=encoder_settings.engine, choices=["torch", "onnx"])
    parser.add_argument("--onnx-path", default=encoder_settings.onnx_path)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--figures", type=int, default=300, help="demo bank questions for the cross-modal figures")
    parser.add_argument("--milvus-uri", default="", help="a Milvus server; default: a temporary Milvus Lite file")
    parser.add_argument("--random-model", action="store_true", help="say the model is untrained (figures for dense)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from qbank.model.clip import ClipEncoder, ModelUnavailableError

    try:
        encoder = ClipEncoder.load(args.model, engine=args.engine, device="auto", onnx_path=args.onnx_path)
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="qbank-eval-") as folder:
        settings = IndexerSettings.resolve(
            milvus_uri=args.milvus_uri, data_dir=folder, collection=f"qbank_eval_{args.seed}", model=args.model
        )
        report = evaluate(encoder, settings, args.questions, args.seed)
    report["cross_modal"] = cross_modal(encoder, args.figures)
    report["cross_modal_questions"] = args.figures
    note = RANDOM_MODEL_NOTE if args.random_model else ""
    report["note"] = note
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
