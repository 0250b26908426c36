"""One place that silences the third-party warnings known to be noise on a start, in this process
and in every process it starts (the Flow's executors are fresh interpreters: they inherit
``PYTHONWARNINGS`` and the progress-bar switch, and some warnings come before any qbank import).
``QBANK_SHOW_WARNINGS=true`` shows them all again.

Each entry was seen on the demo's first screen, before "Flow is ready", and none says anything an
operator can act on: setuptools' pkg_resources notice (milvus_lite imports it), jina's notes on
docarray v1 type hints in every executor, jina's notices on the start method qbank chooses, and the
progress bars of writing and loading a model of a few megabytes.
"""

from __future__ import annotations

import builtins
import os
import re
import warnings

from qbank.config import ServeSettings

# (category, the start of the message), as PYTHONWARNINGS matches them.
KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    ("UserWarning", "pkg_resources is deprecated as an API"),
    ("UserWarning", "`docs` annotation must be a type hint"),
    ("UserWarning", "`return` annotation must be a class"),
    ("UserWarning", "failed to set multiprocessing start_method"),
    ("UserWarning", "multiprocessing start method is set to"),  # qbank sets JINA_MP_START_METHOD=spawn itself
)


def quiet_known_warnings() -> bool:
    """Silence :data:`KNOWN_WARNINGS` and model progress bars here and in child processes, unless
    QBANK_SHOW_WARNINGS is set; returns whether it did."""
    if ServeSettings.resolve().show_warnings:
        return False
    entries = [f"ignore:{message}:{category}" for category, message in KNOWN_WARNINGS]
    given = os.environ.get("PYTHONWARNINGS", "")
    os.environ["PYTHONWARNINGS"] = ",".join([given, *entries] if given else entries)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow this switch
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=getattr(builtins, category))
    return True
