"""The search page: plain HTML/CSS/JS served by the gateway on its HTTP port, and the route that
shows stored figures.

Same origin as the service (no CORS, no second server, no build step): the page calls the
gateway's own ``POST /post`` like any HTTP client, with the token the user typed (kept in the tab's
sessionStorage, sent as ``Authorization``). The page's three files are open (they hold no data);
everything they fetch goes through the token check.

Figures. A stored figure is what the importer read: a local path or an http(s) URL (``tags.figure``).
URLs are shown as they are (the browser fetches them from the bank's own host, no referrer). Paths
are served by ``GET /ui/figure?ref=<path>`` only when the file's real path (links resolved) lies
under one of ``QBANK_FIGURE_ROOTS``, is at most ``QBANK_MAX_FIGURE_BYTES``, and its bytes are a
PNG, JPEG, GIF, WebP or BMP (SVG is refused: it can carry script). No roots set: no file is served.
So the route reads nothing the operator did not name, ``..`` and links cannot leave a root, and the
response is typed from the bytes with ``nosniff`` and a CSP that runs nothing. Thumbnails made at
import were the other choice: a second copy of every figure to keep in step with the bank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qbank.media.fetch import FetchError, read_regular_file

ASSETS = Path(__file__).resolve().parent / "page_assets"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".woff2": "font/woff2",
}


def page_files() -> dict[str, tuple[str, str]]:
    """route -> (file under page_assets, media type): the page, its script and style, and KaTeX
    (page_assets/katex: npm's katex 0.19.1, its script, style, auto-render and woff2 fonts)."""
    files = {"/ui": ("index.html", MEDIA_TYPES[".html"])}
    for path in sorted(ASSETS.rglob("*")):
        if path.is_file() and path.suffix in MEDIA_TYPES and path.name != "index.html":
            relative = path.relative_to(ASSETS).as_posix()
            files[f"/ui/{relative}"] = (relative, MEDIA_TYPES[path.suffix])
    return files


PAGE_FILES = page_files()
FIGURE_ROUTE = "/ui/figure"
# The page runs its own script only (and KaTeX's, served from here), talks to its own origin, loads
# KaTeX's fonts from here, and shows images from here, from blob: URLs it made of figure bytes, and
# from the bank's http(s) figure URLs. KaTeX sets its styles through the DOM, not inline markup.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; font-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data: https: http:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
IMAGE_SIGNATURES = (  # leading bytes -> media type; anything else is not served
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


class FigureRefused(Exception):
    """The figure route will not send this file; ``status`` and the message say why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def image_type(head: bytes) -> str | None:
    """The media type of an image file by its first bytes, or None when it is none we serve."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in IMAGE_SIGNATURES if head.startswith(signature)), None)


def figure_file(ref: str, roots: list[Path], max_bytes: int) -> tuple[bytes, str]:
    """The bytes and media type of the stored figure ``ref`` (an absolute path), when it may be shown.
    The file is opened once and checked from the opened descriptor (:func:`read_regular_file`): a
    path checked then opened again was served from outside the roots when swapped for a link in
    between, and a FIFO there blocked the read."""
    if not roots:
        raise FigureRefused(404, "figure files are not served: no QBANK_FIGURE_ROOTS set on the gateway")
    if not ref or "\x00" in ref or len(ref) > 4096:
        raise FigureRefused(400, "parameter 'ref' must be a path of at most 4096 characters")
    if ref.startswith("file://"):
        ref = ref[len("file://") :]
    if not Path(ref).is_absolute():
        raise FigureRefused(400, f"parameter 'ref' must be an absolute path, got {ref[:200]!r}")
    try:
        data = read_regular_file(ref, max_bytes, tuple(roots), "QBANK_MAX_FIGURE_BYTES")
    except FetchError as exc:
        message = str(exc).replace("the allowed folders", "the figure folders (QBANK_FIGURE_ROOTS)")
        raise FigureRefused(exc.status, message) from None
    kind = image_type(data[:16])
    if kind is None:
        raise FigureRefused(415, f"{ref[:200]!r} is not a PNG, JPEG, GIF, WebP or BMP image")
    return data, kind


def add_page_routes(app: Any, roots: list[Path], max_figure_bytes: int) -> None:
    """The page's files and the figure route, on jina's FastAPI app of the HTTP gateway."""
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    def page_file(route: str):
        name, media_type = PAGE_FILES[route]
        content = (ASSETS / name).read_bytes()  # read once here: no file I/O on the event loop

        async def serve():  # no annotations: FastAPI reads them as response models
            headers = {**SAFE_HEADERS, "Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
            return Response(content, media_type=media_type, headers=headers)

        return serve

    for route in PAGE_FILES:
        app.add_api_route(route, page_file(route), methods=["GET"], include_in_schema=False)

    async def figure(ref: str = ""):
        try:
            # in a worker thread: the loop serves all three protocols, so a slow disk stalls none of them
            data, kind = await run_in_threadpool(figure_file, ref, roots, max_figure_bytes)
        except FigureRefused as refused:
            return JSONResponse({"detail": str(refused)}, status_code=refused.status, headers=SAFE_HEADERS)
        headers = {
            **SAFE_HEADERS,
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "private, max-age=300",
        }
        return Response(data, media_type=kind, headers=headers)

    app.add_api_route(FIGURE_ROUTE, figure, methods=["GET"], include_in_schema=False)
