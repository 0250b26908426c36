"""A small Chinese-CLIP trained here, on CPU, on figures drawn in code and captions that say what
they show: the offline demo's and the cross-modal tests' model.

No pretrained CLIP weights can be downloaded on the machines this project is built on, and a
random model learns nothing: its text->image search for 等腰三角形 returned chemistry figures, so a
preprocessing mismatch between two paths would pass every cross-modal test. This model has the real
Chinese-CLIP architecture (``ChineseCLIPModel``: a BERT text tower, a ViT image tower, projections),
scaled down, and is trained contrastively for about a minute (seeded: the same seed and thread count
give the same weights) on the six kinds of figure the demo bank draws (``qbank_devtools.demo``),
each paired with captions built from many phrasings of its kind inside frames shared by every kind,
so that words, not templates, carry the signal. It is saved like a hub folder (config, weights,
tokenizer, image processor) and loads through the users' code path.

It is a toy: it knows six drawn figure kinds and the words for them, nothing else.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("qbank_devtools.toy_clip")

PROGRESS_SECONDS = 10.0  # training says how far it is at least this often
# Bumped whenever the recipe changes, so a cached copy built by an older recipe is rebuilt.
RECIPE_VERSION = 1
MARKER = "qbank_toy_clip.json"

KIND_PHRASES = {
    "triangle": [
        "三角形",
        "等腰三角形",
        "直角三角形",
        "等边三角形",
        "锐角三角形",
        "钝角三角形",
        "三角形ABC",
        "△ABC",
        "三角形的三条边",
        "三角形的内角和",
        "直角边和斜边",
        "等腰三角形的底角",
        "勾股定理",
    ],
    "circle": [
        "圆",
        "圆O",
        "圆的半径",
        "圆的直径",
        "圆周角",
        "圆心角",
        "圆的周长",
        "圆的面积",
        "半径为r的圆",
        "⊙O",
        "圆上一点",
        "弧AB",
    ],
    "rectangle": [
        "长方形",
        "矩形",
        "矩形ABCD",
        "长方形的长和宽",
        "长方形的周长",
        "长方形的面积",
        "四边形ABCD是矩形",
        "实验装置示意图",
        "装置示意图",
        "长方体的截面",
    ],
    "bar_chart": [
        "条形统计图",
        "条形图",
        "柱状图",
        "柱形图",
        "密度柱状图",
        "含量的柱状图",
        "各组人数的条形统计图",
        "直条",
        "统计图中的长条",
    ],
    "line_chart": [
        "折线统计图",
        "折线图",
        "气温变化的折线图",
        "变化曲线",
        "溶解度曲线",
        "路程—时间图像",
        "速度随时间变化的图像",
        "函数图像",
        "曲线图",
    ],
    "circuit": [
        "电路",
        "电路图",
        "电阻",
        "电源电压",
        "串联电路",
        "并联电路",
        "电阻R",
        "电流表",
        "开关S",
        "欧姆定律",
        "电池和电阻",
    ],
}
KINDS = sorted(KIND_PHRASES)

# Frames every kind shares: a caption's frame says nothing about its figure.
FRAMES = [
    "{p}",
    "如图，{p}",
    "如图所示的{p}",
    "观察{p}，回答下列问题。",
    "根据图中的{p}，求{x}。",
    "下图是一个{p}，已知数值为{n}，求{x}。",
    "{s}：如图是{p}，{x}是多少？",
    "如图所示，{p}中，求{x}。",
    "请看{p}，写出{x}。",
    "图中{p}的{x}为{n}，求另一个量。",
    "{p}（{s}，{g}）",
    "某同学画出了{p}，{x}等于多少？",
]
FILLERS = {
    "x": ["长度", "度数", "面积", "数值", "结果", "大小", "比值", "最大值", "总和", "变化量"],
    "s": ["数学", "物理", "化学", "练习", "期中考试", "单元测试"],
    "g": ["七年级", "八年级", "九年级", "高一", "初中"],
}


def captions(kind: str, rng: random.Random, count: int) -> list[str]:
    """``count`` captions of a figure of ``kind``: a phrase of the kind inside a shared frame, or
    (one in three) a demo bank stem of that kind with other numbers."""
    from qbank_devtools.demo import SUBJECTS

    stems = [stem for templates in SUBJECTS.values() for k, stem in templates if k == kind]
    found = []
    for _ in range(count):
        if stems and rng.random() < 1 / 3:
            found.append(rng.choice(stems).format(n=rng.randint(2, 12), m=rng.randint(2, 9)))
            continue
        fillers = {key: rng.choice(values) for key, values in FILLERS.items()}
        found.append(rng.choice(FRAMES).format(p=rng.choice(KIND_PHRASES[kind]), n=rng.randint(2, 99), **fillers))
    return found


def augmented(png: bytes, rng: random.Random):
    """The figure as a photo or a page crop may show it. Half stay as drawn; the rest are shifted and
    scaled on their paper, slightly turned, greyed, blurred or JPEG-compressed at random, and two in
    five of those cut tight around their ink, as the reader cuts a figure out of a photo (then the
    image processor stretches the cut to a square: without such cuts the crops of JPEG photos found
    figures of their kind at 0.33, against 0.96 for the figures themselves)."""
    from PIL import Image, ImageEnhance, ImageFilter, ImageOps

    image = Image.open(io.BytesIO(png)).convert("RGB")
    if rng.random() < 0.5:
        return image
    side = image.width
    scale = rng.uniform(0.7, 1.0)
    inner = image.resize((int(side * scale), int(side * scale)))
    paper = Image.new("RGB", (side, side), "white")
    paper.paste(inner, (rng.randint(0, side - inner.width), rng.randint(0, side - inner.height)))
    image = paper.rotate(rng.uniform(-8, 8), fillcolor="white")
    if rng.random() < 0.5:
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.0))
    if rng.random() < 0.4:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.4:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(30, 70))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    ink = ImageOps.invert(image.convert("L")).point(lambda v: 255 if v > 60 else 0).getbbox()
    if ink and rng.random() < 0.4:
        margin = rng.randint(0, 10)
        left, top, right, bottom = ink
        image = image.crop((max(0, left - margin), max(0, top - margin), right + margin, bottom + margin))
    return image


def train_toy_clip(
    out_dir: str | Path,
    seed: int = 0,
    steps: int = 700,
    figures_per_kind: int = 160,
    batch_size: int = 64,
    threads: int = 2,
    learning_rate: float = 1e-3,
    image_side: int = 64,
    patch_size: int = 8,
    vision_width: int = 128,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Train the toy model and save it as a hub folder; returns its path. About 75 s on 2 cores.
    ``progress`` is told how far training is at least every PROGRESS_SECONDS (the bootstrap and the
    demo print it): every 100 steps was 5 silent minutes on a loaded machine.

    The recipe was tuned by its figures on the demo bank (qbank_devtools.evaluate.cross_modal): at
    lr 2e-3 the loss stalled where only the coloured charts were told apart; 600 steps at 1e-3 left
    rectangles among circuits."""
    import torch
    from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessorPil, ChineseCLIPModel

    from qbank.model.clip import _features
    from qbank_devtools.demo import draw_figure
    from qbank_devtools.tiny_clip import _bert_vocab

    started = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    side = image_side
    tokenizer = BertTokenizer(vocab=_bert_vocab(), model_max_length=52)
    config = ChineseCLIPConfig(
        text_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            vocab_size=len(tokenizer),
            max_position_embeddings=64,
        ),
        vision_config=dict(
            hidden_size=vision_width,
            num_hidden_layers=2,
            num_attention_heads=max(2, vision_width // 32),
            intermediate_size=2 * vision_width,
            image_size=side,
            patch_size=patch_size,
        ),
        projection_dim=32,
    )
    model = ChineseCLIPModel(config)
    processor = ChineseCLIPImageProcessorPil(
        size={"height": side, "width": side}, crop_size={"height": side, "width": side}
    )

    # Figures drawn with seeds the demo bank never uses (it draws with seed*1000+i, seed 7, i < 10^4).
    labels, images = [], []
    for kind_index, kind in enumerate(KINDS):
        for number in range(figures_per_kind):
            images.append(augmented(draw_figure(kind, 10**7 + seed * 10**5 + kind_index * 10**4 + number), rng))
            labels.append(kind_index)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    labels_t = torch.tensor(labels)
    caption_count = 400
    texts = {kind: captions(kind, rng, caption_count) for kind in KINDS}
    encoded = [
        tokenizer(texts[kind], padding="max_length", truncation=True, max_length=52, return_tensors="pt")
        for kind in KINDS
    ]
    caption_ids = torch.stack([e["input_ids"] for e in encoded])  # (kind, caption, token)
    caption_masks = torch.stack([e["attention_mask"] for e in encoded])
    # Cut the padding no caption reaches: padded positions are masked out, so the model computes the
    # same, and the text tower's share of a step shrinks with the sequence
    longest = int(caption_masks.sum(dim=-1).max())
    caption_ids, caption_masks = caption_ids[..., :longest], caption_masks[..., :longest]

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    reported = started
    for step in range(steps):
        picked = torch.randint(len(labels), (batch_size,), generator=generator)
        kinds = labels_t[picked]
        caption_rows = torch.randint(caption_count, (batch_size,), generator=generator)
        input_ids, attention = caption_ids[kinds, caption_rows], caption_masks[kinds, caption_rows]
        image_vectors = torch.nn.functional.normalize(
            _features(model.get_image_features(pixel_values=pixels[picked])), dim=-1
        )
        text_vectors = torch.nn.functional.normalize(
            _features(model.get_text_features(input_ids=input_ids, attention_mask=attention)), dim=-1
        )
        logits = model.logit_scale.exp().clamp(max=100) * image_vectors @ text_vectors.T
        # Captions of the same kind are all right answers: the targets spread over them (a plain
        # diagonal would push apart two triangles' captions that say the same thing).
        same = (kinds[:, None] == kinds[None, :]).float()
        targets = same / same.sum(dim=1, keepdim=True)
        loss = (
            torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        now = time.perf_counter()
        if step == 0 or step == steps - 1 or now - reported >= PROGRESS_SECONDS:
            reported = now
            message = f"toy CLIP step {step + 1}/{steps}: loss {loss.item():.3f} ({now - started:.0f} s)"
            logger.info(message)
            if progress:
                progress(message)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    seconds = time.perf_counter() - started
    (out / MARKER).write_text(
        json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "seed": seed,
                "steps": steps,
                "final_loss": round(loss.item(), 4),
                "seconds": round(seconds, 1),
                "note": "a toy trained on figures drawn in code (qbank_devtools.toy_clip), not Chinese-CLIP",
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    logger.info("toy CLIP trained in %.0f s (final loss %.3f): %s", seconds, loss.item(), out)
    return out


def toy_clip(folder: str | Path, seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """The toy model in ``folder``, trained there first if it is missing or of an older recipe."""
    folder = Path(folder)
    try:
        built = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if built.get("recipe") == RECIPE_VERSION and built.get("seed") == seed and (folder / "config.json").is_file():
            return folder
    except (OSError, ValueError):
        pass
    return train_toy_clip(folder, seed=seed, progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m qbank_devtools.toy_clip [FOLDER]``: the toy in FOLDER (default models/toy-chinese-clip,
    where the demo looks), trained there once; scripts/bootstrap.sh runs it, so the demo serves without
    training first."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qbank_devtools.toy_clip", description=main.__doc__)
    parser.add_argument("folder", nargs="?", default="models/toy-chinese-clip")
    args = parser.parse_args(argv)
    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    folder = Path(args.folder)
    ready = (folder / MARKER).is_file()
    path = toy_clip(folder, progress=lambda line: print("  " + line, flush=True))
    built = json.loads((path / MARKER).read_text(encoding="utf-8"))
    state = "ready" if ready and built.get("recipe") == RECIPE_VERSION else f"trained in {built['seconds']:.0f} s"
    print(f"toy CLIP {state}: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
