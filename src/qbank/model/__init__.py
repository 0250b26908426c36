"""The model layer: loading CLIP (transformers, clip-server names, ONNX folders), preprocessing, engines."""
