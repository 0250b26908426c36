"""Metrics an operator reads: a real Prometheus (Debian's `prometheus`, which scripts/test.sh installs)
scrapes a real Flow's four parts, and each of qbank's series moves after an import, a photo search
and a refused request; the Grafana dashboard in k8s/monitoring names only series Prometheus has."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, free_ports, running_flow
from docarray import Document, DocumentArray

from qbank.service.flow import metrics_urls
from qbank_client import QbankClient
from qbank_client.transport import ServerError
from qbank_devtools.photos import render_question

pytestmark = pytest.mark.service  # a Flow and a Prometheus server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARD = REPO / "k8s" / "monitoring" / "qbank-dashboard.json"
STEM = "已知等腰三角形的两边长分别为3和7，求这个三角形的周长。"


class Prometheus:
    """A Prometheus server on a free loopback port scraping ``targets`` every second, its data in ``folder``."""

    def __init__(self, folder: Path, targets: dict[str, str]):
        self.port = free_ports(1)[0]
        jobs = [
            {
                "job_name": part,
                "scrape_interval": "1s",
                "metrics_path": urllib.parse.urlparse(url).path,
                "static_configs": [{"targets": [urllib.parse.urlparse(url).netloc]}],
            }
            for part, url in targets.items()
        ]
        config = folder / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))  # JSON is YAML
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def api(self, path: str, **params: str) -> object:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]

    def value(self, query: str) -> float:
        """The query's value now (0 when it has no series yet)."""
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    def wait(self, check, what: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except OSError:  # not listening yet
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def dashboard_series() -> set[str]:
    """Every series name the dashboard's queries read."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\b((?:qbank|jina)_[a-z_]+)\b", expr)}


def photo() -> bytes:
    buffer = io.BytesIO()
    render_question(STEM).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_real_prometheus_scrapes_every_part_and_finds_each_series_moving(tiny_model, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is missing: scripts/test.sh installs Debian's prometheus package")
    with running_flow(model=tiny_model, data_dir=tmp_path / "data", max_docs_per_request=8) as urls:
        targets = metrics_urls()
        prometheus = Prometheus(tmp_path, targets)
        try:
            prometheus.wait(lambda: prometheus.value("sum(up)") == len(targets), "every part scraped")
            moving = {
                "items stored": "sum(qbank_items_stored)",
                "items written": 'sum(qbank_items_written_total{operation="upsert"})',
                "items embedded": "sum(qbank_embedded_items_total)",
                "jina requests at the indexer": 'sum(jina_process_request_seconds_count{executor_endpoint="/index"})',
                "photo searches": 'sum(qbank_searches_total{query="photo"})',
                "search seconds": "sum(qbank_search_seconds_count)",
                "ocr seconds": "sum(qbank_ocr_seconds_count)",
                "photos read with text": 'sum(qbank_ocr_photos_total{found="text"})',
                "size refusals": 'sum(qbank_refusals_total{reason="size"})',
                "milvus connects": "sum(qbank_milvus_connects)",
            }
            prometheus.wait(lambda: prometheus.value("count(qbank_refusals_total)") >= 4 * 5, "qbank's series")
            before = {name: prometheus.value(query) for name, query in moving.items()}
            client = QbankClient(urls["grpc"])
            client.index(
                DocumentArray(
                    Document(id=f"q{n}:text:0", text=text, tags={"question_id": f"q{n}"})
                    for n, text in enumerate([STEM, "解方程 x^2-5x+6=0", "求圆的面积，半径为2"])
                )
            )
            found = client.photo_search(photo(), 3)
            assert found["questions"][0].question_id == "q0", found
            with pytest.raises(ServerError, match="QBANK_MAX_DOCS_PER_REQUEST"):
                client.post("/search", DocumentArray(Document(text=f"问题{n}") for n in range(9)))
            client.close()
            for name, query in moving.items():
                if name == "milvus connects":
                    continue  # made at start: it is there, and moves on a reconnect (test_process.py kills Lite)
                prometheus.wait(lambda q=query, n=name: prometheus.value(q) > before[n], f"{name} to move ({query})")
            assert prometheus.value(moving["items stored"]) == 3
            assert prometheus.value(moving["milvus connects"]) >= 1
            names = set(prometheus.api("label/__name__/values"))
            missing = dashboard_series() - names
            assert not missing, f"the dashboard reads series no part serves: {sorted(missing)}"
        finally:
            prometheus.stop()
