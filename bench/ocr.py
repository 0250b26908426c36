"""The reader's OCR alone, two settings side by side on the same photos: before (rapidocr's 320 px
recognition padding and the 960 px detector of the previous defaults) against after (today's
defaults), or any two settings of qbank.model.OcrEngine given as ``--before`` / ``--after``
(``engine=openvino`` is the OpenVINO engine). ``--previous`` adds rapidocr's own settings
(recognition batch of 6, arena off) as a third side. Rounds after the first show OpenVINO photos
whose shapes it has cached (0.84x on CMMLU pages against 0.92x at first sight): ``--rounds 1`` is
what new photos get. Rounds alternate and medians are taken (these cores are shared and noisy);
CPU-seconds per photo are printed beside wall time.
Accuracy: in-order similarity (qbank.domain.text.sequence_similarity) of the text read to what the
page shows (its reading form), per set.

Photos: bench/photo.py's pages (generated stems, half with a figure, its distortions in turn) and,
with ``--cmmlu``, real CMMLU questions with their options typeset by KaTeX in headless Chromium at
2x (qbank_devtools.typeset) under the same distortions.

Memory: the peak resident memory of reading one photo of N megapixels in a fresh process (the
reader's decode and OCR, resident memory sampled every 2 ms above what the loaded reader holds),
before (decoded at full size) and after (decoded at most OCR_MAX_SIDE long: a JPEG at a DCT
scale), per megapixel.

    .venv/bin/python bench/ocr.py --cmmlu ../shared/data/cmmlu
    .venv/bin/python bench/ocr.py --photos 16 --rounds 2          # a quicker run
    .venv/bin/python bench/ocr.py --before engine=onnxruntime --after engine=openvino --rounds 1
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BEFORE = "rec_min_width=320,det_side=960"  # rapidocr's recognition padding, the previous detector side
AFTER = ""  # the reader's defaults (qbank.config.OcrSettings)

MEMORY_PROBE = """
import json, os, sys, threading, time
from PIL import Image
from qbank.media.images import ImageLimits, decode_image
from qbank.model.ocr import OcrEngine
from qbank.service.reader import OCR_MAX_SIDE
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20
reader = OcrEngine()
reader.read(Image.new("RGB", (1600, 1200), "white"))  # models loaded and warmed: ru_maxrss peaks here
data = open(sys.argv[1], "rb").read()
base = peak = rss()
done = False
def sample():
    global peak
    while not done:
        peak = max(peak, rss())
        time.sleep(0.002)
watcher = threading.Thread(target=sample)
watcher.start()
limits = ImageLimits(max_bytes=1 << 30, max_pixels=10**9)
image = decode_image(data, limits, OCR_MAX_SIDE if sys.argv[2] == "after" else None)
text = reader.read(image).text
done = True
watcher.join()
print(json.dumps({"peak_mb": peak, "added_mb": peak - base, "chars": len(text)}))
"""


def photo_pages(count: int) -> list[tuple[str, bytes]]:
    """(what the page shows, JPEG photo) from bench/photo.py's bank, half with a figure."""
    sys.path.insert(0, str(Path(__file__).parent))
    from photo import bank

    from qbank_devtools.demo import draw_figure
    from qbank_devtools.photos import DISTORTIONS, photo_bytes

    stems = bank(2000)
    rng = random.Random(11)
    found = []
    for number in range(count):
        _, stem = rng.choice(stems)
        figure = draw_figure("triangle", number) if number % 2 else None
        found.append((stem, photo_bytes(stem, DISTORTIONS[number % len(DISTORTIONS)], figure=figure, seed=number)))
    return found


def typeset_pages(folder: Path, count: int) -> list[tuple[str, bytes]]:
    """(reading form, JPEG photo) of CMMLU questions typeset by KaTeX, half of them with LaTeX."""
    sys.path.insert(0, str(Path(__file__).parent))
    from realbank import has_latex, questions, typeset_photo

    from qbank.domain.reading import reading_form
    from qbank_devtools.photos import DISTORTIONS
    from qbank_devtools.typeset import Typesetter

    bank = questions(folder, None)
    rng = random.Random(5)
    latex = [q for q in bank if has_latex(q)]
    plain = [q for q in bank if not has_latex(q)]
    picked = rng.sample(latex, min(count // 2, len(latex))) + rng.sample(plain, count - min(count // 2, len(latex)))
    found = []
    with Typesetter() as typesetter:
        for number, question in enumerate(picked):
            photo = typeset_photo(typesetter, question, DISTORTIONS[number % len(DISTORTIONS)], number)
            found.append((reading_form(question.stem), photo))
    return found


def reader_settings(text: str) -> dict[str, object]:
    """``"det_side=736,engine=openvino"`` as OcrEngine keyword arguments (numbers as int)."""
    settings: dict[str, object] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = pair.partition("=")
        settings[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return settings


def speed(
    sets: dict[str, list[tuple[str, bytes]]], rounds: int, before: str, after: str, previous: bool = False
) -> None:
    from PIL import Image

    from qbank.domain.text import sequence_similarity
    from qbank.model.ocr import OcrEngine

    readers = {"before": OcrEngine(**reader_settings(before)), "after": OcrEngine(**reader_settings(after))}
    print(f"before: {before or 'the defaults'}; after: {after or 'the defaults'}")
    if previous:
        readers = {"rapidocr": OcrEngine(rec_batch=6, arena=False, rec_min_width=320), **readers}
    print(f"\n{'photos':<22}{'side':<8}{'wall p50':>10}{'CPU p50':>10}{'similarity':>12}{'min':>7}")
    for name, pages in sets.items():
        images = [Image.open(io.BytesIO(photo)).convert("RGB") for _, photo in pages]
        walls: dict[str, list[float]] = {side: [] for side in readers}
        cpus: dict[str, list[float]] = {side: [] for side in readers}
        similarity: dict[str, list[float]] = {side: [] for side in readers}
        for round_number in range(rounds):
            order = list(readers) if round_number % 2 == 0 else list(reversed(readers))
            for side in order:
                for (truth, _), image in zip(pages, images, strict=True):
                    wall, cpu = time.perf_counter(), time.process_time()
                    text = readers[side].read(image).text
                    walls[side].append(time.perf_counter() - wall)
                    cpus[side].append(time.process_time() - cpu)
                    if round_number == 0:
                        similarity[side].append(sequence_similarity(truth, text))
        for side in readers:
            print(
                f"{name:<22}{side:<8}{statistics.median(walls[side]) * 1000:>8.0f}ms{statistics.median(cpus[side]) * 1000:>8.0f}ms"
                f"{statistics.mean(similarity[side]):>12.4f}{min(similarity[side]):>7.3f}"
            )
        ratio = statistics.median(walls["after"]) / statistics.median(walls["before"])
        cpu_ratio = statistics.median(cpus["after"]) / statistics.median(cpus["before"])
        print(f"{name:<22}after/before: wall {ratio:.2f}, CPU {cpu_ratio:.2f}")


def memory(sizes: list[int], folder: Path) -> None:
    from PIL import Image

    from qbank_devtools.photos import render_question

    page = render_question("已知等腰三角形的两边长分别为3和7，求这个三角形的周长。" * 6)
    print(f"\n{'photo':<20}{'side':<8}{'peak RSS':>10}{'added':>9}{'per Mpx':>9}")
    for megapixels in sizes:
        scale = (megapixels * 1e6 / (page.width * page.height)) ** 0.5
        big = page.resize((int(page.width * scale), int(page.height * scale)), Image.BICUBIC)
        for fmt in ("JPEG", "PNG"):
            path = folder / f"photo-{megapixels}.{fmt.lower()}"
            big.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            for side in ("before", "after"):
                done = subprocess.run(
                    [sys.executable, "-c", MEMORY_PROBE, str(path), side], capture_output=True, text=True, timeout=600
                )
                if done.returncode:
                    print(f"{megapixels} Mpx {fmt}: {done.stderr[-300:]}")
                    continue
                got = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{f'{megapixels} Mpx {fmt}':<20}{side:<8}{got['peak_mb']:>8.0f}MB{got['added_mb']:>7.0f}MB"
                    f"{got['added_mb'] / megapixels:>7.1f}MB"
                )


def main() -> int:
    import os
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cmmlu", type=Path, help="the CMMLU data folder: typeset real questions too")
    parser.add_argument("--photos", type=int, default=48, help="photos per set")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (medians over all)")
    parser.add_argument("--before", default=BEFORE, help=f"OcrEngine settings, key=value,... (default {BEFORE!r})")
    parser.add_argument("--after", default=AFTER, help=f"OcrEngine settings (default {AFTER!r}: the defaults)")
    parser.add_argument("--previous", action="store_true", help="add rapidocr's own settings as a third side")
    parser.add_argument("--megapixels", default="4,12,40", help="photo sizes for the memory probe ('' for none)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sets = {"bench/photo.py pages": photo_pages(args.photos)}
    if args.cmmlu:
        sets["typeset CMMLU pages"] = typeset_pages(args.cmmlu, args.photos)
    speed(sets, args.rounds, args.before, args.after, args.previous)
    if args.megapixels:
        with tempfile.TemporaryDirectory(prefix="qbank-bench-ocr-") as folder:
            memory([int(m) for m in args.megapixels.split(",")], Path(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
