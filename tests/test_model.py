"""Model layer: loading through the user's path, both engines, ONNX export, clear errors."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from conftest import patched_env, png_bytes
from PIL import Image

from qbank.media.images import ImageInputError, ImageLimits, decode_image, image_from_array
from qbank.model.clip import (
    CLIP_SERVER_ALIASES,
    ClipEncoder,
    ModelUnavailableError,
    export_onnx,
    model_identity,
    resolve_model_name,
)

TEXTS = ["三角形ABC的面积是多少？", "已知圆的半径为2，求周长", "下列说法正确的是", "x"]


def images(n: int) -> list[Image.Image]:
    return [decode_image(png_bytes(i, (30 + 7 * i, 40)), ImageLimits()) for i in range(n)]


def test_tiny_chinese_clip_loads_and_encodes_into_one_normalised_space(tiny_model):
    encoder = ClipEncoder.load(str(tiny_model), engine="torch", device="cpu")
    assert encoder.name == "tiny-chinese-clip" and encoder.dim == 16
    assert encoder.preprocessor.context_length == 52  # Chinese-CLIP's text length
    assert "[UNK]" not in encoder.preprocessor.tokenizer.tokenize("三角形的面积")
    texts, pictures = encoder.encode_texts(TEXTS, batch_size=3), encoder.encode_images(images(5), batch_size=2)
    assert texts.shape == (4, 16) and pictures.shape == (5, 16)
    assert texts.dtype == np.float32 and pictures.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(np.vstack([texts, pictures]), axis=1), 1.0, atol=1e-5)
    # minibatching does not change results
    np.testing.assert_allclose(encoder.encode_texts(TEXTS, batch_size=1), texts, atol=1e-5)


def test_the_tiny_model_tells_distinct_inputs_apart(tiny_model):
    """Tests that say "its own item is found first" mean something only if distinct inputs get
    distinct vectors: the old tiny model put every stem at cosine 0.99998+ to every other."""
    from qbank_devtools.demo import FIGURE_KINDS, demo_bank, draw_figure

    encoder = ClipEncoder.load(str(tiny_model), engine="torch", device="cpu")
    stems = sorted({q["stem"] for q in demo_bank(200)})
    tokens = [encoder.preprocessor.tokenizer.tokenize(s) for s in stems]
    assert not any("[UNK]" in t for t in tokens), "the tiny tokenizer should know every character of the stems"
    pngs = sorted({draw_figure(FIGURE_KINDS[n % 6], n) for n in range(30)})  # distinct drawings only
    figures = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    for vectors in (encoder.encode_texts(stems, 32), encoder.encode_images(figures, 16)):
        cosines = (vectors @ vectors.T)[np.triu_indices(len(vectors), 1)]
        assert np.median(cosines) < 0.98 and np.min(cosines) < 0.9, (np.median(cosines), np.min(cosines))
        assert np.max(cosines) < 0.99999, "two distinct inputs got the same vector"


def test_onnx_export_has_clip_server_layout_and_matches_torch(tiny_model, tiny_onnx):
    import onnxruntime as ort

    assert {"textual.onnx", "visual.onnx", "tokenizer_config.json", "preprocessor_config.json"} <= set(
        os.listdir(tiny_onnx)
    )
    textual = ort.InferenceSession(str(tiny_onnx / "textual.onnx"))
    visual = ort.InferenceSession(str(tiny_onnx / "visual.onnx"))
    assert [i.name for i in textual.get_inputs()] == ["input_ids", "attention_mask"]
    assert textual.get_inputs()[0].type == "tensor(int32)"
    assert [i.name for i in visual.get_inputs()] == ["pixel_values"]

    torch_encoder = ClipEncoder.load(str(tiny_model), engine="torch", device="cpu")
    onnx_encoder = ClipEncoder.load(str(tiny_model), engine="onnx", device="cpu", onnx_path=str(tiny_onnx))
    assert onnx_encoder.name == torch_encoder.name and onnx_encoder.dim == torch_encoder.dim
    for a, b in [
        (torch_encoder.encode_texts(TEXTS), onnx_encoder.encode_texts(TEXTS)),
        (torch_encoder.encode_images(images(6)), onnx_encoder.encode_images(images(6))),
    ]:
        cosines = (a * b).sum(axis=1)
        assert cosines.min() > 0.999, cosines


def test_openai_clip_architecture_works_on_both_engines(tmp_path):
    from qbank_devtools.tiny_clip import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "tiny-openai-clip", "clip", projection_dim=24)
    torch_encoder = ClipEncoder.load(str(folder), engine="torch", device="cpu")
    assert torch_encoder.dim == 24 and torch_encoder.preprocessor.context_length == 77
    onnx_encoder = ClipEncoder.load(
        str(folder), engine="onnx", onnx_path=str(export_onnx(str(folder), tmp_path / "onnx"))
    )
    texts = ["a triangle", "a circle with radius 2"]
    assert ((torch_encoder.encode_texts(texts) * onnx_encoder.encode_texts(texts)).sum(1)).min() > 0.999
    assert ((torch_encoder.encode_images(images(3)) * onnx_encoder.encode_images(images(3))).sum(1)).min() > 0.999


def test_clip_server_names_map_to_hub_ids_and_identities_agree():
    assert resolve_model_name("CN-CLIP/ViT-B-16") == "OFA-Sys/chinese-clip-vit-base-patch16"
    assert resolve_model_name("ViT-B-32::openai") == "openai/clip-vit-base-patch32"
    assert model_identity("CN-CLIP/ViT-B-16") == model_identity("OFA-Sys/chinese-clip-vit-base-patch16")
    assert model_identity("/models/chinese-clip/") == "chinese-clip"
    assert all("/" in hub for hub in CLIP_SERVER_ALIASES.values())


def test_a_model_that_cannot_be_had_offline_says_what_to_do():
    with patched_env({"HF_HUB_OFFLINE": "1"}):
        start = time.monotonic()
        with pytest.raises(ModelUnavailableError) as error:
            ClipEncoder.load("OFA-Sys/chinese-clip-vit-base-patch16", engine="torch", device="cpu")
    message = str(error.value)
    assert (
        "OFA-Sys/chinese-clip-vit-base-patch16" in message and "QBANK_MODEL" in message and "HF_HUB_OFFLINE" in message
    )
    assert time.monotonic() - start < 10  # offline fails fast instead of retrying the hub


def test_onnx_engine_errors_name_the_missing_piece(tmp_path, tiny_model):
    with pytest.raises(ModelUnavailableError, match="QBANK_ONNX_PATH"):
        ClipEncoder.load(str(tiny_model), engine="onnx")
    with pytest.raises(ModelUnavailableError, match="textual.onnx"):
        ClipEncoder.load(str(tiny_model), engine="onnx", onnx_path=str(tmp_path))


def test_image_inputs_are_checked_before_decoding():
    limits = ImageLimits(max_bytes=100_000, max_pixels=10_000)
    with pytest.raises(ImageInputError, match="empty"):
        decode_image(b"", limits)
    with pytest.raises(ImageInputError, match="not a readable image"):
        decode_image(b"\x89PNG\r\n\x1a\n garbage", limits)
    bomb = io.BytesIO()
    Image.new("RGB", (3000, 3000), "white").save(bomb, format="PNG")  # small file, 9M pixels declared
    assert len(bomb.getvalue()) < limits.max_bytes
    with pytest.raises(ImageInputError, match="declares 3000x3000"):
        decode_image(bomb.getvalue(), limits)
    assert decode_image(png_bytes(0, (50, 40)), limits).size == (50, 40)
    assert image_from_array(np.zeros((3, 8, 9), dtype=np.float32)).size == (9, 8)  # CHW accepted
    assert image_from_array(np.full((8, 9, 3), 200, dtype=np.int64)).size == (9, 8)
    with pytest.raises(ImageInputError, match="not an image"):
        image_from_array(np.zeros((5,), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="0..255"):
        image_from_array(np.full((4, 4, 3), 999, dtype=np.int64))


def test_a_large_photo_is_decoded_at_most_max_side_long_and_remembers_its_size():
    """What the reader asks for (OCR_MAX_SIDE): a JPEG decoded at a DCT scale, then shrunk; a PNG
    shrunk after decoding; the size sent is kept for the pixel budget and the figure region."""
    from qbank.media.images import original_size

    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.new("RGB", (6000, 3000), "white").save(buffer, format=fmt)
        image = decode_image(buffer.getvalue(), ImageLimits(), max_side=2000)
        assert image.size == (2000, 1000) and original_size(image) == (6000, 3000), fmt
    small = decode_image(png_bytes(0, (50, 40)), ImageLimits(), max_side=2000)
    assert small.size == original_size(small) == (50, 40)


@pytest.mark.gpu
def test_torch_engine_on_cuda_in_fp16_agrees_with_cpu(tiny_model):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = ClipEncoder.load(str(tiny_model), engine="torch", device="cpu")
    gpu = ClipEncoder.load(str(tiny_model), engine="torch", device="cuda")
    assert gpu.engine.device == "cuda" and gpu.engine.dtype == torch.float16
    assert (cpu.encode_texts(TEXTS) * gpu.encode_texts(TEXTS)).sum(1).min() > 0.99
    assert (cpu.encode_images(images(4)) * gpu.encode_images(images(4))).sum(1).min() > 0.99


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_onnx_export_in_lower_precision_stays_in_the_same_space(tiny_model, tmp_path, precision, caplog):
    import onnx

    folder = export_onnx(str(tiny_model), tmp_path / precision, precision=precision)
    assert "pre-processing" not in caplog.text  # the quantiser's hint is kept from operators
    graph = onnx.load(str(folder / "visual.onnx")).graph
    ops = {node.op_type for node in graph.node}
    weight_types = {init.data_type for init in graph.initializer}
    if precision == "int8":
        assert "MatMulInteger" in ops and onnx.TensorProto.INT8 in weight_types
    else:
        assert onnx.TensorProto.FLOAT16 in weight_types
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers do not change

    torch_encoder = ClipEncoder.load(str(tiny_model), engine="torch", device="cpu")
    onnx_encoder = ClipEncoder.load(str(tiny_model), engine="onnx", device="cpu", onnx_path=str(folder))
    assert onnx_encoder.engine.precision == precision and onnx_encoder.name == torch_encoder.name
    # Each lower-precision vector stays next to its fp32 twin and nearer to it than to any other input's.
    # (int8 on this 32-wide tiny model: cosine >= 0.985 on a CPU with VNNI; 0.963 at worst, with the
    # export's 7-bit weights, on one without AVX-512, where 8-bit weights gave 0.70. The degenerate
    # old tiny model hid any error.)
    for reference, lower in (
        (torch_encoder.encode_texts(TEXTS), onnx_encoder.encode_texts(TEXTS)),
        (torch_encoder.encode_images(images(4)), onnx_encoder.encode_images(images(4))),
    ):
        similarity = lower @ reference.T
        assert np.diag(similarity).min() > (0.95 if precision == "int8" else 0.99)
        assert (similarity.argmax(axis=1) == np.arange(len(reference))).all()

    from qbank.cli.fetch_model import exported_model
    from qbank.cli.fetch_model import main as fetch_main

    assert exported_model(folder) == ("tiny-chinese-clip", precision)
    before = (folder / "visual.onnx").stat().st_mtime_ns
    assert fetch_main(["--model", str(tiny_model), "--onnx-out", str(folder), "--precision", precision]) == 0
    assert (folder / "visual.onnx").stat().st_mtime_ns == before  # same model and precision: left alone
    if precision == "int8":  # another precision is exported over it
        assert fetch_main(["--model", str(tiny_model), "--onnx-out", str(folder)]) == 0
        assert exported_model(folder) == ("tiny-chinese-clip", "fp32")


def test_onnx_export_refuses_an_unknown_precision(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8, got 'int4'"):
        export_onnx(str(tiny_model), tmp_path / "x", precision="int4")
    assert not (tmp_path / "x").exists()
