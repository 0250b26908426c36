"""The jina client patch (qbank_jina_compat) and the editable install it now allows.

The first test fails the day jina fixes the bug upstream: then the patch can be dropped.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

PROBE_DIRECT_DOCS = (
    "from docarray import Document, DocumentArray\n"
    "from jina.types.request.data import DataRequest\n"
    "request = DataRequest()\n"
    "request.direct_docs = DocumentArray([Document(text='x')])\n"
    "print(len(request.data.docs))\n"
)


def python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter of this environment, outside the repository."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env={**os.environ, **env}
    )
    return result.stdout.strip()


def test_jina_still_has_the_bug_the_patch_fixes():
    """jina 3.34's HTTP client keeps response docs in ``direct_docs``; ``data.docs`` (what clip_client
    reads) ignores them. If this fails, jina fixed it: remove patch_data_request."""
    assert python(PROBE_DIRECT_DOCS, QBANK_NO_JINA_PATCH="1") == "0"


def test_the_patch_is_active_in_every_process_of_the_environment():
    assert python(PROBE_DIRECT_DOCS) == "1"
    assert python(
        "from jina.clients.base.websocket import WebSocketBaseClient as C; print(C._qbank_compat_patched)"
    ) == ("True")


def test_processes_run_the_tree_being_edited():
    """The editable install resolves qbank and qbank_client to this checkout, and the .pth no longer
    imports qbank at interpreter start (which pinned every process to the installed copy)."""
    assert python("import sys; print('qbank' in sys.modules)") == "False"
    packages = ["qbank", "qbank_client", "qbank_devtools", "qbank_jina_compat"]
    where = python(f"import {', '.join(packages)}; " + "; ".join(f"print({p}.__file__)" for p in packages))
    assert where.splitlines() == [
        str(REPO / "src" / "qbank" / "__init__.py"),
        str(REPO / "src" / "qbank_client" / "__init__.py"),
        str(REPO / "src" / "qbank_devtools" / "__init__.py"),
        str(REPO / "compat" / "qbank_jina_compat.py"),
    ]


@pytest.mark.service
def test_a_clip_client_environment_gets_the_fix_from_the_compat_wheel(tmp_path):
    """What a clip-client user does: install compat/ (built here as pip builds it), nothing of
    qbank-search. Simulated without a new virtualenv: an interpreter started without site (so none
    of this environment's .pth files run, the qbank ones included) that sees its packages, then the
    wheel's install folder as a site dir, where the .pth applies the fix."""
    import sysconfig
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
        + [str(REPO / "compat")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "dist").glob("qbank_jina_compat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"qbank_jina_compat.py", "qbank_jina_compat.pth"} <= set(names)
    assert not [n for n in names if n.startswith(("qbank/", "qbank_client/"))]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: jina" in metadata and "Requires-Dist: wrapt" in metadata
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    packages = sysconfig.get_paths()["purelib"]

    def probe(with_wheel: bool) -> str:
        setup = f"import sys, site; sys.path.append({packages!r}); "
        setup += f"site.addsitedir({str(target)!r}); " if with_wheel else ""
        return subprocess.run(
            [sys.executable, "-S", "-c", setup + PROBE_DIRECT_DOCS.replace("\n", "; ").rstrip("; ")],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.strip()

    assert probe(with_wheel=False) == "0"  # clip-client alone: the HTTP bug
    assert probe(with_wheel=True) == "1"
