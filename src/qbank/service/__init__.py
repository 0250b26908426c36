"""The Jina side: executors as importable classes, Document<->row mapping, request parameters,
the gateway, and starting flow.yml."""
