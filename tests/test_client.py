"""The client (API + CLI) end to end through a real Flow: import, resume after kill -9, lookups."""

from __future__ import annotations

import contextlib
import csv
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import png_bytes, running_flow

from qbank_client import BadRow, QbankClient, read_bank
from qbank_client.cli import main as cli
from qbank_client.importer import import_bank
from qbank_devtools.demo import demo_bank

BAD_LINES = [
    "{not json",
    json.dumps({"stem": "没有编号的题"}),
    json.dumps({"id": "q-bad-figure", "stem": "图丢了", "figures": ["figs/missing.png"]}),
    json.dumps({"id": "q-bad-subject", "stem": "学科不对", "subject": {"name": "数学"}}),
    json.dumps({"id": "q-empty"}),
]


def write_bank(folder: Path, n: int, bad: bool = True) -> Path:
    """A JSONL bank with figure files beside it; bad lines are planted at known line numbers."""
    (folder / "figs").mkdir(parents=True, exist_ok=True)
    lines = []
    for number, q in enumerate(demo_bank(n)):
        # random-pixel figures: the tiny model tells them apart (drawn ones shrink to near-ties at 32x32)
        (folder / "figs" / f"{q['id']}.png").write_bytes(png_bytes(1000 + number))
        record = {
            "id": q["id"],
            "stem": q["stem"],
            "figures": [f"figs/{q['id']}.png"],
            "subject": q["subject"],
            "grade": q["grade"],
            "type": q["type"],
        }
        record.update(knowledge_points=["几何"], difficulty=3)
        lines.append(json.dumps(record, ensure_ascii=False))
    if bad:
        for offset, line in enumerate(BAD_LINES):
            lines.insert(3 + offset * 4, line)
    path = folder / "bank.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "figs" / "broken.bin").write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def flow(tiny_model, tmp_path_factory):
    with running_flow(model=tiny_model, data_dir=tmp_path_factory.mktemp("client-data")) as urls:
        yield urls


@pytest.fixture(scope="module")
def imported(flow, tmp_path_factory):
    """A bank of 24 questions (48 items) + 5 bad rows, imported once over gRPC."""
    path = write_bank(tmp_path_factory.mktemp("bank"), 24)
    summary = import_bank(QbankClient(flow["grpc"]), read_bank(path), batch_size=5, concurrency=2, progress=False)
    return path, summary


def test_reading_reports_bad_rows_with_line_numbers(tmp_path):
    path = write_bank(tmp_path, 20)
    rows = list(read_bank(path))
    bad = {int(b.source.rsplit(":", 1)[1]): b.reason for b in rows if isinstance(b, BadRow)}
    assert len(rows) == 25 and sorted(bad) == [4, 8, 16, 20]  # line 12's missing figure shows at import
    assert "not valid JSON" in bad[4] and "'id'" in bad[8] and "'subject'" in bad[16]
    assert "neither a stem nor figures" in bad[20]
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.jsonl").write_text(json.dumps({"id": "x-1", "stem": "附加题"}) + "\n", encoding="utf-8")
    from_folder = list(read_bank(tmp_path))  # a folder: every *.jsonl under it, in path order
    assert len(from_folder) == 26 and from_folder[0].source.startswith(str(path))
    assert from_folder[-1].id == "x-1" and from_folder[-1].item_ids() == ["x-1:text:0"]
    (tmp_path / "bad.jsonl").write_bytes(b'{"id": "x", "stem": "\xff\xfe"}\n')
    assert "not valid UTF-8" in next(iter(read_bank(tmp_path / "bad.jsonl"))).reason
    ids = tmp_path / "ids.jsonl"  # the server's id rule, told by file:line before anything is sent
    ids.write_text(
        "".join(json.dumps({"id": i, "stem": "题"}) + "\n" for i in ("a'b", "F\\", "t\tab")), encoding="utf-8"
    )
    quote, backslash, tab = list(read_bank(ids))
    assert isinstance(quote, BadRow) and quote.source.endswith(":1") and "single quote" in quote.reason
    assert backslash.id == "F\\" and isinstance(tab, BadRow) and "control character" in tab.reason


@pytest.mark.service
def test_import_counts_and_skips_bad_rows(flow, imported):
    _, summary = imported
    assert (summary.questions, summary.imported, summary.items_sent, summary.items_skipped) == (24, 24, 48, 0)
    assert len(summary.bad_rows) == 5 and any("missing.png" in b for b in summary.bad_rows)
    client = QbankClient(flow["grpc"])
    assert client.count() == 48
    assert client.stats()["text_items"] == 24 and client.stats()["image_items"] == 24


@pytest.mark.service
def test_reimport_skips_what_is_stored_without_reencoding(flow, imported):
    path, _ = imported
    again = import_bank(QbankClient(flow["http"]), read_bank(path), batch_size=7, progress=False)
    assert (again.imported, again.items_sent, again.items_skipped) == (24, 0, 48)
    assert QbankClient(flow["grpc"]).count() == 48


@pytest.mark.service
def test_lookups_group_per_question_and_find_the_planted_item(flow, imported):
    path, _ = imported
    client = QbankClient(flow["grpc"])
    bank = [r for r in read_bank(path) if not isinstance(r, BadRow)]
    stems = [q.stem for q in bank]
    planted = next(q for q in bank if stems.count(q.stem) == 1)  # the demo bank has duplicate stems on purpose
    similar = client.similar_questions(planted.stem, limit=5)
    assert similar[0].question_id == planted.id and similar[0].score == pytest.approx(1.0, abs=1e-4)
    assert len({h.question_id for h in similar}) == len(similar)  # one hit per question
    figure = Path(planted.figures[0]).read_bytes()
    found = client.image_to_text(figure, limit=3)
    assert found["figures"][0].question_id == planted.id and found["figures"][0].modality == "image"
    assert all(h.modality == "text" for h in found["stems"]) and found["stems"]
    assert client.image_to_text(planted.figures[0], limit=1)["figures"][0].question_id == planted.id  # by path
    pictures = client.text_to_image("等腰三角形", limit=4, subject=planted.tags["subject"])
    assert pictures and all(h.modality == "image" and h.subject == planted.tags["subject"] for h in pictures)
    assert client.similar_questions(planted.stem, limit=3, subject="不存在") == []


@pytest.mark.service
def test_cli_json_output_and_exit_codes(flow, imported, tmp_path, capsys):
    path, _ = imported
    url = ["--url", flow["grpc"], "--json"]
    assert cli([*url, "similar", "已知三角形", "--limit", "3"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert 1 <= len(hits) <= 3 and {"question_id", "score", "best_item", "items"} <= set(hits[0])
    assert cli([*url, "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 48
    assert cli([*url, "import", str(path), "--strict"]) == 1  # bad rows + --strict: nothing sent
    assert "--strict" in capsys.readouterr().err
    assert cli([*url, "import", str(tmp_path / "nope.jsonl")]) == 2
    assert cli(["--url", "ftp://x", "stats"]) == 2
    assert cli([*url, "image2text", str(tmp_path / "nope.png")]) == 2
    assert cli([*url, "similar", "题", "--subject", "数学", "--limit", "0"]) == 2
    capsys.readouterr()
    assert cli(["--url", flow["websocket"], "text2image", "圆"]) == 0
    assert "questions whose figures match" in capsys.readouterr().out


@pytest.mark.service
def test_import_killed_with_sigkill_at_random_points_resumes_exactly(tiny_model, tmp_path):
    """A real `qbank import` process is killed three times at random points and run again each time:
    exact counts, no duplicates, nothing missing."""
    import random

    path = write_bank(tmp_path / "bank", 60, bad=False)
    all_ids = {item for q in read_bank(path) for item in q.item_ids()}
    kill_points = sorted(random.Random(20261122).sample(range(8, 112), 3))
    with running_flow(model=tiny_model, data_dir=tmp_path / "data") as urls:
        client = QbankClient(urls["grpc"])
        command = [sys.executable, "-m", "qbank_client.cli", "--url", urls["grpc"], "import", str(path)]
        command += ["--batch-size", "1", "--concurrency", "1"]
        stored = 0
        for kill_at in kill_points:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while client.count() < kill_at and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait()
            now = client.count()
            assert stored <= now < 120, f"kill at {kill_at}: {now} items stored (before: {stored})"
            stored = now
        resumed = import_bank(client, read_bank(path), batch_size=8, progress=False)
        assert resumed.items_skipped >= stored - 2  # an item in flight at the kill may be re-sent (upsert)
        assert resumed.items_sent + resumed.items_skipped == 120
        assert client.count() == 120 and client.count(modality="image") == 60
        assert client.existing(sorted(all_ids)) == all_ids


@pytest.mark.service
def test_similar_modes_and_near_duplicate_export(flow, imported, tmp_path, capsys):
    from qbank.domain.duplicates import text_similarity

    path, _ = imported
    client = QbankClient(flow["grpc"])
    bank = [r for r in read_bank(path) if not isinstance(r, BadRow)]
    stems = [q.stem for q in bank]
    planted = next(q for q in bank if stems.count(q.stem) == 1)
    for mode in ("bm25", "hybrid"):
        assert client.similar_questions(planted.stem, limit=3, mode=mode)[0].question_id == planted.id
    weighted = client.similar_questions(planted.stem, limit=3, mode="hybrid", weights=(0.5, 0.5))
    assert weighted[0].question_id == planted.id and 0.5 < weighted[0].score <= 1.0
    url = ["--url", flow["grpc"]]
    assert cli([*url, "--json", "similar", planted.stem, "--mode", "bm25", "--limit", "2"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["question_id"] == planted.id
    assert cli([*url, "similar", planted.stem, "--mode", "hybrid", "--weights", "x,y"]) == 2
    assert "--weights" in capsys.readouterr().err

    # Near-duplicates at 0.99: exactly the stems that are the same up to punctuation, grouped.
    out = tmp_path / "dups.csv"
    assert cli([*url, "dups", "--threshold", "0.99", "--neighbours", "20", "--format", "csv", "--out", str(out)]) == 0
    assert "groups of near-duplicates" in capsys.readouterr().err
    with out.open(encoding="utf-8") as file:
        exported = list(csv.DictReader(file))
    got: dict[str, set[str]] = {}
    for row in exported:
        got.setdefault(row["group"], set()).add(row["question_id"])
    expected: dict[str, set[str]] = {}
    for q in bank:
        twins = {o.id for o in bank if o.id != q.id and text_similarity(q.stem, o.stem) >= 0.99}
        if twins:
            expected.setdefault(frozenset({q.id, *twins}), set()).update({q.id, *twins})
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, expected.values()))
    assert expected  # the demo bank repeats stems on purpose, so there is something to find
    assert cli([*url, "--json", "dups", "--by", "dense", "--threshold", "0.9999", "--subject", "不存在"]) == 0
    assert json.loads(capsys.readouterr().out)["groups"] == []


def _connections_to(port: int) -> int:
    """ESTABLISHED TCP connections from this process to a loopback port (Linux /proc)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
            count += remote_port == port and state == "01" and inode in inodes
    return count


@pytest.mark.service
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts connections through Linux /proc")
def test_grpc_client_keeps_one_connection_and_fails_fast_when_the_gateway_is_down(flow, imported):
    from qbank.service.flow import free_ports
    from qbank_client import ServerError

    port = int(flow["grpc"].rsplit(":", 1)[1])
    with QbankClient(flow["grpc"]) as client:
        counts = {client.count() for _ in range(10)}
        hits = [client.similar_questions("三角形", limit=3) for _ in range(5)]
        assert counts == {48} and all(len(h) == 3 for h in hits)
        assert _connections_to(port) == 1  # fifteen requests, one kept connection
    time.sleep(0.5)
    assert _connections_to(port) == 0  # closed with the client

    down = f"grpc://127.0.0.1:{free_ports(1)[0]}"
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"^/count at grpc://127\.0\.0\.1:\d+: UNAVAILABLE"):
        QbankClient(down).count()
    assert time.monotonic() - started < 10


@pytest.mark.service
def test_the_client_imports_neither_pymilvus_nor_torch():
    """qbank_client talks to the gateway only: it must be installable beside neither."""
    import subprocess
    import sys

    probe = "import sys, qbank_client, qbank_client.cli, qbank_client.importer; print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    for module in ("pymilvus", "torch", "milvus_lite", "qbank.store", "qbank.domain.duplicates"):
        assert f"'{module}'" not in loaded, f"the client imports {module}"


def near_copies(seed: int, n: int) -> list[bytes]:
    """``n`` copies of one picture, each with one pixel changed: a question's figure variants."""
    import io

    from PIL import Image

    base = Image.open(io.BytesIO(png_bytes(seed))).convert("RGB")
    copies = []
    for k in range(n):
        image = base.copy()
        image.putpixel((k % image.width, 0), (k * 5 % 256, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        copies.append(buffer.getvalue())
    return copies


@pytest.mark.service
def test_ten_questions_means_ten_even_when_one_question_has_most_of_the_nearest_items(flow):
    """The server groups per question (group_by): a question with 40 near-identical figures cannot
    crowd the others out, as it did when the client fetched 4 items per wanted question and grouped
    them itself."""
    from docarray import Document, DocumentArray

    from qbank_client.api import question_hits

    crowded = near_copies(900, 40)
    docs = DocumentArray(
        Document(id=f"crowded:image:{k}", blob=blob, tags={"question_id": "crowded", "subject": "美术"})
        for k, blob in enumerate(crowded)
    )
    docs.extend(
        Document(id=f"lone-{n}:image:0", blob=png_bytes(990 + n), tags={"question_id": f"lone-{n}", "subject": "美术"})
        for n in range(5)
    )
    client = QbankClient(flow["grpc"])
    client.post("/index", docs)
    found = client.image_to_text(crowded[0], limit=3, subject="美术")["figures"]
    assert [h.question_id for h in found][:1] == ["crowded"] and len({h.question_id for h in found}) == 3
    # What 4 items per wanted question, grouped afterwards, gave on the same data: one question.
    query = DocumentArray([Document(blob=crowded[0])])
    matches = client.post("/search", query, {"limit": 12, "modality": "image", "filter": {"subject": "美术"}})[0][
        0
    ].matches
    assert [h.question_id for h in question_hits(matches, 3)] == ["crowded"]


class Trickle(http.server.BaseHTTPRequestHandler):
    """Sends a PNG's header, then one byte a second (a per-read timeout never fires)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            for _ in range(300):
                self.wfile.write(b"\x89")
                self.wfile.flush()
                time.sleep(1)
        except OSError:  # the client gave up: what the test wants
            pass


@pytest.mark.service
def test_import_names_and_skips_hostile_figures_within_seconds_and_imports_the_rest(flow, tmp_path):
    """A real `qbank import` with figures that are /dev/zero, a FIFO, a 2 GB sparse file and a URL
    that trickles a byte a second, in one batch with good questions: each hostile row is named and
    skipped (the URL within its 10 s deadline), the good rows of the same batch are imported, and the
    client stays small (/dev/zero once grew it to 3 GB; the FIFO and the URL hung it past 60 s)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "figs").mkdir()
    os.mkfifo(tmp_path / "figs" / "fifo.png")
    with (tmp_path / "figs" / "sparse.png").open("wb") as sparse:
        sparse.truncate(2 * 1024**3)
    hostile = {
        "hostile-zero": "/dev/zero",
        "hostile-fifo": "figs/fifo.png",
        "hostile-sparse": "figs/sparse.png",
        "hostile-trickle": f"http://127.0.0.1:{server.server_port}/slow.png",
    }
    lines = []
    for n in range(6):
        (tmp_path / "figs" / f"good-{n}.png").write_bytes(png_bytes(7000 + n))
        lines.append({"id": f"good-{n}", "stem": f"第{n}题：求图中阴影部分的面积", "figures": [f"figs/good-{n}.png"]})
        if n < len(hostile):
            qid, figure = list(hostile.items())[n]
            lines.append({"id": qid, "stem": "有问题的图", "figures": [figure]})
    bank = tmp_path / "bank.jsonl"
    bank.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    command = [sys.executable, "-m", "qbank_client.cli", "--url", flow["grpc"], "--json", "import", str(bank)]
    started = time.monotonic()
    process = subprocess.Popen(
        [*command, "--batch-size", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak_rss = 0
    while process.poll() is None and time.monotonic() - started < 120:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{process.pid}/status").read_text()
            if "VmRSS:" in status:  # a process that has just exited (a zombie) has no VmRSS line
                peak_rss = max(peak_rss, int(status.split("VmRSS:")[1].split()[0]) * 1024)
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    if process.poll() is None:
        process.kill()
    out, err = process.communicate()
    server.shutdown()
    # the trickling URL's 10 s deadline, plus the client's start and the good rows' import on a loaded
    # machine; before, the import hung for as long as the server kept trickling (here 300 s)
    assert elapsed < 60, f"import took {elapsed:.0f} s: {err[-2000:]}"
    summary = json.loads(out)
    assert summary["imported"] == 6 and summary["questions"] == 6, summary
    bad = "\n".join(summary["bad_rows"])
    assert "bank.jsonl:2:" in bad and "/dev/zero" in bad and "not a regular file" in bad
    assert "fifo.png" in bad and "sparse.png" in bad and "over the limit of 20971520" in bad
    assert "slow.png" in bad and "timed out" in bad
    assert peak_rss < 1024**3, f"the client grew to {peak_rss / 1024**2:.0f} MB"
    client = QbankClient(flow["grpc"])
    good = {f"good-{n}:{kind}:0" for n in range(6) for kind in ("text", "image")}
    assert client.existing(sorted(good)) == good
    assert not client.existing([f"{qid}:text:0" for qid in hostile])


@pytest.mark.service
def test_empty_results_say_why_and_fused_scores_say_what_they_are(tiny_model, tmp_path, capsys):
    """A bank of stems only: a figure search says the bank has no figure items, a filter nothing has
    says so, and a hybrid search's score column is labelled rrf with what that is (every score was a
    bare 0.016 before)."""
    from docarray import Document, DocumentArray

    with running_flow(model=tiny_model, data_dir=tmp_path / "data") as urls:
        QbankClient(urls["grpc"]).index(
            DocumentArray(
                Document(id=f"q{n}:text:0", text=stem, tags={"question_id": f"q{n}", "subject": "数学"})
                for n, stem in enumerate(["已知三角形的三边长为3、4、5，求面积", "解方程 x^2-5x+6=0"])
            )
        )
        assert cli(["--url", urls["grpc"], "text2image", "三角形"]) == 0
        assert "the bank has no figure items" in capsys.readouterr().out
        assert cli(["--url", urls["grpc"], "similar", "三角形", "--subject", "物理"]) == 0
        assert "no item of the bank has {'subject': '物理'}" in capsys.readouterr().out
        assert cli(["--url", urls["grpc"], "similar", "三角形的面积", "--mode", "hybrid"]) == 0
        shown = capsys.readouterr().out
        header = shown.splitlines()[1]
        assert "rrf" in header and "score" not in header, shown
        assert "rrf: reciprocal rank fusion" in shown and "not a similarity" in shown, shown
        assert cli(["--url", urls["grpc"], "similar", "三角形的面积", "--mode", "bm25"]) == 0
        assert "coverage" in capsys.readouterr().out.splitlines()[1]
