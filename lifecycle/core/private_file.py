"""Cache files that only this OS user may have written, read and replaced whole.

The parsed data map (unpickled) and the submit plan (its statements are run) are both trusted
as code, so a file another user owns or could write is treated as absent, a symlink is not
followed, and a new version replaces the old one atomically (never a half-written file).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def read_own(path: Path) -> bytes | None:
    """The file's bytes, or None if it is missing, a symlink, not ours or writable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return None
            return f.read()
    except OSError:
        return None


def read_own_json(path: Path, fmt: int) -> dict[str, Any] | None:
    """The JSON object in the file when ``read_own`` trusts it and its ``format`` is ``fmt``;
    None otherwise (a plan of another layout is as good as absent: it is made again)."""
    data = read_own(path)
    if data is None:
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == fmt else None


def write_own(path: Path, data: bytes, prefix: str) -> None:
    """Replace ``path`` atomically with ``data``, readable by this user only (0600)."""
    import tempfile  # only writers need it; the submit's short way only reads

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp creates it 0600
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
