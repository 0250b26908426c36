"""Build a tiny, random-initialised CLIP of a real architecture and save it like a hub folder.

No pretrained weights can be downloaded on the machines this project is built on, so tests and
the offline demo use this: the folder loads through exactly the code path a real model uses
(``AutoConfig``/``AutoModel``/``AutoTokenizer``/``AutoImageProcessor``). Its embeddings are not
semantic: only identical inputs are reliably close.
"""

from __future__ import annotations

import string
from pathlib import Path

# Common characters of Chinese exam questions, so that tokenisation produces real ids, not [UNK].
_HANZI = (
    "的一是了不在有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学"
    "么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位"
    "分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感三角形圆求面积长度图中数学物理化学函数已知"
    "若则设点线段直径半周边平行四方程解值电路阻流压力速加度质量温反应元素式根题选择填空判断计算证明如示所如下列"
    "正确错误的是为多少甲乙丙丁一二三四五六七八九十百千万零个角等腰三直锐钝实验观察分析比较说明原因结果柱状折线统计"
)


# Symbols of exam questions beyond ASCII: full-width forms, CJK punctuation, Greek, math and units.
_SYMBOLS = (
    "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    + "".join(chr(c) for c in range(0x3000, 0x3040))
    + "".join(chr(c) for c in range(0x0391, 0x03CA))
    + "∠°⊥∥△▱□○⊙≌∽π√±×÷≤≥≠≈∞∈∉∪∩⊂⊆∅∴∵∑∫′″‰℃Ωμ²³¹⁰₀₁₂₃₄·—…“”‘’《》【】"
)


def _bert_vocab() -> dict[str, int]:
    """Every CJK unified ideograph, ASCII (with word pieces, so "ABC" is not [UNK]) and the symbols
    above: with a few hundred characters most of a stem became [UNK] and distinct stems tokenized alike."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_chars = string.ascii_lowercase + string.digits
    tokens += list(ascii_chars + string.punctuation) + ["##" + c for c in ascii_chars]
    tokens += list(dict.fromkeys(_HANZI + "".join(chr(c) for c in range(0x4E00, 0xA000)) + _SYMBOLS))
    tokens += ["##" + c for c in _SYMBOLS]  # "6Ω", "20℃": a symbol inside a word
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def _clip_bpe_vocab() -> dict[str, int]:
    specials = ["<|startoftext|>", "<|endoftext|>"]
    # Byte-level BPE alphabet as CLIP's tokenizer writes it: each byte char, and a word-final variant.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    tokens = specials + alphabet + [c + "</w>" for c in alphabet]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


# Full-size shapes, for benchmarks: compute cost does not depend on the weights.
# ViT-B image tower shared by both architectures; they differ in patch size only.
VIT_B = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, image_size=224)
BASE_SIZES = {
    "chinese_clip": dict(  # Chinese-CLIP ViT-B/16: RoBERTa-wwm-base text tower, ViT-B/16 image tower, 512-d
        vision=dict(VIT_B, patch_size=16),
        text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        vocab_size=21128,
        projection_dim=512,
    ),
    "clip": dict(  # OpenAI CLIP ViT-B/32, 512-d
        vision=dict(VIT_B, patch_size=32),
        text=dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048),
        vocab_size=49408,
        projection_dim=512,
    ),
}


def build_tiny_clip(
    out_dir: str | Path,
    architecture: str = "chinese_clip",
    seed: int = 0,
    projection_dim: int = 16,
    full_size: bool = False,
    init_scale: float | None = None,
) -> Path:
    """Write a model folder (config, random weights, tokenizer, image processor) and return its path.

    ``full_size`` gives the real models' shapes (ViT-B/16 Chinese-CLIP, ViT-B/32 CLIP) for benchmarks;
    the tokenizer stays small (its ids are a subset of the full vocabulary)."""
    import torch

    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vision = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    vocab_size = None
    if full_size:
        base = BASE_SIZES[architecture]
        vision, text, vocab_size, projection_dim = (
            base["vision"],
            base["text"],
            base["vocab_size"],
            base["projection_dim"],
        )
    image_side = vision["image_size"]
    if architecture == "chinese_clip":
        from transformers import BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessorPil, ChineseCLIPModel

        tokenizer = BertTokenizer(vocab=_bert_vocab(), model_max_length=52)
        config = ChineseCLIPConfig(
            text_config=dict(
                # the tokenizer holds every CJK ideograph: more ids than the real model's 21,128
                text,
                vocab_size=max(vocab_size or 0, len(tokenizer)),
                max_position_embeddings=512 if full_size else 64,
            ),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = ChineseCLIPModel(config)
        side = {"height": image_side, "width": image_side}
        processor = ChineseCLIPImageProcessorPil(size=side, crop_size=side)
    elif architecture == "clip":
        from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        tokenizer = CLIPTokenizer(vocab=_clip_bpe_vocab(), merges=[], model_max_length=77)
        config = CLIPConfig(
            text_config=dict(
                text,
                vocab_size=len(tokenizer),
                max_position_embeddings=77,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            ),
            vision_config=vision,
            projection_dim=projection_dim,
        )
        model = CLIPModel(config)
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_side}, crop_size={"height": image_side, "width": image_side}
        )
    else:
        raise ValueError(f"architecture must be 'chinese_clip' or 'clip', got {architecture!r}")
    # transformers initialises weights at std 0.02, which made the tiny model degenerate: every text
    # came out at cosine 0.99998+ to every other, so "its own text is found first" held on the fifth
    # decimal. Scaled by 10, distinct demo stems lie at cosine 0.79-0.99 (median 0.95), figures
    # 0.35-0.99: a random model that still tells inputs apart. Full-size models (benchmarks) keep the
    # library's scale: only their cost matters, and large weights could overflow fp16.
    if init_scale is None:
        init_scale = 1.0 if full_size else 10.0
    if init_scale != 1.0:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2 and "embeddings" not in name:
                    param.mul_(init_scale)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)
    return out
