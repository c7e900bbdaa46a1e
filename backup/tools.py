"""Finding pg_dump and pg_restore of a version that can talk to the server."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from journal.errors import BadInput


def find_tool(name: str, server_version_num: int | None = None) -> str:
    """REWIND_PG_BINDIR if set (and only there); else the Debian directory of the server's major
    version or a newer one; else PATH."""
    bindir = os.environ.get("REWIND_PG_BINDIR")
    if bindir:
        path = Path(bindir) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise BadInput(f"{name} not found in REWIND_PG_BINDIR={bindir}: install the PostgreSQL client programs")
    candidates = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        m = re.fullmatch(r"\d+", d.parent.name)
        if m and (d / name).is_file():
            candidates.append((int(d.parent.name), d / name))
    if server_version_num is not None:
        major = server_version_num // 10000
        usable = sorted((v, p) for v, p in candidates if v >= major)
        if usable:
            return str(usable[0][1])
    found = shutil.which(name)
    if found:
        return found
    if candidates:
        return str(max(candidates)[1])
    raise BadInput(f"{name} not found on PATH: install the PostgreSQL client programs or set REWIND_PG_BINDIR")
