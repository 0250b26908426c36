"""Developer tools, not shipped in the server images: the tiny test model, the demo bank and its
``qbank-demo``, the eval set and ``qbank-eval``, the load test."""
