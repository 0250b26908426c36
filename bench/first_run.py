"""The first run, timed (issue 47): `qbank-demo` from its start to its line "serving N s after the
demo started" (the Flow up, the demo bank imported, four searches answered), on a quiet machine and
with a busy loop beside it on every core, in alternating rounds; the toy CLIP is the one the
bootstrap built (models/toy-chinese-clip), as a user's first `bash scripts/demo.sh` finds it.

    .venv/bin/python bench/first_run.py                 # 3 rounds, the demo's 300 questions
    .venv/bin/python bench/first_run.py --rounds 1 --questions 60
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUSY = "while True: pass"


def demo_seconds(questions: int, folder: Path) -> tuple[float, float]:
    """(wall seconds to the serving line, the seconds the demo printed) of one `qbank-demo --no-serve`."""
    from qbank.service.flow import flow_env

    env = {**os.environ, **flow_env(model="", data_dir=folder / "data")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qbank_devtools.demo", "--no-serve", "--questions", str(questions)],
        env=env,
        cwd=REPO,  # models/toy-chinese-clip, where the bootstrap built it
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    said = re.search(r"serving (\d+) s after the demo started", done.stdout)
    if done.returncode != 0 or not said:
        raise SystemExit(f"the demo failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return wall, float(said.group(1))


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=300)
    args = parser.parse_args()
    if not (REPO / "models" / "toy-chinese-clip" / "config.json").is_file():
        raise SystemExit("run scripts/bootstrap.sh first: it builds models/toy-chinese-clip")
    cores = os.cpu_count() or 1
    seconds: dict[str, list[float]] = {"quiet": [], f"{cores} busy loops beside it": []}
    with tempfile.TemporaryDirectory(prefix="qbank-first-run-") as tmp:
        for number in range(args.rounds):
            order = list(seconds) if number % 2 == 0 else list(reversed(seconds))
            for side in order:
                busy = [] if side == "quiet" else [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cores)]
                try:
                    wall, said = demo_seconds(args.questions, Path(tmp) / f"{number}-{len(busy)}")
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
                seconds[side].append(said)
                print(f"round {number + 1}, {side}: serving after {said:.0f} s (process {wall:.0f} s)", flush=True)
    print(f"\nqbank-demo --questions {args.questions}, {args.rounds} rounds, {cores} cores: seconds to serving")
    for side, values in seconds.items():
        print(f"{side:<24} median {statistics.median(values):>5.0f}   rounds {' '.join(f'{v:.0f}' for v in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
