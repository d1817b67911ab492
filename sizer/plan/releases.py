"""Release ranges of an engine: a version as users write it ("0.6.4", "v0.10.2", "0.11.0rc1",
"0.6.4.post1", "0.9.2.dev364+gb432b7a28") and the modelled range that holds it."""

from __future__ import annotations

import re
from typing import Sequence

from sizer.errors import UsageError

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.+-]?(?:post|rc|dev)?[\w.+-]*)?$")


def version_tuple(version: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a release as users write it; None where it is not one."""
    m = _VERSION.match(version.strip()) if version else None
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def range_for(engine: str, label: str, version: str | None, ranges: Sequence, example: str):
    """The range of `ranges` (objects with `first`, a version tuple, and `last`, its text; oldest first)
    that holds `version`; None means the newest. One-line UsageErrors name the modelled span."""
    newest = ranges[-1]
    if version is None:
        return newest
    m = _VERSION.match(version.strip())
    if not m:
        raise UsageError(f"--engine {engine}=={version}: not a {label} version (like {example})")
    wanted = (int(m[1]), int(m[2]), int(m[3] or 0))
    first = ranges[0].first
    if wanted < first:
        raise UsageError(f"--engine {engine}=={version}: sizer models {label} {first[0]}.{first[1]} onwards (the "
                         "releases whose memory accounting was read from their source)")
    if wanted[:2] > newest.first[:2]:
        raise UsageError(f"--engine {engine}=={version}: newer than the newest release sizer models ({newest.last})")
    return [r for r in ranges if r.first <= wanted][-1]
