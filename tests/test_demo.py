"""The README's main command, end to end but without blocking: Flow + demo bank + the three searches."""

from __future__ import annotations

from conftest import flow_env, patched_env

from qbank.demo import demo_bank, main


def test_demo_bank_is_chinese_questions_with_distinct_figures():
    bank = demo_bank(30)
    assert len({q["id"] for q in bank}) == 30
    assert all(q["stem"] and q["figure"].startswith(b"\x89PNG") for q in bank)
    assert len({q["figure"] for q in bank}) == 30 and {q["subject"] for q in bank} == {"数学", "物理", "化学"}


def test_demo_runs_the_flow_imports_and_searches(tmp_path, capsys):
    with patched_env(flow_env(model="", data_dir=tmp_path / "data")):
        assert main(["--no-serve", "--questions", "12", "--models-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert "NOT semantic" in out  # no real weights here: said plainly
    assert "indexed 12 questions = 24 items" in out
    assert "text -> image" in out and "image -> text" in out
    assert (tmp_path / "models" / "tiny-chinese-clip" / "config.json").is_file()
