"""The README's main command, end to end but without blocking: Flow + demo bank + the three searches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, flow_env, patched_env

from qbank_devtools.demo import demo_bank, main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_bank_is_a_few_hundred_chinese_questions_with_distinct_figures():
    bank = demo_bank()
    assert len(bank) == 300 and len({q["id"] for q in bank}) == 300
    assert all(q["stem"] and q["figure"].startswith(b"\x89PNG") and q["knowledge_points"] for q in bank)
    assert len({q["figure"] for q in bank}) == 300 and {q["subject"] for q in bank} == {"数学", "物理", "化学"}
    assert len({q["stem"] for q in bank}) > 150  # varied, with some near-duplicates as real banks have


@pytest.mark.service
@pytest.mark.timeout(600)  # the first user of the session's toy CLIP pays its ~100 s of training
def test_demo_runs_the_flow_imports_and_searches(toy_model, tmp_path, capsys):
    with patched_env(flow_env(model="", data_dir=tmp_path / "data")):  # the toy cached by the session
        assert main(["--no-serve", "--questions", "12", "--models-dir", str(toy_model.parent)]) == 0
    out = capsys.readouterr().out
    assert "TOY CLIP" in out and "not Chinese-CLIP" in out  # no real weights here: said plainly
    assert "training the toy CLIP" not in out  # the cached one was used
    assert "imported 12 questions" in out and "24 items written, 0 already stored" in out
    assert "text -> image" in out and "image -> text" in out and "similar questions" in out
    figure_rows = [line for line in out.splitlines() if "[figure] " in line]  # the figure, not its OCR'd text
    assert figure_rows and all(".png" in line for line in figure_rows), out
    assert "search page: http://127.0.0.1:" in out
    assert (tmp_path / "data" / "bank" / "bank.jsonl").is_file()
    assert f"model {toy_model.resolve()}" in out


KNOWN_NOISE = ("UserWarning", "pkg_resources", "annotation must be", "Loading weights", "Writing model shards")


@pytest.mark.service
@pytest.mark.timeout(600)
def test_the_demos_first_screen_is_free_of_known_third_party_warnings(toy_model, tmp_path):
    """The demo as a user starts it (a real process tree): nothing of qbank.quiet's list, nor a
    model's progress bars, comes before "Flow is ready"; the Flow's own log and notes still do."""
    env = {**os.environ, **flow_env(model="", data_dir=tmp_path / "data", flow=str(ROOT / "flow.yml"))}
    env.pop("QBANK_SHOW_WARNINGS", None)
    env.pop("PYTHONWARNINGS", None)
    command = [sys.executable, "-m", "qbank_devtools.demo", "--no-serve", "--questions", "6"]
    done = subprocess.run(
        [*command, "--models-dir", str(toy_model.parent)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order a terminal shows it
        text=True,
        timeout=600,
    )
    output = done.stdout
    assert done.returncode == 0, output[-3000:]
    first_screen = output[: output.index("Flow is ready")]
    assert "TOY CLIP" in first_screen and "CORS is enabled" not in first_screen, first_screen
    assert not [noise for noise in KNOWN_NOISE if noise in first_screen], first_screen[-3000:]


@pytest.mark.service
def test_qbank_show_warnings_shows_them_again():
    probe = "from qbank.quiet import quiet_known_warnings; quiet_known_warnings(); import milvus_lite"
    for show, shown in (("", False), ("true", True)):
        env = {**os.environ, "QBANK_SHOW_WARNINGS": show}
        env.pop("PYTHONWARNINGS", None)
        if not show:
            env.pop("QBANK_SHOW_WARNINGS")
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and ("pkg_resources is deprecated" in done.stderr) is shown, done.stderr[-2000:]


@pytest.mark.service
def test_qbank_commands_and_the_bootstrap_print_no_third_party_warning(tmp_path):
    """`qbank --help`, `qbank import` (here against no server: it reads, then says it stopped) and the
    bootstrap show what they do, not setuptools' notice from jina's imports; QBANK_SHOW_WARNINGS=true
    brings it back."""
    bank = tmp_path / "bank.csv"
    bank.write_text("id,stem\nq1,已知三角形ABC的三边长分别为3、4、5\n", encoding="utf-8")
    qbank = str(Path(sys.executable).parent / "qbank")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "QBANK_SHOW_WARNINGS")}
    runs = {
        "qbank --help": [qbank, "--help"],
        "qbank import": [qbank, "--url", "grpc://127.0.0.1:9", "import", str(bank)],
        "bootstrap": ["bash", str(REPO / "scripts" / "bootstrap.sh")],
    }
    for name, command in runs.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        shown = done.stdout + done.stderr
        assert not [noise for noise in KNOWN_NOISE if noise in shown], f"{name}: {shown[-2000:]}"
    loud = {**env, "QBANK_SHOW_WARNINGS": "true"}
    done = subprocess.run(runs["qbank import"], env=loud, capture_output=True, text=True, timeout=600)
    assert "pkg_resources is deprecated" in done.stderr, done.stderr[-2000:]
