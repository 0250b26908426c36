"""Model layer: load a CLIP model (hub id, local folder or clip-server name) and encode with torch or ONNX.

Both engines sit behind one interface (:class:`ClipEncoder`: ``encode_texts``, ``encode_images``) and
run the same towers (:class:`TextTower`, :class:`ImageTower`), so the ONNX export is exactly what
the torch engine computes. Embeddings come out L2-normalised float32.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from qbank.config import ONNX_PRECISIONS, hub_offline

if TYPE_CHECKING:  # heavy imports stay lazy: the client and the indexer never need torch
    import torch
    from PIL import Image

logger = logging.getLogger("qbank.model.clip")

# clip-server model names -> transformers hub ids with the same weights.
CLIP_SERVER_ALIASES: dict[str, str] = {
    "ViT-B-32::openai": "openai/clip-vit-base-patch32",
    "ViT-B-16::openai": "openai/clip-vit-base-patch16",
    "ViT-L-14::openai": "openai/clip-vit-large-patch14",
    "ViT-L-14-336::openai": "openai/clip-vit-large-patch14-336",
    "CN-CLIP/ViT-B-16": "OFA-Sys/chinese-clip-vit-base-patch16",
    "CN-CLIP/ViT-L-14": "OFA-Sys/chinese-clip-vit-large-patch14",
    "CN-CLIP/ViT-L-14-336": "OFA-Sys/chinese-clip-vit-large-patch14-336px",
    "CN-CLIP/ViT-H-14": "OFA-Sys/chinese-clip-vit-huge-patch14",
}
# Text context as the original models were trained (Chinese-CLIP: 52 tokens, OpenAI CLIP: 77).
CONTEXT_LENGTH = {"chinese_clip": 52, "clip": 77}
ONNX_TEXTUAL = "textual.onnx"
ONNX_VISUAL = "visual.onnx"
ONNX_META = "qbank_onnx.json"
# Weights of an ONNX export: fp32 as trained; fp16 for GPUs (inputs and outputs stay float32);
# int8 = dynamic quantisation of every MatMul/Gemm weight (per channel), for CPUs with VNNI.
DEFAULT_LOGIT_SCALE = 100.0


def read_onnx_meta(folder: Path) -> dict:
    """qbank_onnx.json of an export ({} for a clip-server folder, which has none)."""
    meta_file = folder / ONNX_META
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


class ModelUnavailableError(RuntimeError):
    """The model cannot be loaded here; the message says what to do."""


def resolve_model_name(name: str) -> str:
    """A local folder stays as given; a clip-server name becomes its hub id; anything else is a hub id."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return CLIP_SERVER_ALIASES.get(name, name)


def model_identity(name: str) -> str:
    """The name recorded with stored vectors: hub id for hub ids and clip-server names, the last
    path part for folders. Decided from the string alone, so the indexer (which may not see the
    encoder's model folder) derives the same identity as the encoder."""
    name = name.rstrip("/")
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        return Path(name).name
    return CLIP_SERVER_ALIASES.get(name, name)


def _from_pretrained(loader, source: str, **kwargs):
    """Local cache first (no network), then the hub; a failure becomes one clear message."""
    if Path(source).is_dir():
        return loader.from_pretrained(source, **kwargs)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError:
        pass
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache"
    else:
        try:
            return loader.from_pretrained(source, **kwargs)
        except OSError as exc:
            reason = f"the model hub could not be reached or has no such model ({exc.__class__.__name__})"
    raise ModelUnavailableError(
        f"CLIP model {source!r} is not available: {reason}. "
        f"Either download it where there is network (`huggingface-cli download {source} --local-dir "
        f"/models/{source.split('/')[-1]}`) and set QBANK_MODEL=/models/{source.split('/')[-1]}, "
        "or point QBANK_MODEL at any local folder saved with save_pretrained "
        "(or QBANK_ENGINE=onnx with QBANK_ONNX_PATH at an exported ONNX folder)."
    )


@dataclass
class Preprocessor:
    """Tokenizer + image processor of a model, without torchvision (PIL backend)."""

    tokenizer: object
    image_processor: object
    context_length: int

    @classmethod
    def load(cls, source: str, model_type: str, max_positions: int | None) -> Preprocessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = _from_pretrained(AutoTokenizer, source)
        image_processor = _from_pretrained(AutoImageProcessor, source, backend="pil")
        context = CONTEXT_LENGTH.get(model_type, 77)
        if max_positions:
            context = min(context, max_positions)
        return cls(tokenizer, image_processor, context)

    def tokenize(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, np.ndarray]:
        padding = "max_length" if pad_to else "longest"
        encoded = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=pad_to or self.context_length,
            return_tensors="np",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.asarray(
            self.image_processor(images=list(images), return_tensors="np")["pixel_values"], dtype=np.float32
        )


def _features(output) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projection; 4.x a tensor."""
    return output if hasattr(output, "shape") else output.pooler_output


def _towers():
    import torch

    class TextTower(torch.nn.Module):
        """Projected text embedding from (input_ids, attention_mask): the graph both engines run."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return _features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    class ImageTower(torch.nn.Module):
        """Projected image embedding from pixel_values."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return _features(self.model.get_image_features(pixel_values=pixel_values))

    return TextTower, ImageTower


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Engine(Protocol):
    dim: int
    logit_scale: float
    device: str
    precision: str

    def text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def image(self, pixel_values: np.ndarray) -> np.ndarray: ...


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class TorchEngine:
    """transformers model on CPU or CUDA (fp16 on CUDA unless turned off)."""

    def __init__(self, model, device: str, fp16: bool, num_threads: int = 0):
        import torch

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelUnavailableError("device 'cuda' was asked for but torch sees no CUDA device")
        self.device = device
        self.dtype = torch.float16 if (fp16 and device == "cuda") else torch.float32
        self.precision = "fp16" if self.dtype == torch.float16 else "fp32"
        text_tower, image_tower = _towers()
        model = model.eval().to(device=device, dtype=self.dtype)
        self.text_tower = text_tower(model)
        self.image_tower = image_tower(model)
        self.dim = int(model.config.projection_dim)
        self.logit_scale = (
            float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else DEFAULT_LOGIT_SCALE
        )

    def text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.text_tower(
                torch.from_numpy(input_ids.astype(np.int64)).to(self.device),
                torch.from_numpy(attention_mask.astype(np.int64)).to(self.device),
            )
        return out.float().cpu().numpy()

    def image(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.image_tower(torch.from_numpy(pixel_values).to(self.device, dtype=self.dtype))
        return out.float().cpu().numpy()


class OnnxEngine:
    """onnxruntime sessions over a clip-server style folder (textual.onnx + visual.onnx)."""

    def __init__(self, folder: Path, device: str, num_threads: int = 0):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise ModelUnavailableError(
                "device 'cuda' was asked for but onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        for name in (ONNX_TEXTUAL, ONNX_VISUAL):
            if not (folder / name).is_file():
                raise ModelUnavailableError(f"ONNX folder {folder} has no {name} (export one with qbank-export-onnx)")
        self.textual = ort.InferenceSession(str(folder / ONNX_TEXTUAL), options, providers=providers)
        self.visual = ort.InferenceSession(str(folder / ONNX_VISUAL), options, providers=providers)
        self.device = "cuda" if self.textual.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        inputs = {i.name: i for i in self.textual.get_inputs()}
        self._id_dtype = np.int32 if inputs["input_ids"].type == "tensor(int32)" else np.int64
        seq = inputs["input_ids"].shape[1]
        self.fixed_length = seq if isinstance(seq, int) else None  # clip-server exports pad to 77
        pixel_type = self.visual.get_inputs()[0].type
        self._pixel_dtype = np.float16 if pixel_type == "tensor(float16)" else np.float32
        self.dim = int(self.textual.get_outputs()[0].shape[-1])
        meta = read_onnx_meta(folder)
        self.logit_scale = meta.get("logit_scale", DEFAULT_LOGIT_SCALE)
        self.precision = meta.get("precision", "fp32")
        if self.precision == "int8" and self.device == "cuda":
            logger.warning("%s holds an int8 export: its integer GEMMs run on the CPU, export fp16 for GPUs", folder)

    def text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(self._id_dtype), "attention_mask": attention_mask.astype(self._id_dtype)}
        return np.asarray(self.textual.run(None, feeds)[0], dtype=np.float32)

    def image(self, pixel_values: np.ndarray) -> np.ndarray:
        feeds = {self.visual.get_inputs()[0].name: pixel_values.astype(self._pixel_dtype)}
        return np.asarray(self.visual.run(None, feeds)[0], dtype=np.float32)


def _load_hf_model(source: str):
    """Config, model and preprocessor of a transformers CLIP (hub id or folder)."""
    from transformers import AutoConfig, AutoModel

    config = _from_pretrained(AutoConfig, source)
    if not hasattr(config, "projection_dim") or not hasattr(config, "text_config"):
        raise ModelUnavailableError(f"{source!r} is a {config.model_type!r} model, not a CLIP model")
    model = _from_pretrained(AutoModel, source, config=config)
    max_positions = getattr(config.text_config, "max_position_embeddings", None)
    return config, model, Preprocessor.load(source, config.model_type, max_positions)


class ClipEncoder:
    """Preprocessing + engine: what the encoder executor calls. One embedding space for text and images."""

    def __init__(self, engine: Engine, preprocessor: Preprocessor, name: str):
        self.engine = engine
        self.preprocessor = preprocessor
        self.name = name

    @property
    def dim(self) -> int:
        return self.engine.dim

    @classmethod
    def load(
        cls,
        model: str,
        engine: str = "torch",
        device: str = "auto",
        onnx_path: str = "",
        fp16: str = "auto",
        num_threads: int = 0,
    ) -> ClipEncoder:
        device = pick_device(device)
        if engine == "onnx":
            if not onnx_path:
                raise ModelUnavailableError(
                    "engine 'onnx' needs QBANK_ONNX_PATH: a folder made by `qbank-export-onnx --model "
                    f"{model} --out DIR` (or a clip-server ONNX folder)"
                )
            folder = Path(onnx_path).expanduser()
            meta = read_onnx_meta(folder)
            # Tokenizer and image processor travel inside our export; for a bare clip-server folder
            # they come from the model name.
            text_source = str(folder) if (folder / "tokenizer_config.json").is_file() else resolve_model_name(model)
            preprocessor = Preprocessor.load(text_source, meta.get("model_type", "clip"), meta.get("max_positions"))
            runtime: Engine = OnnxEngine(folder, device, num_threads)
            if runtime.fixed_length:
                preprocessor.context_length = runtime.fixed_length
            name = meta.get("model", model_identity(model))
        else:
            source = resolve_model_name(model)
            _, hf_model, preprocessor = _load_hf_model(source)
            use_fp16 = fp16 == "true" or (fp16 == "auto" and device == "cuda")
            runtime = TorchEngine(hf_model, device, use_fp16, num_threads)
            name = model_identity(model)
        logger.info(
            "CLIP model %s loaded: engine=%s device=%s precision=%s dim=%d",
            name,
            engine,
            runtime.device,
            runtime.precision,
            runtime.dim,
        )
        return cls(runtime, preprocessor, name)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = []
        pad_to = getattr(self.engine, "fixed_length", None)
        for start in range(0, len(texts), batch_size):
            tokens = self.preprocessor.tokenize(texts[start : start + batch_size], pad_to=pad_to)
            out.append(self.engine.text(tokens["input_ids"], tokens["attention_mask"]))
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            out.append(self.engine.image(self.preprocessor.pixels(images[start : start + batch_size])))
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


def export_onnx(model: str, out_dir: str | Path, opset: int = 18, precision: str = "fp32") -> Path:
    """Export ``model`` to clip-server's ONNX layout, with tokenizer/processor/metadata beside it.

    ``precision`` (:data:`ONNX_PRECISIONS`) converts both towers after the fp32 export.
    """
    import torch

    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    source = resolve_model_name(model)
    config, hf_model, preprocessor = _load_hf_model(source)
    hf_model = hf_model.eval().float()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_tower, image_tower = _towers()
    tokens = preprocessor.tokenize(["export", "导出示例文本"], pad_to=preprocessor.context_length)
    ids = torch.from_numpy(tokens["input_ids"].astype(np.int32))
    mask = torch.from_numpy(tokens["attention_mask"].astype(np.int32))
    size = config.vision_config.image_size
    pixels = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=2, max=preprocessor.context_length)
    # The dynamo exporter: the legacy TorchScript one mis-traces transformers 5 text towers.
    torch.onnx.export(
        text_tower(hf_model),
        (ids, mask),
        str(out / ONNX_TEXTUAL),
        input_names=["input_ids", "attention_mask"],
        output_names=["text_embeds"],
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )
    torch.onnx.export(
        image_tower(hf_model),
        (pixels,),
        str(out / ONNX_VISUAL),
        input_names=["pixel_values"],
        output_names=["image_embeds"],
        dynamic_shapes={"pixel_values": {0: batch}},
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )
    for tower in (ONNX_TEXTUAL, ONNX_VISUAL):
        convert_onnx_precision(out / tower, precision)
    preprocessor.tokenizer.save_pretrained(out)
    preprocessor.image_processor.save_pretrained(out)
    meta = {
        "model": model_identity(model),
        "model_type": config.model_type,
        "max_positions": getattr(config.text_config, "max_position_embeddings", None),
        "dim": int(config.projection_dim),
        "logit_scale": float(hf_model.logit_scale.exp().item()),
        "precision": precision,
    }
    (out / ONNX_META).write_text(json.dumps(meta, indent=2))
    logger.info("exported %s to %s", meta["model"], out)
    return out


def convert_onnx_precision(path: Path, precision: str) -> None:
    """Rewrite one fp32 tower in place as ``precision``.

    int8: onnxruntime's dynamic quantisation (weights int8 per output channel, activations quantised
    per batch at run time), which the CPU runs as VNNI integer GEMMs: 2.5x the fp32 images/s of a
    ViT-B/16 on this machine's 2 cores (bench/encode.py). fp16: halves weights and runs on tensor
    cores; inputs and outputs stay float32 so callers do not change.
    """
    if precision == "fp32":
        return
    tmp = path.with_suffix(f".{precision}.tmp")
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The quantiser logs a hint to run its shape pre-processing on the root logger; the export
        # is already shape-inferred by torch, so the hint would only mislead an operator.
        def not_the_hint(record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

        logging.getLogger().addFilter(not_the_hint)
        try:
            quantize_dynamic(
                str(path),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # 7-bit weights: on x86 without VNNI, onnxruntime's u8 x s8 kernels saturate, which took
                # the tiny model's image vectors to cosine 0.70 against fp32 (0.96 with this; its docs
                # advise it for per-channel on such machines). The export may run on another CPU than
                # the one that serves it, so it is always on.
                reduce_range=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        finally:
            logging.getLogger().removeFilter(not_the_hint)
    else:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(tmp))
    os.replace(tmp, path)
