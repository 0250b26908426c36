"""The README's main command, end to end but without blocking: Flow + demo bank + the three searches."""

from __future__ import annotations

from conftest import flow_env, patched_env

from qbank_devtools.demo import demo_bank, main


def test_demo_bank_is_a_few_hundred_chinese_questions_with_distinct_figures():
    bank = demo_bank()
    assert len(bank) == 300 and len({q["id"] for q in bank}) == 300
    assert all(q["stem"] and q["figure"].startswith(b"\x89PNG") and q["knowledge_points"] for q in bank)
    assert len({q["figure"] for q in bank}) == 300 and {q["subject"] for q in bank} == {"数学", "物理", "化学"}
    assert len({q["stem"] for q in bank}) > 150  # varied, with some near-duplicates as real banks have


def test_demo_runs_the_flow_imports_and_searches(tmp_path, capsys):
    with patched_env(flow_env(model="", data_dir=tmp_path / "data")):
        assert main(["--no-serve", "--questions", "12", "--models-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert "NOT semantic" in out  # no real weights here: said plainly
    assert "imported 12 questions" in out and "24 items written, 0 already stored" in out
    assert "text -> image" in out and "image -> text" in out and "similar questions" in out
    assert "search page: http://127.0.0.1:" in out
    assert (tmp_path / "data" / "bank" / "bank.jsonl").is_file()
    assert (tmp_path / "models" / "tiny-chinese-clip" / "config.json").is_file()
