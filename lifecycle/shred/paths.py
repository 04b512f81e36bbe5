"""The paths of a shred job: how they are checked before a job is written, and stored.

Apart from ``jobs`` (SQLAlchemy, the settings) so that `lifecycle shred PATH...` the short way
(``lifecycle.cli.shred_plan``) checks and stores paths by the same rules without loading them.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence

from lifecycle.core.errors import UserError
from lifecycle.shred.shredder import Refused, ResolvedRoots, check_path, locate

# A path is bytes; one that is not UTF-8 is stored as this prefix + its base64. Stored paths
# are otherwise absolute, so nothing else starts like this.
BYTES_PREFIX = "b64:"


def db_path(path: str) -> str:
    """The text stored for a path; any byte string round-trips through :func:`fs_path`."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return BYTES_PREFIX + base64.b64encode(raw).decode("ascii")


def fs_path(stored: str) -> str:
    """The path (a ``str`` carrying its exact bytes, as ``os.fsdecode`` gives) of stored text."""
    if stored.startswith(BYTES_PREFIX):
        try:
            return os.fsdecode(base64.b64decode(stored[len(BYTES_PREFIX) :], validate=True))
        except binascii.Error:
            return stored  # not ours: the shredder refuses it as a relative path
    return stored


def check_paths(
    paths: Sequence[str | bytes], roots: ResolvedRoots, *, strict: bool, recursive: bool
) -> list[str]:
    """The distinct paths, in order, once each is under ``roots``; with ``strict`` each file
    is checked too (exists, no symlink, no other hard link, ...). A one-line
    :class:`UserError` naming the path's position (never the path) otherwise."""
    if isinstance(paths, str | bytes) or not paths:
        raise UserError("give at least one path (a list of absolute paths)")
    seen: dict[str, None] = {}
    for i, p in enumerate(paths, start=1):
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if not isinstance(p, str):
            raise UserError(f"path {i} is not a string")
        try:
            locate(p, roots)
        except Refused as r:
            raise UserError(f"path {i}: {r}") from None
        if strict:
            bad = check_path(p, roots, recursive=recursive)
            if bad is not None and bad.status == "missing":
                raise UserError(f"path {i}: no such file or directory")
            if bad is not None:
                raise UserError(f"path {i}: {bad.message}")
        seen.setdefault(p)
    return list(seen)


def absolute(paths: Sequence[str]) -> list[str]:
    """The command line's paths made absolute (against the working directory); refuses an
    empty path and ``..`` before anything is looked up."""
    out = []
    for i, p in enumerate(paths, start=1):
        if not p or "\x00" in p:
            raise UserError(f"path {i} is empty")
        if ".." in p.split("/"):
            raise UserError(f"path {i}: the path contains '..'")
        out.append(p if os.path.isabs(p) else os.path.join(os.getcwd(), p))
    return out
