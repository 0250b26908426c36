"""Shared core of the question-bank search service: schema, config, images, model and store layers.

Executors (``executors/``) and the client (``client/``) import from here so that the document
fields, configuration and preprocessing are defined once.
"""

__version__ = "0.1.0"
