"""Server command-line programs: qbank-serve, qbank-fetch-model, qbank-export-onnx."""
