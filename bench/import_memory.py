"""The client's memory and rate importing a 1 GB bank, against the client before streaming (issue 43).

Banks are made of CMMLU's real questions (the folder given, ../shared/data/cmmlu by default; its
licence keeps it out of the repo, so the files are written to a temporary folder and removed):

1. **1 GB of heavy rows** (each question's analysis is the text of the CMMLU questions after it,
   20,000 characters, 60 KB of UTF-8, under QBANK_MAX_TAG_BYTES): `qbank import` through a real Flow (tiny CLIP), the
   client's peak RSS (VmHWM, polled) and questions/s.
2. **1 GB of typical rows** (a question with its options and a short analysis; millions of rows):
   `qbank import --check`, which reads and checks every row as an import does (the duplicate-id
   index included) and sends nothing: peak RSS and rows/s. A Flow would need hours to encode them.
3. **The rate against the client before** (``--baseline`` commit, its src/ exported with git archive
   and run with PYTHONPATH): the same CMMLU questions imported with --force into one Flow, the two
   clients alternating for ``--rounds`` rounds, medians; the old client's peak RSS on the same file.

    .venv/bin/python bench/import_memory.py                          # all three, 1 GB
    .venv/bin/python bench/import_memory.py --size-mb 200 --rounds 3 # smaller
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cmmlu_questions(folder: Path) -> list[dict]:
    questions = []
    for path in sorted(folder.rglob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                questions.append(
                    {
                        "stem": row["Question"],
                        "options": [row[k] for k in "ABCD"],
                        "answer": row["Answer"],
                        "subject": path.stem,
                    }
                )
    return questions


def write_bank(path: Path, questions: list[dict], size_mb: int, analysis_chars: int) -> int:
    """A JSONL of about ``size_mb`` MB cycling through ``questions`` with unique ids; each analysis is
    the following questions' text up to ``analysis_chars``. Returns the rows written."""
    target, written, rows, n = size_mb * 1024 * 1024, 0, 0, len(questions)
    with path.open("w", encoding="utf-8") as out:
        while written < target:
            q = questions[rows % n]
            analysis, k = [], 1
            while sum(map(len, analysis)) < analysis_chars:
                other = questions[(rows + k) % n]
                analysis.append(other["stem"] + "；" + "；".join(other["options"]))
                k += 1
            line = json.dumps(
                dict(q, id=f"b{rows}", analysis="".join(analysis)[:analysis_chars] or "略"), ensure_ascii=False
            )
            out.write(line + "\n")
            written += len(line.encode("utf-8")) + 1
            rows += 1
    return rows


def peak_rss_run(command: list[str], env: dict[str, str]) -> tuple[int, float, float, dict | None, str]:
    """(exit code, seconds, peak RSS in MB, the JSON summary, stderr's tail) of one client run. Both
    pipes are drained while it runs (a full stderr pipe would stall the client), VmHWM polled."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    status = Path(f"/proc/{process.pid}/status")
    with ThreadPoolExecutor(max_workers=2) as pool:
        out, err = pool.submit(process.stdout.read), pool.submit(process.stderr.read)
        peak = 0
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.2)
        out, err = out.result(), err.result()
    seconds = time.monotonic() - started
    try:
        summary = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        summary = None
    return process.returncode, seconds, peak / 1024, summary, err[-600:]


def client_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "qbank_client.cli", "--url", url, "--json", "import", *args]


def baseline_env(rev: str, folder: Path) -> dict[str, str]:
    """The environment that runs the client of commit ``rev`` (its src/ exported)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return dict(os.environ, PYTHONPATH=str(folder / "src"))


def main() -> int:
    from qbank_devtools.signals import exit_on_sigterm

    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cmmlu", nargs="?", default=str(REPO.parent / "shared" / "data" / "cmmlu"))
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rate-questions", type=int, default=3000, help="questions of the side-by-side rate runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="61d7e0f", help="the commit whose client is compared (before streaming)")
    parser.add_argument("--skip", action="append", default=[], choices=["heavy", "typical", "rate"])
    args = parser.parse_args()

    from qbank.quiet import quiet_known_warnings

    quiet_known_warnings()
    from qbank.service.flow import running_flow
    from qbank_devtools.tiny_clip import build_tiny_clip

    questions = cmmlu_questions(Path(args.cmmlu))
    print(f"{len(questions)} CMMLU questions from {args.cmmlu}")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="qbank-import-bench-") as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_clip(tmp_path / "tiny", "chinese_clip")
        if "typical" not in args.skip:
            bank = tmp_path / "typical.jsonl"
            rows = write_bank(bank, questions, args.size_mb, analysis_chars=200)
            rc, seconds, peak, summary, err = peak_rss_run(
                client_command("grpc://127.0.0.1:9", str(bank), "--check"), env
            )
            print(
                f"typical rows, --check: {bank.stat().st_size / 2**20:.0f} MB, {rows} rows, exit {rc}, "
                f"{seconds:.1f} s ({rows / seconds:,.0f} rows/s), client peak RSS {peak:.0f} MB"
            )
            if summary is None or summary["questions"] != rows:
                print("  unexpected summary:", summary and {k: summary[k] for k in ("questions", "bad_rows")}, err)
            bank.unlink()
        with running_flow(model=model, data_dir=tmp_path / "data") as urls:
            if "heavy" not in args.skip:
                bank = tmp_path / "heavy.jsonl"
                rows = write_bank(bank, questions, args.size_mb, analysis_chars=20_000)
                rc, seconds, peak, summary, err = peak_rss_run(client_command(urls["grpc"], str(bank)), env)
                imported = summary["imported"] if summary else 0
                print(
                    f"heavy rows, through the Flow: {bank.stat().st_size / 2**20:.0f} MB, {rows} rows, exit {rc}, "
                    f"imported {imported}, {seconds:.1f} s ({imported / seconds:.1f} questions/s), "
                    f"client peak RSS {peak:.0f} MB"
                )
                if rc:
                    print("  ", err)
                bank.unlink()
            if "rate" not in args.skip:
                bank = tmp_path / "rate.jsonl"
                write_bank(bank, questions[: args.rate_questions], 1, analysis_chars=200)
                lines = bank.read_text(encoding="utf-8").splitlines()[: args.rate_questions]
                bank.write_text("\n".join(lines) + "\n", encoding="utf-8")
                old = baseline_env(args.baseline, tmp_path / "baseline")
                sides = {"now": env, f"before ({args.baseline})": old}
                rates: dict[str, list[float]] = {name: [] for name in sides}
                peaks: dict[str, list[float]] = {name: [] for name in sides}
                for round_ in range(args.rounds):
                    for name, side_env in sides.items() if round_ % 2 == 0 else reversed(sides.items()):
                        rc, seconds, peak, summary, err = peak_rss_run(
                            client_command(urls["grpc"], str(bank), "--force"), side_env
                        )
                        if rc or not summary or summary["imported"] != len(lines):
                            print(f"  {name}: exit {rc}: {err}")
                        rates[name].append(len(lines) / seconds)
                        peaks[name].append(peak)
                print(f"rate, {len(lines)} CMMLU questions with --force, {args.rounds} rounds alternating (medians):")
                for name in sides:
                    print(
                        f"  {name:>20}: {statistics.median(rates[name]):.1f} questions/s "
                        f"(runs {', '.join(f'{r:.1f}' for r in rates[name])}), peak RSS {statistics.median(peaks[name]):.0f} MB"
                    )
                now, before = (statistics.median(rates[name]) for name in sides)
                print(f"  now / before: {now / before:.2f}x the rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
