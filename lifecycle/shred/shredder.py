"""Secure deletion of files under the configured storage roots (pure: no Celery, no database).

Files are destroyed in batches (:func:`shred_paths`; :func:`shred_path` is a batch of one):

1. Every file is confined, opened and checked, then overwritten in place with an AES-CTR
   keystream (a fresh random key and nonce per file and pass, through OpenSSL, in 4 MiB chunks;
   small files share one stream per pass, each its own counter range: :class:`_SharedStream`)
   over its whole allocated size. AES-CTR rather than ``os.urandom``: the kernel's generator is
   slower than a disk, AES-NI is not, and a keystream is as unrecoverable for this purpose.
2. One flush round per pass makes the whole batch durable: ``fdatasync`` per file for a few
   files, one ``syncfs`` per filesystem for more (it reports writeback errors since Linux 5.8;
   older kernels get ``fdatasync`` per file). Each pass is flushed before the next is written,
   or the page cache would keep only the last. Flushed pages are dropped from the cache
   (``posix_fadvise(DONTNEED)``); a large file also starts writeback of each 32 MiB window as
   soon as it is written.
3. Only then is each file renamed to a random name in its directory (so the name does not
   linger in the directory's blocks) and unlinked, and each directory is fsync-ed once for all
   its files. The blocks are freed (truncate, close) after the results are returned, while the
   caller records them: see :class:`_Releaser`.

A crash before step 3 leaves every file of the batch under its own name (partly overwritten at
worst), so a re-run redoes it; a crash after a rename leaves the recorded temporary name, which a
re-run given that name (``tmp_name``) finishes. :func:`overwrite_fd` is the overwrite of one
open file on its own, ``fsync``-ing after every pass.

Confinement (DESIGN invariant 6): the path must be absolute, free of ``..`` and strictly under a
configured root. Every directory below the root is opened with ``O_NOFOLLOW`` relative to its
parent's descriptor, so a symlinked parent (or one swapped in during the walk) is refused rather
than followed; the file itself is opened with ``O_NOFOLLOW`` and its ``fstat`` must match the
``lstat`` taken before opening. Files with other hard links, directories (unless ``recursive``),
devices, FIFOs and sockets are refused untouched.

Results are values (:class:`ShredResult`). Nothing here puts a path or file name in a message:
names can be personal data, so reasons are fixed codes and sentences about "the file".
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import os
import resource
import secrets
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lifecycle.shred.fsinfo import fs_type_of_fd, overwrite_trusted

Status = Literal["shredded", "missing", "refused", "failed"]

CHUNK_SIZE = 4 << 20  # fits the L2/L3 caches: AES-CTR runs at its best rate at this size
# AES-128: twice the keystream rate of AES-256 (10 rounds, not 14). The keystream only has to
# be unrelated to the old bytes and unpredictable; a fresh random 128-bit key per pass is that
# for any amount of data a disk holds.
KEY_BYTES = 16
MAX_PASSES = 35  # Gutmann's count; anything beyond is a typo, not a policy

# Reason codes and the one-line, name-free sentence each stands for.
REASONS: dict[str, str] = {
    "invalid_path": "the path is empty or contains a NUL byte",
    "not_absolute": "the path is not absolute",
    "dot_dot": "the path contains '..'",
    "outside_roots": "the path is not under a configured storage root",
    "is_root": "the path is a storage root itself",
    "root_missing": "the storage root does not exist on this host",
    "symlinked_parent": "a parent directory is a symbolic link",
    "parent_not_directory": "a parent path component is not a directory",
    "symlink": "the file is a symbolic link",
    "hard_links": "the file has other hard links",
    "directory": "the path is a directory and recursive mode was not asked for",
    "device": "the path is a device file",
    "fifo": "the path is a FIFO",
    "socket": "the path is a socket",
    "not_regular": "the path is not a regular file",
    "replaced": "the file was replaced while it was being opened",
    "size_changed": "the file changed size during the overwrite (it is in use)",
    "verify_failed": "read-back of the last pass found bytes that differ",
    "entries_refused": "some entries of the directory were refused or failed",
    "dir_not_empty": "the directory gained entries while it was being emptied",
    "io_error": "an operating-system error stopped the deletion",
}


@dataclass(frozen=True)
class ShredOptions:
    passes: int = 1
    zero: bool = False
    verify: bool = False
    recursive: bool = False
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self) -> None:
        if not 1 <= self.passes <= MAX_PASSES:
            raise ValueError(f"passes must be between 1 and {MAX_PASSES}")
        if self.chunk_size < 4096 or self.chunk_size % 4096:
            raise ValueError("chunk_size must be a positive multiple of 4096")

    @property
    def method(self) -> str:
        """How a file was destroyed, as the ledger records it."""
        parts = [f"AES-CTR overwrite ×{self.passes}"]
        if self.zero:
            parts.append("zero pass")
        if self.verify:
            parts.append("read-back verify")
        parts += ["rename", "unlink"]
        return " + ".join(parts)


@dataclass
class Hooks:
    """Test and progress hooks; neither receives anything but counters."""

    # (pass number from 1, bytes of this pass written so far), after each chunk is written
    on_chunk: Callable[[int, int], None] | None = None
    # (pass number from 1, "random" | "zero"), after the pass is on disk
    on_pass: Callable[[int, str], None] | None = None
    # (files whose overwrite is on disk), once per flush round, before any of them is renamed
    on_durable: Callable[[int], None] | None = None
    # after a file was renamed to its temporary name, before that entry is checked
    on_renamed: Callable[[], None] | None = None


@dataclass
class OverwriteReport:
    size: int  # st_size before the overwrite (and after: it is restored)
    overwritten: int  # bytes written per pass: the allocated size, at least st_size
    passes: int  # random passes completed
    zero_pass: bool
    verified: bool


@dataclass
class ShredResult:
    status: Status
    reason: str = ""  # a key of REASONS, "" when shredded
    detail: str = ""  # one line without names, e.g. the errno or the link count
    size: int = 0
    overwritten: int = 0
    passes: int = 0
    zero_pass: bool = False
    verified: bool = False
    fs_type: str = ""
    overwrite_trusted: bool = False
    files: int = 0  # regular files destroyed (more than 1 only in recursive mode)
    refused: int = 0  # entries refused or failed (recursive mode)
    resumed: bool = False  # finished a file an interrupted run had already renamed
    entries: list[ShredResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("shredded", "missing")

    @property
    def message(self) -> str:
        if self.status == "shredded":
            return "shredded"
        if self.status == "missing":
            return "the file was already gone"
        text = REASONS.get(self.reason, self.reason)
        return f"{text} ({self.detail})" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Per-entry results of a big tree would bloat rows and ledger details; counts suffice.
        data.pop("entries")
        return data


class Refused(Exception):
    """Internal: stops the current file with a reason code; ``str()`` never holds a name."""

    def __init__(self, reason: str, detail: str = "", status: Status = "refused") -> None:
        super().__init__(REASONS.get(reason, reason))
        self.reason = reason
        self.detail = detail
        self.status = status

    def result(self, **extra: Any) -> ShredResult:
        return ShredResult(status=self.status, reason=self.reason, detail=self.detail, **extra)


def _os_error(exc: OSError) -> Refused:
    code = errno.errorcode.get(exc.errno or 0, "EUNKNOWN")
    return Refused("io_error", f"{code}: {os.strerror(exc.errno or 0)}", status="failed")


def random_name() -> str:
    """A name carrying nothing of the original: same directory, 32 hex digits."""
    return f".shred-{secrets.token_hex(16)}"


# -- the overwrite step ------------------------------------------------------------------------


class _Keystream:
    """AES-128-CTR over a reused zero buffer: constant memory whatever the file size.

    Two output buffers, used in turn, so one chunk can be written by the writer thread while the
    next is computed into the other.
    """

    def __init__(self, chunk_size: int) -> None:
        self.chunk = chunk_size
        self._zeros = memoryview(bytes(chunk_size))
        # update_into wants room for one extra block even in CTR mode.
        self._views = [memoryview(bytearray(chunk_size + 16)) for _ in range(2)]
        self._turn = 0
        self._enc: Any = None

    @property
    def zeros(self) -> memoryview:
        return self._zeros

    def start(self, key: bytes, nonce: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def take(self, n: int) -> memoryview:
        """The next ``n`` keystream bytes, in the buffer not handed out by the previous call."""
        view = self._views[self._turn]
        self._turn ^= 1
        got = self._enc.update_into(self._zeros[:n], view)
        return view[:got]


# Files written in one chunk up to this size take their pass from one stream per batch and
# pass (_SharedStream).
SHARED_MAX = 1 << 20


class _SharedStream:
    """One AES-CTR stream per pass for a batch's small files, each file its own counter range.

    A cipher context per file costs more than its keystream for a file of a few KiB. Every
    file still gets keystream no other file or pass gets (a disjoint range of the counter
    under a fresh random key per pass), and its range's first counter block is recorded as
    its nonce, so ``--verify`` recomputes the same bytes with a context of its own.
    """

    def __init__(self) -> None:
        self._ks = _Keystream(SHARED_MAX)
        self.key = b""
        self._base = 0
        self._blocks = 0
        self.restart()

    def restart(self) -> None:
        """A fresh key and starting counter: called at the start of each pass."""
        self.key, nonce = os.urandom(KEY_BYTES), os.urandom(16)
        self._ks.start(self.key, nonce)
        self._base, self._blocks = int.from_bytes(nonce, "big"), 0

    def take(self, n: int) -> tuple[memoryview, bytes]:
        """``n`` (a multiple of 16, at most SHARED_MAX) keystream bytes and the counter block
        they start at; valid until the next call."""
        # OpenSSL's CTR increments the whole 16-byte block as one big-endian number.
        counter = ((self._base + self._blocks) % (1 << 128)).to_bytes(16, "big")
        self._blocks += n // 16
        return self._ks.take(n), counter


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = os.pread(fd, n - got, offset + got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _write_chunk(fd: int, data: memoryview, pos: int, stream: bool) -> None:
    """Write one chunk at ``pos``; while streaming, start the writeback of a finished window."""
    _pwrite_all(fd, data, pos)
    end = pos + len(data)
    if stream and pos // STREAM_WINDOW != end // STREAM_WINDOW:
        w = end // STREAM_WINDOW
        # DONTNEED on dirty pages starts their writeback; on clean ones drops them: the disk
        # works during the pass and the cache does not fill with keystream.
        os.posix_fadvise(fd, (w - 1) * STREAM_WINDOW, STREAM_WINDOW, _DONTNEED)
        if w >= 3:
            os.posix_fadvise(fd, (w - 3) * STREAM_WINDOW, STREAM_WINDOW, _DONTNEED)


def allocated_size(st: os.stat_result) -> int:
    """Bytes to overwrite: every allocated block, and at least up to the end of the file."""
    blksize = st.st_blksize or 4096
    rounded = -(-st.st_size // blksize) * blksize  # shred(1) also rounds up to a full block
    return max(rounded, st.st_blocks * 512, st.st_size)


def overwrite_fd(
    fd: int, options: ShredOptions | None = None, hooks: Hooks | None = None
) -> OverwriteReport:
    """Overwrite the regular file open on ``fd`` in place; the pure step, callable alone.

    ``fd`` must be open for writing (and reading, for ``verify``) without ``O_TRUNC`` or
    ``O_APPEND``. The file's size is restored at the end so only its bytes changed. Raises
    :class:`Refused` (``size_changed``, ``verify_failed``) or ``OSError``.
    """
    options = options or ShredOptions()
    hooks = hooks or Hooks()
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not_regular")
    size = st.st_size
    total = allocated_size(st)
    # Buffers no bigger than the file: small files are the common case and allocating a 1 MiB
    # buffer per file would cost more than writing them.
    chunk = max(4096, min(options.chunk_size, total))
    ks = _Keystream(chunk)
    expected = size  # what st_size must be at each check; grows while the tail is extended
    last: tuple[str, bytes, bytes] = ("zero", b"", b"")
    plan = ["random"] * options.passes + (["zero"] if options.zero else [])
    zeros = ks.zeros
    done_random = 0

    for number, kind in enumerate(plan, start=1):
        if kind == "random":
            key, nonce = os.urandom(KEY_BYTES), os.urandom(16)
            ks.start(key, nonce)
            last = ("random", key, nonce)
        else:
            last = ("zero", b"", b"")
        pos = 0
        while pos < total:
            n = min(chunk, total - pos)
            data = ks.take(n) if kind == "random" else zeros[:n]
            _pwrite_all(fd, data, pos)
            pos += n
            expected = max(expected, pos)
            if hooks.on_chunk:
                hooks.on_chunk(number, pos)
            now = os.fstat(fd).st_size
            if now != expected:
                raise Refused("size_changed", f"{expected} bytes expected, {now} found")
        os.fsync(fd)
        if kind == "random":
            done_random += 1
        if hooks.on_pass:
            hooks.on_pass(number, kind)

    verified = False
    if options.verify:
        _verify(fd, total, chunk, last)
        verified = True
    if expected != size:
        # Give back the block-rounding tail: the rounded-up bytes are already overwritten on
        # disk, and a same-size file is what callers (and the tests) compare against.
        os.ftruncate(fd, size)
        os.fsync(fd)
    return OverwriteReport(size, total, done_random, options.zero, verified)


def _verify(fd: int, total: int, chunk: int, last: tuple[str, bytes, bytes]) -> None:
    # Drop the clean cached pages so the read comes from the device, not from our own writes.
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, total, os.POSIX_FADV_DONTNEED)
    kind, key, nonce = last
    ks = _Keystream(chunk)
    if kind == "random":
        ks.start(key, nonce)
    pos = 0
    while pos < total:
        n = min(chunk, total - pos)
        want = ks.take(n) if kind == "random" else bytes(n)
        got = _pread_exact(fd, n, pos)
        if got != want:
            raise Refused("verify_failed", f"mismatch within bytes {pos}..{pos + n}")
        pos += n


# -- confinement -------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Located:
    root: str  # the root's resolved path
    parts: tuple[str, ...]  # components below the root, the last one being the target

    @property
    def parent_hint(self) -> str:
        return os.path.join(self.root, *self.parts[:-1])


class ResolvedRoots(tuple[tuple[str, str], ...]):
    """Each root as configured (absolute) and resolved: resolve once per batch, not per file."""


def resolve_roots(roots: Sequence[str | os.PathLike[str]] | ResolvedRoots) -> ResolvedRoots:
    if isinstance(roots, ResolvedRoots):
        return roots
    out = []
    for root in roots:
        configured = os.path.abspath(os.fspath(root))
        out.append((configured, os.path.realpath(configured)))
    return ResolvedRoots(out)


def locate(path: str | bytes, roots: Sequence[str | os.PathLike[str]] | ResolvedRoots) -> Located:
    """Check ``path`` textually against the roots; raises :class:`Refused`.

    A path is bytes on Linux: ``bytes`` are taken as they are, and a ``str`` from ``sys.argv``
    or ``os.fsdecode`` carries any non-UTF-8 byte as a surrogate escape, which every ``os``
    call turns back into the same byte.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or "\x00" in path:
        raise Refused("invalid_path")
    if not os.path.isabs(path):
        raise Refused("not_absolute")
    if ".." in path.split("/"):
        raise Refused("dot_dot")
    norm = os.path.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    for configured, resolved in resolve_roots(roots):
        for candidate in dict.fromkeys((configured, resolved)):
            if norm == candidate:
                raise Refused("is_root")
            prefix = candidate.rstrip("/") + "/"
            if norm.startswith(prefix):
                parts = tuple(p for p in norm[len(prefix) :].split("/") if p)
                return Located(resolved, parts)
    raise Refused("outside_roots")


def _open_parent(loc: Located) -> int:
    """Descriptor of the target's directory, reached without following any symlink."""
    try:
        fd = os.open(loc.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Refused("root_missing") from None
    except NotADirectoryError:
        raise Refused("root_missing", "the root is not a directory") from None
    except OSError as exc:
        raise _os_error(exc) from None
    try:
        for comp in loc.parts[:-1]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise Refused("", status="missing") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        is_link = stat.S_ISLNK(os.lstat(comp, dir_fd=fd).st_mode)
                    except OSError:
                        is_link = False
                    raise Refused(
                        "symlinked_parent" if is_link else "parent_not_directory"
                    ) from None
                raise _os_error(exc) from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _kind_refusal(st: os.stat_result, recursive: bool) -> Refused | None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return Refused("symlink")
    if stat.S_ISDIR(mode):
        return None if recursive else Refused("directory")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return Refused("device")
    if stat.S_ISFIFO(mode):
        return Refused("fifo")
    if stat.S_ISSOCK(mode):
        return Refused("socket")
    if not stat.S_ISREG(mode):
        return Refused("not_regular")
    if st.st_nlink > 1:
        return Refused("hard_links", f"{st.st_nlink} links")
    return None


def check_path(
    path: str | bytes,
    roots: Sequence[str | os.PathLike[str]] | ResolvedRoots,
    *,
    recursive: bool = False,
) -> ShredResult | None:
    """What :func:`shred_path` would refuse without touching anything; None when it would go on.

    Used to validate command-line input before a job is created. Entries inside a directory
    are checked when the job runs (each one by the same rules).
    """
    try:
        loc = locate(path, roots)
        dfd = _open_parent(loc)
    except Refused as r:
        return r.result()
    try:
        st = _lstat_at(dfd, loc.parts[-1])
        if st is None:
            return ShredResult(status="missing")
        refusal = _kind_refusal(st, recursive)
        return refusal.result() if refusal else None
    except OSError as exc:
        return _os_error(exc).result()
    finally:
        os.close(dfd)


# -- the whole deletion, in batches ------------------------------------------------------------

# Targets held open at once (one descriptor each, plus one per distinct directory): bounded so a
# job of 100,000 files stays well inside the worker's descriptor limit. Each batch costs a
# syncfs (which also flushes whatever else is dirty on the filesystem), so the fewer the better:
# the soft descriptor limit is raised towards the hard one to allow this many (see _fd_room).
BATCH_FILES = 4096
# Descriptors kept free for everything else the process holds (DB sockets, logs, directories).
FD_RESERVE = 256
# Up to this many files in a flush round are flushed one by one (fdatasync, which waits only
# for their own pages); beyond it one syncfs per filesystem is cheaper than one device cache
# flush per file.
FDATASYNC_MAX = 4
# Large files: start writeback of each window as soon as it is written and drop the window
# written two steps earlier from the page cache, so the disk works while the keystream is
# generated and the cache is not filled with keystream pages.
STREAM_WINDOW = 32 << 20
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)
# Threads for the rename/unlink round of a batch and for freeing blocks afterwards (all of it
# waits in the kernel).
UNLINK_THREADS = 16
_RENAME_NOREPLACE = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _spare_core() -> bool:
    """Whether a core is free for the writer thread: 1-minute load average below cores - 0.5
    (a shredder running alone on 2 cores counts about 1 towards it itself).

    Both sides of the overlap are CPU work (the keystream, and pwrite's copy into the page
    cache; the disk is written by the kernel's writeback either way), so the overlap only pays
    with a core to spare. On a busy machine each 4 MiB chunk's two hand-offs between the
    threads wait for the scheduler: 8 GiB took 5.5-10.5 s with the writer thread against
    3.4-5.2 s written by the computing thread itself, at load 7-9 on 2 cores (README).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores > 1
    return load < cores - 0.5


def _fd_room() -> int:
    """How many targets a batch may hold open: BATCH_FILES, or fewer under a low hard limit.

    The soft limit is commonly 1,024 while the hard one is far higher; raising the soft limit is
    an unprivileged, process-wide change that only lets this process open more files.
    """
    want = BATCH_FILES + FD_RESERVE
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (OSError, ValueError):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return BATCH_FILES
    return max(1, min(BATCH_FILES, soft - FD_RESERVE))


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


# syncfs reports writeback errors only since Linux 5.8; before that only fdatasync does.
_SYNCFS_REPORTS_ERRORS = hasattr(_libc, "syncfs") and _kernel_at_least(5, 8)


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _rename_noreplace(dfd: int, src: str, dst: str) -> None:
    """rename(2) that fails with FileExistsError instead of replacing ``dst``."""
    fn = getattr(_libc, "renameat2", None)
    if fn is not None:
        if fn(dfd, os.fsencode(src), dfd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err))
    # No renameat2 here (or not on this filesystem): link + unlink also refuses an existing dst.
    os.link(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    os.unlink(src, dir_fd=dfd)


def _put_back(dfd: int, tmp: str, name: str) -> str:
    """Undo our rename of an entry that turned out not to be the file we overwrote.

    Never leaves the ``.shred-`` name behind (an entry under it would look like our leftover
    and be shredded by a resumed run) and never destroys data. Returns a detail for the result.
    """
    try:
        _rename_noreplace(dfd, tmp, name)
        return ""
    except FileExistsError:
        pass
    except (IsADirectoryError, PermissionError):
        # A directory cannot be hard-linked; the name is free (checked just below) or taken.
        if _lstat_at(dfd, name) is None:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            return ""
    moved, now = _lstat_at(dfd, tmp), _lstat_at(dfd, name)
    if moved is None:
        return ""
    if not stat.S_ISDIR(moved.st_mode) and (
        moved.st_nlink > 1 or (now is not None and _same_inode(moved, now))
    ):
        # The name was taken again (e.g. a loop planting hard links): our extra name is one of
        # several names of the same bytes; dropping it changes no byte and no other name.
        os.unlink(tmp, dir_fd=dfd)
        return ""
    # Two different single-name entries now claim the name: putting ours back would destroy
    # the other one. Keep both; the operator sees the detail.
    return "the displaced entry kept a temporary name"


class _Releaser:
    """Truncates and closes unlinked files after their job has its results.

    Freeing a file's blocks is not part of destroying its contents (they are overwritten and on
    disk before the unlink), yet it is slow where the filesystem discards freed blocks online
    (ext4 ``discard``: about 0.2 s per GiB, ~2 ms per small file, waiting on the journal). Kept
    open past its unlink, the inode is freed only by the truncate here, so the job records its
    files meanwhile. A process that dies first loses nothing: the kernel closes the descriptors
    and an unlinked inode still open at a crash is freed by the filesystem's orphan list.
    The truncate also frees the blocks of a file another process still holds open.
    """

    def __init__(self, threads: int) -> None:
        self._cond = threading.Condition()
        self._fds: list[int] = []
        self._busy = 0
        self._size = threads
        self._threads: list[threading.Thread] = []
        self._pid = os.getpid()

    def put(self, fd: int) -> None:
        with self._cond:
            if self._pid != os.getpid():  # a forked child inherits the list, not the threads
                self._threads, self._pid = [], os.getpid()
            self._fds.append(fd)
            # Concurrent truncates share the journal's waits, as the unlinks do.
            if len(self._threads) < self._size:
                t = threading.Thread(target=self._run, name="shred-release", daemon=True)
                t.start()
                self._threads.append(t)
            self._cond.notify()

    def drain(self) -> None:
        """Return once every file handed over so far is truncated and closed."""
        self.wait_below(1)

    def wait_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` (at least 1) files handed over are still open."""
        with self._cond:
            while len(self._fds) + self._busy >= max(1, limit):
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._fds:
                    self._cond.wait()
                fd = self._fds.pop()
                self._busy += 1
            try:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                with contextlib.suppress(OSError):
                    os.close(fd)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


_release = _Releaser(UNLINK_THREADS)
# The CLI shredding in-process (embedded mode) frees its files before it exits.
atexit.register(_release.drain)


def release_unlinked() -> None:
    """Wait until the blocks of every file this process unlinked are freed (tests, benches)."""
    _release.drain()


class _Dir:
    """A directory descriptor shared by every target in it; fsync-ed once per round."""

    __slots__ = ("fd", "hint", "key", "targets", "users")

    def __init__(self, fd: int, hint: str) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.hint = hint
        self.key = (st.st_dev, st.st_ino)
        self.users = 0  # callers still working in it
        self.targets = 0  # pending targets in it


class _Target:
    """One regular file open for the overwrite, from its checks to its unlink."""

    __slots__ = (
        "dir",
        "expected",
        "fd",
        "fs_type",
        "last",
        "name",
        "passes",
        "result",
        "resumed",
        "size",
        "st",
        "tmp_name",
        "total",
        "trusted",
        "unlinked",
        "verified",
    )  # fmt: skip

    def __init__(
        self, d: _Dir, name: str, tmp_name: str | None, fd: int, st: os.stat_result, fs_type: str
    ) -> None:
        self.dir = d
        self.name = name
        self.tmp_name = tmp_name
        self.fd = fd
        self.st = st
        self.fs_type = fs_type
        self.trusted = overwrite_trusted(self.fs_type)
        self.size = st.st_size
        self.total = allocated_size(st)
        self.expected = st.st_size
        self.passes = 0
        self.last: tuple[str, bytes, bytes] = ("zero", b"", b"")
        self.verified = False
        self.result: ShredResult | None = None
        self.resumed = False
        self.unlinked = False

    def fail(self, r: Refused) -> None:
        if self.result is None:
            self.result = r.result(
                fs_type=self.fs_type, overwrite_trusted=self.trusted, size=self.size
            )


class _Batch:
    """Destroys many files with few flushes.

    Every file of the batch is overwritten (pass by pass), then one flush round makes all of
    it durable, and only then are the files renamed and unlinked, with one fsync per
    directory. A crash before the flush leaves every file under its own name (partly
    overwritten at worst); after it, every rename is of a file whose overwrite is on disk.
    """

    def __init__(self, options: ShredOptions, hooks: Hooks | None) -> None:
        self.options = options
        self.hooks = hooks or Hooks()
        self.pending: list[_Target] = []
        self.pending_inodes: set[tuple[int, int]] = set()
        self.fs_types: dict[int, str] = {}
        self.dirs: dict[tuple[int, int], _Dir] = {}
        self._ks: _Keystream | None = None
        self._shared: _SharedStream | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._unlinkers: ThreadPoolExecutor | None = None
        self.room = _fd_room()

    # -- directories --------------------------------------------------------------------------

    def adopt_dir(self, fd: int, hint: str) -> _Dir:
        """Share one descriptor per directory (closing ``fd`` if we hold that directory)."""
        d = _Dir(fd, hint)
        have = self.dirs.get(d.key)
        if have is not None:
            os.close(fd)
            have.users += 1
            return have
        d.users = 1
        self.dirs[d.key] = d
        return d

    def release_dir(self, d: _Dir) -> None:
        d.users -= 1
        self._maybe_close(d)

    def _maybe_close(self, d: _Dir) -> None:
        if d.users <= 0 and d.targets <= 0 and self.dirs.get(d.key) is d:
            del self.dirs[d.key]
            os.close(d.fd)

    def close(self) -> None:
        for t in self.pending:
            os.close(t.fd)
        self.pending.clear()
        self.pending_inodes.clear()
        for d in self.dirs.values():
            os.close(d.fd)
        self.dirs.clear()
        for pool in (self._pool, self._unlinkers):
            if pool is not None:
                pool.shutdown()
        self._pool = self._unlinkers = None

    # -- adding entries -----------------------------------------------------------------------

    def add_at(self, d: _Dir, name: str, tmp_name: str | None) -> _Target | ShredResult:
        """Check and open ``name`` in ``d``: a target to finish later, or a final result."""
        try:
            st = _lstat_at(d.fd, name)
            if st is None:
                return ShredResult(status="missing")
            refusal = _kind_refusal(st, self.options.recursive)
            if refusal:
                return refusal.result()
            if stat.S_ISDIR(st.st_mode):
                return self._tree(d, name, st)
            if (st.st_dev, st.st_ino) in self.pending_inodes:
                # Named twice in one batch (a file and its directory): the second sees it gone.
                self.commit()
                return self.add_at(d, name, tmp_name)
            return self._open(d, name, st, tmp_name)
        except Refused as r:
            return r.result()
        except OSError as exc:
            return _os_error(exc).result()

    def _open(self, d: _Dir, name: str, st: os.stat_result, tmp: str | None) -> _Target:
        # Files of earlier rounds still being freed hold descriptors too: open only while they
        # and this round's fit in the room (a full drain would stop the overwrite meanwhile).
        _release.wait_below(self.room + 1 - len(self.pending))
        access = os.O_RDWR if self.options.verify else os.O_WRONLY
        # No O_TRUNC (the blocks must be overwritten, not released), no O_APPEND (we pwrite);
        # O_NONBLOCK so a FIFO swapped in after the lstat cannot hang the worker.
        flags = access | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=d.fd)
        except FileNotFoundError:
            raise Refused("", status="missing") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise Refused("replaced") from None
            raise _os_error(exc) from None
        try:
            fst = os.fstat(fd)
            if not _same_inode(st, fst) or not stat.S_ISREG(fst.st_mode):
                raise Refused("replaced")
            if fst.st_nlink > 1:
                raise Refused("hard_links", f"{fst.st_nlink} links")
            # One device, one filesystem for the batch: fstatfs once per device. (Not longer:
            # a device number can come back as another mount.)
            fs_type = self.fs_types.get(fst.st_dev) or fs_type_of_fd(fd, d.hint)
            self.fs_types[fst.st_dev] = fs_type
            t = _Target(d, name, tmp, fd, fst, fs_type)
        except BaseException:
            os.close(fd)
            raise
        if len(self.pending) >= self.room:
            self.commit()
        self.pending.append(t)
        self.pending_inodes.add((fst.st_dev, fst.st_ino))
        d.targets += 1
        return t

    # -- the rounds ---------------------------------------------------------------------------

    def _keystream(self) -> _Keystream:
        if self._ks is None:
            self._ks = _Keystream(self.options.chunk_size)
        return self._ks

    def commit(self) -> None:
        """Overwrite, flush, then rename/unlink every pending target; set results."""
        batch, self.pending = self.pending, []
        self.pending_inodes.clear()
        try:
            self._commit(batch)
        finally:
            for t in batch:
                if t.result is None:  # only if _commit itself raised: never leave it unset
                    t.fail(Refused("io_error", "the batch was interrupted", status="failed"))
                elif not t.result.ok and t.expected != t.size and t.result.reason != "size_changed":
                    # Left in place: give back the block-rounding tail we wrote past its end.
                    with contextlib.suppress(OSError):
                        os.ftruncate(t.fd, t.size)
                if t.unlinked:
                    _release.put(t.fd)
                else:
                    os.close(t.fd)
                t.dir.targets -= 1
                self._maybe_close(t.dir)

    def _live(self, batch: list[_Target]) -> list[_Target]:
        return [t for t in batch if t.result is None]

    def _commit(self, batch: list[_Target]) -> None:
        opts, hooks = self.options, self.hooks
        plan = ["random"] * opts.passes + (["zero"] if opts.zero else [])
        for number, kind in enumerate(plan, start=1):
            if kind == "random" and self._shared is not None:
                self._shared.restart()
            for t in self._live(batch):
                try:
                    self._write_pass(t, number, kind)
                except Refused as r:
                    t.fail(r)
                except OSError as exc:
                    t.fail(_os_error(exc))
            # Each pass must reach the medium before the next one is written over it: written
            # back to back, the page cache would keep only the last.
            self._flush(self._live(batch))
            for t in self._live(batch):
                if kind == "random":
                    t.passes += 1
                if hooks.on_pass:
                    hooks.on_pass(number, kind)
        live = self._live(batch)
        if hooks.on_durable:
            hooks.on_durable(len(live))
        if opts.verify:
            for t in live:
                try:
                    _verify(t.fd, t.total, max(4096, min(opts.chunk_size, t.total)), t.last)
                    t.verified = True
                except Refused as r:
                    t.fail(r)
                except OSError as exc:
                    t.fail(_os_error(exc))
        touched: list[_Target] = []
        live = self._live(batch)
        if len(live) > 1:
            # Renames and unlinks wait on the journal; concurrent ones share the wait. Each
            # thread works on its own names only, a share of the batch each: one task per
            # thread, not per file (a future per file costs more than its unlink).
            if self._unlinkers is None:
                self._unlinkers = ThreadPoolExecutor(UNLINK_THREADS, "shred-unlink")
            n = min(UNLINK_THREADS, len(live))
            errors: list[Refused | None] = [None] * len(live)

            def share(first: int) -> list[Refused | None]:
                return [self._unlink_caught(t) for t in live[first::n]]

            for first, errs in enumerate(self._unlinkers.map(share, range(n))):
                errors[first::n] = errs
        else:
            errors = [self._unlink_caught(t) for t in live]
        for t, err in zip(live, errors, strict=True):
            if err is None:
                touched.append(t)
            else:
                t.fail(err)
        # One fsync per directory makes every unlink of the round durable at once.
        failed_dirs: dict[tuple[int, int], Refused] = {}
        for d in {t.dir.key: t.dir for t in touched}.values():
            try:
                os.fsync(d.fd)
            except OSError as exc:
                failed_dirs[d.key] = _os_error(exc)
        for t in touched:
            bad = failed_dirs.get(t.dir.key)
            if bad is not None:
                t.fail(bad)
            else:
                t.result = ShredResult(
                    status="shredded",
                    size=t.size,
                    overwritten=t.total,
                    passes=t.passes,
                    zero_pass=opts.zero,
                    verified=t.verified,
                    fs_type=t.fs_type,
                    overwrite_trusted=t.trusted,
                    files=1,
                    resumed=t.resumed,
                )

    def _write_pass(self, t: _Target, number: int, kind: str) -> None:
        one_chunk = t.total <= min(SHARED_MAX, self.options.chunk_size)
        if kind == "random" and one_chunk and t.total % 16 == 0:
            if self._shared is None:
                self._shared = _SharedStream()
            data, counter = self._shared.take(t.total)
            t.last = ("random", self._shared.key, counter)
            _write_chunk(t.fd, data, 0, False)
            self._wrote(t, number, t.total)
            return
        ks = self._keystream()
        if kind == "random":
            key, nonce = os.urandom(KEY_BYTES), os.urandom(16)
            ks.start(key, nonce)
            t.last = ("random", key, nonce)
        else:
            t.last = ("zero", b"", b"")
        fd, total, chunk = t.fd, t.total, ks.chunk
        stream = total >= 2 * STREAM_WINDOW
        # A file of several chunks is written by the writer thread while this one computes the
        # next chunk of keystream (pwrite drops the GIL): the two costs overlap instead of adding,
        # but only on a core nobody else wants (see _spare_core).
        writer = self._writer() if kind == "random" and total > chunk and _spare_core() else None
        pending: tuple[Future[None], int] | None = None  # the write in flight, and its end
        pos = 0
        try:
            while pos < total:
                n = min(chunk, total - pos)
                data = ks.take(n) if kind == "random" else ks.zeros[:n]
                if writer is None:
                    _write_chunk(fd, data, pos, stream)
                    self._wrote(t, number, pos + n)
                else:
                    if pending is not None:
                        pending[0].result()
                        self._wrote(t, number, pending[1])
                    pending = (writer.submit(_write_chunk, fd, data, pos, stream), pos + n)
                pos += n
            if pending is not None:
                pending[0].result()
                self._wrote(t, number, pending[1])
                pending = None
        finally:
            if pending is not None:
                # Leaving on an error: the write in flight must end before the fd can be closed.
                with contextlib.suppress(BaseException):
                    pending[0].result()

    def _wrote(self, t: _Target, number: int, pos: int) -> None:
        """After a pass has written up to ``pos``: progress hook, then the size check."""
        if self.hooks.on_chunk:
            self.hooks.on_chunk(number, pos)
        self._check_size(t, pos, os.fstat(t.fd).st_size)

    def _writer(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="shred-writer")
        return self._pool

    @staticmethod
    def _check_size(t: _Target, end: int, now: int) -> None:
        t.expected = max(t.expected, end)
        if now != t.expected:
            raise Refused("size_changed", f"{t.expected} bytes expected, {now} found")

    def _flush(self, live: list[_Target]) -> None:
        if not live:
            return
        by_dev: dict[int, list[_Target]] = {}
        for t in live:
            by_dev.setdefault(t.st.st_dev, []).append(t)
        for group in by_dev.values():
            try:
                if len(group) > FDATASYNC_MAX and _SYNCFS_REPORTS_ERRORS:
                    _syncfs(group[0].fd)
                else:
                    for t in group:
                        os.fdatasync(t.fd)
            except OSError as exc:
                # Which file's bytes did not reach the disk is unknown: none of them counts.
                for t in group:
                    t.fail(_os_error(exc))
                continue
            if hasattr(os, "posix_fadvise"):
                for t in group:
                    # Clean now: drop the keystream pages rather than let them evict real data.
                    os.posix_fadvise(t.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def _unlink_caught(self, t: _Target) -> Refused | None:
        try:
            self._unlink(t)
        except Refused as r:
            return r
        except OSError as exc:
            return _os_error(exc)
        return None

    def _unlink(self, t: _Target) -> None:
        dfd = t.dir.fd
        new = _fresh_name(dfd, t.tmp_name)
        os.rename(t.name, new, src_dir_fd=dfd, dst_dir_fd=dfd)
        if self.hooks.on_renamed:
            self.hooks.on_renamed()
        moved = _lstat_at(dfd, new)
        if moved is None or not _same_inode(moved, t.st):
            # Someone replaced the entry between our open and the rename: put theirs back.
            detail = _put_back(dfd, new, t.name) if moved is not None else ""
            raise Refused("replaced", detail)
        os.unlink(new, dir_fd=dfd)
        t.unlinked = True

    # -- trees --------------------------------------------------------------------------------

    def _tree(self, parent: _Dir, name: str, st: os.stat_result) -> ShredResult:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except FileNotFoundError:
            return ShredResult(status="missing")
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused("replaced") from None
            raise _os_error(exc) from None
        d = self.adopt_dir(fd, os.path.join(parent.hint, name))
        try:
            if not _same_inode(st, os.fstat(d.fd)):
                raise Refused("replaced")
            with os.scandir(d.fd) as it:
                names = sorted(e.name for e in it)
            added = [self.add_at(d, n, None) for n in names]
            # This directory can only go once its files are gone: finish them now.
            if any(isinstance(a, _Target) and a.result is None for a in added):
                self.commit()
        finally:
            self.release_dir(d)
        entries = [a.result if isinstance(a, _Target) else a for a in added]
        agg = _aggregate([e for e in entries if e is not None], self.options)
        if agg.refused:
            agg.status, agg.reason = "refused", "entries_refused"
            agg.detail = f"{agg.refused} of {len(entries)} entries"
            return agg
        # Empty now: the directory's name goes the same way as a file's.
        new = _fresh_name(parent.fd, None)
        os.rename(name, new, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
        try:
            os.rmdir(new, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                _put_back(parent.fd, new, name)
                raise _os_error(exc) from None
            # An entry appeared while we emptied it: give the directory its name back.
            detail = _put_back(parent.fd, new, name)
            agg.status, agg.reason, agg.detail = "refused", "dir_not_empty", detail
            return agg
        os.fsync(parent.fd)
        return agg


def _aggregate(entries: list[ShredResult], options: ShredOptions) -> ShredResult:
    agg = ShredResult(
        status="shredded",
        passes=options.passes,
        zero_pass=options.zero,
        verified=options.verify,
        overwrite_trusted=True,
        entries=entries,
    )
    fs_types: list[str] = []
    for e in entries:
        agg.files += e.files
        agg.refused += e.refused + (0 if e.ok else 1)
        agg.size += e.size
        agg.overwritten += e.overwritten
        if e.fs_type and e.fs_type not in fs_types:
            fs_types.append(e.fs_type)
        if e.files and not e.overwrite_trusted:
            agg.overwrite_trusted = False
    agg.fs_type = ",".join(fs_types)
    if not agg.files:
        agg.overwrite_trusted = False
    return agg


def _check_tmp_name(tmp_name: str | None) -> None:
    if tmp_name is not None and (
        "/" in tmp_name or tmp_name in ("", ".", "..") or "\x00" in tmp_name
    ):
        raise ValueError("tmp_name must be a plain file name")


def shred_paths(
    requests: Sequence[tuple[str | bytes, str | None]],
    roots: Sequence[str | os.PathLike[str]],
    options: ShredOptions | None = None,
    *,
    hooks: Hooks | None = None,
) -> list[ShredResult]:
    """Destroy many files (or trees) in one batch; one result per ``(path, tmp_name)``.

    ``tmp_name`` is the random name a file is renamed to before unlinking. A caller that
    records it before calling can finish a run that was killed after the rename: when the path
    is gone but ``tmp_name`` exists in the same directory, that entry is shredded instead.
    Never raises for a file; each refusal or failure is its own result.
    """
    options = options or ShredOptions()
    for _, tmp in requests:
        _check_tmp_name(tmp)
    resolved = resolve_roots(roots)
    batch = _Batch(options, hooks)
    slots: list[_Target | ShredResult] = []
    resumes: list[tuple[_Dir, str, str] | None] = []
    leftovers: list[_Target | ShredResult | None] = []
    try:
        for path, tmp in requests:
            resume = None
            leftover: _Target | ShredResult | None = None
            try:
                loc = locate(path, resolved)
                d = batch.adopt_dir(_open_parent(loc), loc.parent_hint)
            except Refused as r:
                slots.append(r.result())
                resumes.append(None)
                leftovers.append(None)
                continue
            try:
                name = loc.parts[-1]
                has_name = _lstat_at(d.fd, name) is not None
                has_tmp = bool(tmp) and _lstat_at(d.fd, tmp or "") is not None
                if not has_name and tmp and has_tmp:
                    got = batch.add_at(d, tmp, None)
                    resume = (d, tmp, name)
                    got.resumed = True
                else:
                    got = batch.add_at(d, name, tmp)
                    if has_tmp and tmp:
                        # An earlier attempt renamed the file (after its overwrite was on
                        # disk) and died; a new file has the name since. Finish both.
                        leftover = batch.add_at(d, tmp, None)
            except OSError as exc:
                got = _os_error(exc).result()
            slots.append(got)
            resumes.append(resume)
            leftovers.append(leftover)
            if resume is None:
                batch.release_dir(d)
        batch.commit()
        results: list[ShredResult] = []
        for slot, resume, extra in zip(slots, resumes, leftovers, strict=True):
            res = slot.result if isinstance(slot, _Target) else slot
            assert res is not None
            e = extra.result if isinstance(extra, _Target) else extra
            if e is not None and e.status == "shredded" and res.status in ("shredded", "missing"):
                if res.status == "missing":
                    res = e
                else:
                    res.files += e.files
                res.resumed = True
            if resume is not None:
                d, tmp, name = resume
                if not res.ok and _lstat_at(d.fd, tmp) is not None:
                    # Refused on resume: the entry we renamed earlier gets its name back.
                    _put_back(d.fd, tmp, name)
                batch.release_dir(d)
            results.append(res)
        return results
    finally:
        batch.close()


def shred_path(
    path: str | bytes,
    roots: Sequence[str | os.PathLike[str]],
    options: ShredOptions | None = None,
    *,
    tmp_name: str | None = None,
    hooks: Hooks | None = None,
) -> ShredResult:
    """Destroy the file (or, with ``recursive``, the tree) at ``path``; never raises for the file.

    A batch of one: see :func:`shred_paths` for ``tmp_name``.
    """
    return shred_paths([(path, tmp_name)], roots, options, hooks=hooks)[0]


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _fresh_name(dfd: int, preferred: str | None) -> str:
    if preferred and _lstat_at(dfd, preferred) is None:
        return preferred
    while True:
        candidate = random_name()
        if _lstat_at(dfd, candidate) is None:
            return candidate
