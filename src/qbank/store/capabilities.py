"""What the Milvus behind the store can do, by its version, read at every connect.

A schema Milvus accepts is not a schema Milvus honours: a collection with a BM25 function was
created without error on the Milvus 2.3.5 server (pip package ``milvus``), which has no full-text
search (../shared/README.md). So the store never relies on a feature its server's version lacks: it
leaves it out of a new collection, with one log line, and refuses requests that need it, naming the
version. The versions are Milvus' release notes': full-text search (BM25 functions, analyzers) came in
2.5; the INVERTED scalar index and grouping search (``group_by_field``) in 2.4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

FULL_TEXT_SINCE = (2, 5)
INVERTED_INDEX_SINCE = (2, 4)
GROUP_BY_SINCE = (2, 4)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a Milvus version string such as 'v2.3.5-lite' or '2.5.4', else None."""
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not found:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True)
class Capabilities:
    """The features of one Milvus, from its version (``version`` as the server reported it)."""

    version: str
    full_text: bool
    inverted_index: bool
    group_by: bool
    lite: bool = False  # Milvus Lite's engine (a file, or its server binary by URI): FLAT/IVF_FLAT/AUTOINDEX only

    @classmethod
    def of(cls, version: str) -> Capabilities:
        """Capabilities of ``version``; a version that cannot be read is taken as current (a server
        new enough to change its version string is new enough for these features)."""
        parsed = parse_version(version)
        at_least = (lambda since: parsed[:2] >= since) if parsed else (lambda since: True)
        return cls(version, at_least(FULL_TEXT_SINCE), at_least(INVERTED_INDEX_SINCE), at_least(GROUP_BY_SINCE))

    @classmethod
    def of_lite(cls) -> Capabilities:
        """Milvus Lite answers no version call (UNIMPLEMENTED): its package version says it."""
        found = cls.of(f"milvus-lite {metadata.version('milvus-lite')}")
        return cls(found.version, found.full_text, found.inverted_index, found.group_by, lite=True)

    def missing(self, feature: str, since: tuple[int, int]) -> str:
        """The sentence a refused request gets."""
        return f"{feature} needs Milvus >= {since[0]}.{since[1]}, and this Milvus is {self.version}"
