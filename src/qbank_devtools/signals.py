"""How a benchmark or tool script that starts servers stops on SIGTERM."""

from __future__ import annotations

import signal


def _exit(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit(143)`` in the main thread, as SIGINT raises KeyboardInterrupt, so
    both unwind the script's ``with`` blocks and the Milvus standalone or Flow it started stops with
    it. Python's default ends the process at once and leaves those children running, holding their
    ports, memory and data folders (a killed bench left the standalone holding its fixed etcd
    ports, and the next run could not start one). Call it first thing in a script's main."""
    signal.signal(signal.SIGTERM, _exit)
