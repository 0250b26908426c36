"""README.md and docs/ point at things that exist: links (and their anchors), the repository's file
paths, the `qbank` subcommands and their options, console scripts and QBANK_* settings. A renamed
file, command or setting fails here instead of leaving a newcomer with a dead instruction."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from importlib.metadata import distribution
from pathlib import Path

import pytest

from qbank_client.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
# Top-level folders of this repository: a backticked word starting with one of them is a path here.
REPO_DIRS = ("src/", "bench/", "tests/", "scripts/", "k8s/", "executors/", "docs/", "compat/", ".ci/")
REPO_FILES = ("flow.yml", "constraints.txt", "pyproject.toml")
DISTRIBUTIONS = {"qbank-search", "qbank-jina-compat"}  # pip names, not commands

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
SETTING = re.compile(r"\bQBANK_[A-Z0-9_]*[A-Z0-9]\b")


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def prose(path: Path) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def command_lines(path: Path) -> list[str]:
    """Shell-ish lines of the fenced blocks and of inline code that start with a command of ours."""
    text = path.read_text(encoding="utf-8")
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    lines += CODE_SPAN.findall(FENCE.sub("", text))
    commands = [part.strip() for line in lines for part in re.split(r"&&|\|\||\|", line.split("#")[0])]
    return [c for c in commands if re.match(r"(\.venv/bin/)?qbank(-[a-z-]+)?(\s|$)", c)]


def console_scripts() -> set[str]:
    """The commands this project installs (pyproject.toml's [project.scripts], as installed)."""
    return {e.name for e in distribution("qbank-search").entry_points if e.group == "console_scripts"}


def test_readme_fits_a_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move a topic to docs/"
    )


def test_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {m for m in LINK.findall(readme)}
    missing = [f"docs/{p.name}" for p in DOCS[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"docs not linked from README.md: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_links_resolve(path: Path):
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z]+://|mailto:", target):
            continue  # links out of the repository are not checked (no internet in CI)
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc_id(path)}: {broken}"


def repo_paths(path: Path) -> list[str]:
    found = []
    for span in CODE_SPAN.findall(path.read_text(encoding="utf-8")):
        for word in span.split():
            word = word.rstrip(".,:;)")
            if word.startswith(REPO_DIRS) or word in REPO_FILES:
                found.append(word)
    return found


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_file_paths_exist(path: Path):
    missing = []
    for word in repo_paths(path):
        candidate = word.split("::")[0]
        if "*" in candidate:
            if not list(ROOT.glob(candidate)):
                missing.append(word)
            continue
        # tests/test_x.name or src/qbank/x.py's names: the file part must exist
        if not (ROOT / candidate).exists() and not (ROOT / re.sub(r"(\.py)?\.\w+$", ".py", candidate)).exists():
            missing.append(word)
    assert not missing, f"{doc_id(path)} names paths that do not exist: {missing}"


def test_the_path_check_can_fail(tmp_path: Path):
    """The checks above see a dead path and a dead link (so they cannot pass on nothing)."""
    page = tmp_path / "page.md"
    page.write_text("Run `bench/no_such_bench.py` and read [it](nowhere.md).\n", encoding="utf-8")
    assert repo_paths(page) == ["bench/no_such_bench.py"]
    assert not (ROOT / "bench/no_such_bench.py").exists()
    assert LINK.findall(prose(page)) == ["nowhere.md"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_qbank_commands_exist(path: Path):
    """Every `qbank <command> --option` shown exists in the CLI (global options before the command)."""
    commands = subcommands()
    top = options(build_parser())
    scripts = console_scripts()
    wrong = []
    for line in command_lines(path):
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        program = words[0].removeprefix(".venv/bin/")
        if program != "qbank":
            if program not in scripts | DISTRIBUTIONS:
                wrong.append(f"{line}: no console script {program!r}")
            continue
        rest = [w for w in words[1:] if w != "..."]
        while rest and rest[0].startswith("-"):  # global options: --url URL, --json
            flag = rest.pop(0).split("=")[0]
            if flag not in top:
                wrong.append(f"{line}: qbank has no option {flag}")
            elif flag in ("--url", "--token") and rest:
                rest.pop(0)
        if not rest:
            continue
        command = rest[0]
        if command not in commands:
            wrong.append(f"{line}: qbank has no command {command!r}")
            continue
        known = options(commands[command])
        wrong += [
            f"{line}: qbank {command} has no option {w}"
            for w in rest[1:]
            if w.startswith("--") and w.split("=")[0] not in known
        ]
    assert not wrong, f"{doc_id(path)}: {wrong}"


def test_console_scripts_named_exist():
    scripts = console_scripts()
    named = {m for p in DOCS for m in re.findall(r"\bqbank-[a-z-]*[a-z]\b", p.read_text(encoding="utf-8"))}
    # qbank-search is the distribution, qbank-jina-compat compat/'s; the rest are console scripts or
    # k8s names (qbank-milvus, qbank-gateway, ...), checked against k8s/.
    k8s_text = " ".join(p.read_text() for p in (ROOT / "k8s").rglob("*") if p.is_file())
    unknown = sorted(n for n in named - scripts - DISTRIBUTIONS if n not in k8s_text)
    assert not unknown, f"docs name commands that are neither console scripts nor k8s objects: {unknown}"


def test_settings_named_exist():
    """Every QBANK_* setting the docs name is one the server reads (qbank.config.env_names) or one
    the client, scripts or k8s/ read by name."""
    from qbank.config import env_names

    code = " ".join(
        p.read_text(encoding="utf-8")
        for folder in ("src", "scripts", "k8s", "bench", "executors", "compat")
        for p in (ROOT / folder).rglob("*")
        if p.is_file()
        and ".egg-info" not in str(p)  # a local build's PKG-INFO holds old README text
        and p.suffix in {".py", ".sh", ".yaml", ".yml", ".js", ".html", ".Dockerfile", ""}
    ) + (ROOT / "flow.yml").read_text(encoding="utf-8")
    known = env_names() | set(SETTING.findall(code))
    named = {m for p in DOCS for m in SETTING.findall(p.read_text(encoding="utf-8"))}
    assert not named - known, f"docs name settings the code never reads: {sorted(named - known)}"


MODULE_NAME = re.compile(r"^(qbank|qbank_client|qbank_devtools)(\.\w+)+$")


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_module_names_exist(path: Path):
    """Every backticked `qbank.x.y` (module, or module.attribute) can be imported."""
    missing = []
    for span in CODE_SPAN.findall(path.read_text(encoding="utf-8")):
        if not MODULE_NAME.match(span):
            continue
        parts = span.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for name in parts[cut:]:
                    found = getattr(found, name)
            except AttributeError:
                missing.append(span)
            break
        else:
            missing.append(span)
    assert not missing, f"{doc_id(path)} names modules or functions that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_python_examples_compile(path: Path):
    """The Python examples are Python (a renamed keyword or a broken paste fails here)."""
    for number, block in enumerate(re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)):
        compile(block, f"{doc_id(path)} example {number + 1}", "exec")


def documented_default(cell: str) -> object:
    """A default as docs/configuration.md writes it ("20 MiB", "60 s", "120,000,000", "`true`", "–"),
    as the settings hold it; prose (a default computed at run time) comes back as the text."""
    value = cell.strip().strip("`").strip()
    if value.startswith("–"):
        return ""
    if value in ("true", "false"):
        return value == "true"
    units = {" MiB": 1 << 20, " KiB": 1 << 10, " M": 1_000_000, " s": 1}
    for unit, factor in units.items():
        if value.endswith(unit) and re.fullmatch(r"[\d.,]+", value[: -len(unit)]):
            number = float(value[: -len(unit)].replace(",", "")) * factor
            return number if unit == " s" else int(number)
    if re.fullmatch(r"\d[\d,]*", value):
        return int(value.replace(",", ""))
    if re.fullmatch(r"\d+\.\d+", value):
        return float(value)
    return value


def test_every_setting_is_documented_with_the_default_the_settings_class_holds():
    """docs/configuration.md's table is checked against the settings classes (qbank.config), the one
    home of every default: each QBANK_* setting has a row, and the default the row gives is the
    class's. A default written as prose ("3 × QBANK_MAX_IMAGE_BYTES") is one computed at run time,
    which the class holds as empty or 0."""
    from qbank.config import EncoderSettings, GatewaySettings, IndexerSettings, OcrSettings, ServeSettings

    defaults: dict[str, set] = {}
    for settings in (EncoderSettings, OcrSettings, IndexerSettings, ServeSettings, GatewaySettings):
        for name, field in settings.__fields__.items():
            defaults.setdefault(f"QBANK_{name.upper()}", set()).add(field.default)
    documented, wrong = set(), []
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(QBANK_\w+)`", cells[0]) if line.startswith("| `QBANK_") else []
        if not names or not set(names) & set(defaults):
            continue
        values = re.split(r" / |, ", cells[1]) if len(names) > 1 else [cells[1]]
        if len(values) != len(names):  # prose for the lot: defaults computed at run time
            assert all(defaults.get(n, set()) <= {"", 0} for n in names), f"{names}: one default each: {cells[1]!r}"
            documented.update(names)
            continue
        for name, cell in zip(names, values, strict=True):
            documented.add(name)
            value, held = documented_default(cell), defaults.get(name, set())
            if value not in held and not (isinstance(value, str) and held <= {"", 0}):
                wrong.append(f"{name}: docs {cell!r}, settings {sorted(map(repr, held))}")
    assert not wrong, "docs/configuration.md gives defaults the settings classes do not hold: " + "; ".join(wrong)
    assert not set(defaults) - documented, (
        f"settings with no row in docs/configuration.md: {sorted(set(defaults) - documented)}"
    )
