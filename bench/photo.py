"""Photo search, measured: a bank of generated stems full of near-duplicates (same template, one
number changed), query photos rendered from bank stems (with and without a figure) under each
distortion, searched through the real Flow three ways, side by side in one run:

* clip:        the photo's CLIP vector against the stems (what clip-as-service gives)
* ocr+bm25:    the text read from the photo (PP-OCRv6), BM25 over the stems' matching form
               (qbank.domain.text: look-alikes folded, letter/digit runs split), candidates ranked
               by in-order similarity (the default)
* raw bm25:    the same text read, BM25 over the raw stems (schema 2's way), ranked the same way
               without the folding: what the matching form gains
* ocr+hybrid:  both, fused by RRF

Prints recall@1, recall@10 and MRR per distortion and method, and p50/p90 latency per photo through
the Flow (ocr+bm25). With the tiny or a random-initialised CLIP, the clip and hybrid columns measure
nothing about CLIP's quality (no pretrained CLIP weights here); OCR is the real pretrained model.

    .venv/bin/python bench/photo.py                          # 10,000 stems, 300 photos, tiny CLIP
    .venv/bin/python bench/photo.py --stems 2000 --photos 80 # a quicker run
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

TEMPLATES = [
    "已知等腰三角形的两边长分别为{a}和{b}，求这个三角形的周长。",
    "一个长方形的长是{a}厘米，宽是{b}厘米，它的面积是多少平方厘米？",
    "把{a}克氯化钠溶于{b}克水中，所得溶液的溶质质量分数是多少？",
    "一个电阻两端的电压为{a}V，通过它的电流为{b}A，求它的电阻。",
    "小明以每小时{a}千米的速度步行{b}小时，他一共走了多少千米？",
    "一辆汽车{a}小时行驶了{b}千米，照这样的速度，它每小时行驶多少千米？",
    "解方程：{a}x+{b}=0，求x的值。",
    "圆的半径是{a}厘米，圆心角为{b}度的扇形面积是多少？",
    "某班有男生{a}人，女生{b}人，男生人数占全班人数的几分之几？",
    "物体的质量为{a}kg，受到{b}N的水平拉力，求它的加速度。",
    # symbols OCR returns in another form (x² -> x2, l1∥l2 -> I1||12, lost spaces, A -> a)
    "如图，直线l1∥l2，∠1={a}°，∠2={b}°，求∠3的度数。",
    "一个标有“220V {a}W”的电热水壶正常工作{b}min，消耗多少电能？",
    "电阻R1={a}Ω，R2={b}Ω串联在电路中，求总电阻。",
    "函数f(x)=x²-{a}x+{b}的图象与x轴交于A、B两点，求线段AB的长。",
    "若集合A={{x|0<x<{a}}}，B={{x|x≥{b}}}，求A∩B。",
    "质量为{a}kg的小球从{b}m高处自由下落，g取10m/s²，求落地速度。",
]


def bank(n: int, seed: int = 5) -> list[tuple[str, str]]:
    """(question_id, stem): every stem distinct; many share a template and all but one number."""
    rng = random.Random(seed)
    seen: set[str] = set()
    stems = []
    while len(stems) < n:
        template = TEMPLATES[len(stems) % len(TEMPLATES)]
        stem = template.format(a=rng.randint(2, 99), b=rng.randint(2, 99))
        if stem not in seen:
            seen.add(stem)
            stems.append((f"q{len(stems)}", stem))
    return stems


def raw_bm25(path: Path, stems: list[tuple[str, str]]):
    """A search over the raw stems (BM25 on the text as stored, the chinese analyzer: schema 2's
    way), candidates ranked by in-order similarity without look-alike folding: the baseline."""
    import difflib

    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from qbank.domain.text import normalise

    client = MilvusClient(str(path))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
    schema.add_field(
        "text", DataType.VARCHAR, max_length=4096, enable_analyzer=True, analyzer_params={"type": "chinese"}
    )
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function("bm25", FunctionType.BM25, ["text"], ["sparse"]))
    index = MilvusClient.prepare_index_params()
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection("raw", schema=schema, index_params=index)
    for start in range(0, len(stems), 1000):
        client.insert("raw", [{"id": q, "text": t} for q, t in stems[start : start + 1000]])

    def search(text: str, limit: int) -> list[str]:
        if not text:
            return []
        hits = client.search("raw", [text], anns_field="sparse", limit=limit * 4, output_fields=["text"])[0]
        read = normalise(text)

        def similarity(hit: dict) -> float:
            return difflib.SequenceMatcher(None, read, normalise(hit["entity"]["text"]), autojunk=False).ratio()

        return [hit["id"] for hit in sorted(hits, key=similarity, reverse=True)][:limit]

    return search


def ranks(found_ids: list[str], target: str) -> int | None:
    return found_ids.index(target) + 1 if target in found_ids else None


def figure_import_cost(model: Path, folder: Path, figures: int, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per figure imported with figure OCR on and off (QBANK_OCR_FIGURES), alternating
    the two Flows' rounds and taking medians."""
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.service.flow import running_flow
    from qbank_devtools.demo import draw_figure

    blobs = [draw_figure(("triangle", "circuit", "line_chart")[i % 3], i) for i in range(figures)]
    timings: dict[str, list[float]] = {"on": [], "off": []}
    with running_flow(model=model, data_dir=folder / "fig-on", device="cpu", ocr_figures="true") as on:
        with running_flow(model=model, data_dir=folder / "fig-off", device="cpu", ocr_figures="false") as off:
            for round_number in range(rounds):
                for label, urls in (("on", on), ("off", off)):
                    docs = DocumentArray(
                        Document(
                            id=f"r{round_number}-f{i}:image:0", blob=blob, tags={"question_id": f"r{round_number}-f{i}"}
                        )
                        for i, blob in enumerate(blobs)
                    )
                    began = time.perf_counter()
                    Client(urls["grpc"]).index(docs, batch_size=16)
                    timings[label].append((time.perf_counter() - began) * 1000 / figures)
    return {label: statistics.median(values) for label, values in timings.items()}


def main(argv: list[str] | None = None) -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stems", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--model", default="tiny", choices=["tiny", "chinese_clip"])
    parser.add_argument("--figures", type=int, default=48, help="figures imported with figure OCR on and off")
    args = parser.parse_args(argv)
    os.environ.setdefault("JINA_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from clip_client import Client
    from docarray import Document, DocumentArray

    from qbank.service.flow import running_flow
    from qbank_client import QbankClient
    from qbank_devtools.demo import draw_figure
    from qbank_devtools.photos import DISTORTIONS, photo_bytes
    from qbank_devtools.tiny_clip import build_tiny_clip

    stems = bank(args.stems)
    rng = random.Random(11)
    queries = [
        (rng.choice(stems), DISTORTIONS[i % len(DISTORTIONS)], (i // len(DISTORTIONS)) % 2 == 1)
        for i in range(args.photos)
    ]
    with tempfile.TemporaryDirectory(prefix="qbank-bench-photo-") as tmp:
        folder = Path(tmp)
        model = build_tiny_clip(folder / "model", "chinese_clip", full_size=args.model != "tiny")
        with running_flow(model=model, data_dir=folder / "data", device="cpu") as urls:
            started = time.perf_counter()
            for start in range(0, len(stems), 500):
                chunk = stems[start : start + 500]
                docs = DocumentArray(Document(id=f"{q}:text:0", text=t, tags={"question_id": q}) for q, t in chunk)
                Client(urls["grpc"]).index(docs, batch_size=100)
            print(f"indexed {len(stems)} stems in {time.perf_counter() - started:.0f} s", flush=True)
            client = QbankClient(urls["grpc"])
            raw = raw_bm25(folder / "raw.db", stems)
            read: dict[str, str] = {}  # the text the Flow read from the photo being measured

            def ocr_bm25(photo: bytes) -> list[str]:
                answer = client.photo_search(photo, 10)
                read["text"] = answer["text"]
                read["figure_found"] = answer["figure_region"] is not None
                return [h.question_id for h in answer["questions"]]

            methods = {
                "clip": lambda photo: [h.question_id for h in client.image_to_text(photo, 10)["stems"]],
                "ocr+bm25": ocr_bm25,
                "raw bm25": lambda photo: raw(read["text"], 10),
                "ocr+hybrid": lambda photo: [
                    h.question_id for h in client.photo_search(photo, 10, mode="hybrid")["questions"]
                ],
            }
            found: dict[tuple[str, str], list[int | None]] = {}
            latency: list[float] = []
            by_figure: dict[bool, list[float]] = {True: [], False: []}  # photos with a figure / without
            figure_found: dict[tuple[str, bool], list[bool]] = {}  # (distortion, has a figure) -> found
            for number, ((qid, stem), kind, with_figure) in enumerate(queries):
                figure = draw_figure("triangle", number) if with_figure else None
                photo = photo_bytes(stem, kind, figure=figure, seed=number)
                for method, search in methods.items():
                    began = time.perf_counter()
                    hits = search(photo)
                    if method == "ocr+bm25":
                        latency.append(time.perf_counter() - began)
                        by_figure[with_figure].append(latency[-1])
                        figure_found.setdefault((kind, with_figure), []).append(read["figure_found"])
                    rank = ranks(hits, qid)
                    found.setdefault((method, kind), []).append(rank)
                    found.setdefault((method, "every photo"), []).append(rank)
                if (number + 1) % 50 == 0:
                    print(f"  {number + 1}/{len(queries)} photos", flush=True)
        cost = figure_import_cost(model, folder, args.figures)
    print(f"\n{len(stems)} stems, {len(queries)} photos (half with a figure), CLIP model: {args.model} (random)")
    print(f"{'distortion':<14}" + "".join(f"{m + ' r@1':>17}{'r@10':>7}{'MRR':>7}" for m in methods))
    for kind in (*DISTORTIONS, "every photo"):
        row = f"{kind:<14}"
        for method in methods:
            got = found[(method, kind)]
            r1 = sum(1 for r in got if r == 1) / len(got)
            r10 = sum(1 for r in got if r is not None and r <= 10) / len(got)
            mrr = sum(1 / r for r in got if r) / len(got)
            row += f"{r1:>17.3f}{r10:>7.3f}{mrr:>7.3f}"
        print(row)
    print("\nfigure region found on the page (reader, qbank.media.regions): with a figure / without one")
    for kind in DISTORTIONS:
        hit, false = figure_found.get((kind, True), []), figure_found.get((kind, False), [])
        print(f"{kind:<14}{sum(hit)}/{len(hit)}{'':>6}{sum(false)}/{len(false)}")
    latency.sort()
    p90 = latency[int(0.9 * (len(latency) - 1))]
    print(
        f"\nocr+bm25 latency per photo through the Flow: p50 {statistics.median(latency) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms"
        f" (with a figure p50 {statistics.median(by_figure[True]) * 1000:.0f} ms, without"
        f" {statistics.median(by_figure[False]) * 1000:.0f} ms)"
    )
    print(
        f"figure import ({args.figures} figures, medians of 3 alternating rounds): figure OCR on "
        f"{cost['on']:.0f} ms per figure, off {cost['off']:.0f} ms (QBANK_OCR_FIGURES=false): "
        f"+{cost['on'] - cost['off']:.0f} ms per figure"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
