"""The question-bank search server.

Packages, with imports pointing one way (domain <- model, media, store <- service <- cli):
``domain`` (pure: item schema, filters, fusion, duplicates), ``model`` (CLIP), ``media`` (images),
``store`` (Milvus), ``service`` (executors, mapping, parameters, gateway, starting the Flow),
``cli`` (qbank-serve, qbank-fetch-model, qbank-export-onnx) and ``config`` (every setting, read once).
"""

__version__ = "0.1.0"
