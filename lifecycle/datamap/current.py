"""The data map in force, parsed once per version of its file.

In a process, the map is kept until its file's size or modification time changes, so a
long-running worker follows an edited map instead of silently keeping the one it started with.

Across processes, the validated map is also kept on disk (``VAR_DIR/cache/``), keyed by the
SHA-256 of the file's bytes, its path, the lifecycle's version and the data-map code's own files:
a command that only submits a request (`lifecycle withdraw`, run by the website for every
withdrawal) then neither parses the YAML again nor imports the loader and its validation models,
which together were a tenth of its start-up. An edited map, or a new version of the code, is
parsed and validated in full as before, and only a map that passed is stored. The stored file is
a pickle, so it is read only when this OS user owns it and nobody else can write it (as SSH does
with its keys); anything else is a miss, never an error: the cache may be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import sys
import threading
from pathlib import Path

from lifecycle import __version__
from lifecycle.core.private_file import read_own, write_own
from lifecycle.core.settings import get_settings
from lifecycle.datamap.model import DataMap
from lifecycle.datamap.paths import MAX_DATAMAP_BYTES, map_path

_current: dict[str, tuple[tuple[int, int], DataMap]] = {}
_current_lock = threading.Lock()
_CODE = Path(__file__).parent


def current_datamap(path: str | Path | None = None) -> DataMap:
    """The map at ``path`` (see :func:`~lifecycle.datamap.paths.map_path`), parsed once per
    version of the file.

    The one cache of parsed maps in a process: the engine context and the member table both
    read through it.
    """
    p = map_path(path)
    try:
        st = p.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        return _load(p)  # raises the one-line error for a missing file
    with _current_lock:
        hit = _current.get(str(p))
        if hit is not None and hit[0] == stamp:
            return hit[1]
    dm = _from_disk_or_parse(p)
    with _current_lock:
        _current[str(p)] = (stamp, dm)
    return dm


# The loader is imported only on a miss (these two): its YAML parser and validation models are
# what the cache saves a submit command from loading.


def _load(p: Path) -> DataMap:
    from lifecycle.datamap.loader import load_datamap

    return load_datamap(p)


def _parse(text: str, source: str) -> DataMap:
    from lifecycle.datamap.loader import parse_datamap

    return parse_datamap(text, source)


def _from_disk_or_parse(p: Path) -> DataMap:
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return _load(p)  # the loader says why, in one line
    if len(raw) > MAX_DATAMAP_BYTES:
        return _load(p)  # refused, with the loader's own message
    cache = Path(get_settings().var_dir) / "cache"
    prefix = f"datamap-{hashlib.sha256(str(p).encode()).hexdigest()[:16]}-"
    entry = cache / f"{prefix}{_key(p, raw)}.pickle"
    dm = _read(entry, str(p))
    if dm is not None:
        return dm
    # The text just hashed, not the file again: a map edited meanwhile must not be stored
    # under the older text's key.
    dm = _parse(text, str(p))
    _write(entry, prefix, dm)
    return dm


def _key(p: Path, raw: bytes) -> str:
    h = hashlib.sha256()
    h.update(raw)
    h.update(f"\0{p}\0{__version__}\0{sys.version_info[:2]}".encode())
    # The code that builds and defines the map: an edited checkout must not read maps that an
    # older loader validated or whose classes have since changed shape.
    for src in sorted(_CODE.glob("*.py")):
        with contextlib.suppress(OSError):
            st = src.stat()
            h.update(f"\0{src.name}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def _read(entry: Path, source: str) -> DataMap | None:
    data = read_own(entry)
    if data is None:
        return None
    try:
        dm = pickle.loads(data)
    except Exception:  # a truncated or foreign file is a miss: the map is parsed again
        return None
    if not isinstance(dm, DataMap) or dm.source != source:
        return None
    return dm


def _write(entry: Path, prefix: str, dm: DataMap) -> None:
    # A cache only: a var dir this process cannot write (a read-only mount) costs a parse.
    with contextlib.suppress(OSError, pickle.PicklingError):
        write_own(entry, pickle.dumps(dm, protocol=pickle.HIGHEST_PROTOCOL), ".datamap-")
        # Earlier versions of the same map are never read again.
        for old in entry.parent.glob(f"{prefix}*.pickle"):
            if old != entry:
                with contextlib.suppress(OSError):
                    old.unlink()
