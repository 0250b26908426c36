"""The README's picture of the search page, taken from the demo as a user runs it: the demo bank
imported through flow.yml with the toy CLIP (qbank_devtools.toy_clip), a text->figure search for
等腰三角形 in headless Chromium, the page saved as PNG.

    .venv/bin/python -m qbank_devtools.screenshot docs/search-page.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from qbank.quiet import quiet_known_warnings

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
QUERY = "等腰三角形"


def _wait(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def take(out: Path, models_dir: Path, questions: int = 300) -> Path:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from qbank.service.flow import running_flow
    from qbank_client import QbankClient, read_bank
    from qbank_client.importer import import_bank
    from qbank_devtools.demo import write_demo_bank
    from qbank_devtools.toy_clip import toy_clip

    model = toy_clip(models_dir / "toy-chinese-clip", progress=print)
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="qbank-screenshot-") as folder:
        bank = write_demo_bank(Path(folder) / "bank", questions)
        settings = {"model": model, "data_dir": Path(folder) / "data", "figure_roots": bank.parent}
        with running_flow(root / "flow.yml", **settings) as urls:
            import_bank(QbankClient(urls["grpc"]), read_bank(bank), batch_size=32, progress=False)
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
                options.add_argument(argument)
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            try:
                driver.get(urls["http"] + "/ui")
                driver.find_element("id", "query-text").send_keys(QUERY)
                driver.execute_script("document.getElementById('modality').value = 'image'")
                driver.execute_script("document.getElementById('limit').value = '6'")
                driver.find_element("id", "search-button").click()
                _wait(
                    lambda: driver.execute_script(
                        "const images = [...document.querySelectorAll('#results .figures img')];"
                        "return images.length >= 4 && images.every(i => i.complete && i.naturalWidth)"
                    ),
                    "the figures of the results",
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out))
            finally:
                driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qbank_devtools.screenshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/search-page.png"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="where the toy CLIP is cached")
    args = parser.parse_args(argv)
    quiet_known_warnings()
    print(take(args.out, args.models_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
