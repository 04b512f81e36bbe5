"""Secure deletion of files under the configured storage roots (pure: no Celery, no database).

One file is destroyed in two steps:

1. :func:`overwrite_fd` writes an AES-CTR keystream (a fresh random key and nonce per pass) over
   the file's whole allocated size, in place, through the descriptor it is given, ``fsync``-ing
   after every pass; optionally a final zero pass and a read-back check of the last pass.
   AES-CTR rather than ``os.urandom``: the kernel's generator is slower than a disk, AES-NI is
   not, and a keystream is as unrecoverable for this purpose.
2. :func:`shred_path` confines and opens the file, calls :func:`overwrite_fd`, renames the file
   to a random name in the same directory (so the name does not linger in the directory's
   blocks), truncates it, unlinks it and ``fsync``-s the directory.

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

import errno
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from lifecycle.shred.fsinfo import fs_type_of_fd, overwrite_trusted

Status = Literal["shredded", "missing", "refused", "failed"]

CHUNK_SIZE = 1 << 20
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
        parts += ["rename", "truncate", "unlink"]
        return " + ".join(parts)


@dataclass
class Hooks:
    """Test and progress hooks; neither receives anything but counters."""

    # (pass number from 1, bytes of this pass written so far), after each chunk is written
    on_chunk: Callable[[int, int], None] | None = None
    # (pass number from 1, "random" | "zero"), after the pass is on disk
    on_pass: Callable[[int, str], None] | None = None


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
    """AES-256-CTR over a reused zero buffer: constant memory whatever the file size."""

    def __init__(self, chunk_size: int) -> None:
        self._zeros = memoryview(bytes(chunk_size))
        # update_into wants room for one extra block even in CTR mode.
        self._out = bytearray(chunk_size + 16)
        self._view = memoryview(self._out)
        self._enc: Any = None

    @property
    def zeros(self) -> memoryview:
        return self._zeros

    def start(self, key: bytes, nonce: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def take(self, n: int) -> memoryview:
        got = self._enc.update_into(self._zeros[:n], self._out)
        return self._view[:got]


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
            key, nonce = os.urandom(32), os.urandom(16)
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


def locate(path: str, roots: Sequence[str | os.PathLike[str]]) -> Located:
    """Check ``path`` textually against the roots; raises :class:`Refused`."""
    if not path or "\x00" in path:
        raise Refused("invalid_path")
    if not os.path.isabs(path):
        raise Refused("not_absolute")
    if ".." in path.split("/"):
        raise Refused("dot_dot")
    norm = os.path.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    for root in roots:
        configured = os.path.abspath(os.fspath(root))
        resolved = os.path.realpath(configured)
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
    path: str, roots: Sequence[str | os.PathLike[str]], *, recursive: bool = False
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


# -- the whole deletion ------------------------------------------------------------------------


def shred_path(
    path: str,
    roots: Sequence[str | os.PathLike[str]],
    options: ShredOptions | None = None,
    *,
    tmp_name: str | None = None,
    hooks: Hooks | None = None,
) -> ShredResult:
    """Destroy the file (or, with ``recursive``, the tree) at ``path``; never raises for the file.

    ``tmp_name`` is the random name the file is renamed to before unlinking. A caller that
    records it before calling can finish a run that was killed after the rename: when ``path``
    is gone but ``tmp_name`` exists in the same directory, that entry is shredded instead.
    """
    options = options or ShredOptions()
    try:
        loc = locate(path, roots)
        dfd = _open_parent(loc)
    except Refused as r:
        return r.result()
    try:
        name = loc.parts[-1]
        if tmp_name is not None and (
            "/" in tmp_name or tmp_name in ("", ".", "..") or "\x00" in tmp_name
        ):
            raise ValueError("tmp_name must be a plain file name")
        if _lstat_at(dfd, name) is None and tmp_name and _lstat_at(dfd, tmp_name) is not None:
            result = _shred_at(dfd, tmp_name, loc.parent_hint, options, hooks, None)
            result.resumed = True
            return result
        return _shred_at(dfd, name, loc.parent_hint, options, hooks, tmp_name)
    except Refused as r:
        return r.result()
    except OSError as exc:
        return _os_error(exc).result()
    finally:
        os.close(dfd)


def _shred_at(
    dfd: int,
    name: str,
    dir_hint: str,
    options: ShredOptions,
    hooks: Hooks | None,
    tmp_name: str | None,
) -> ShredResult:
    try:
        st = _lstat_at(dfd, name)
        if st is None:
            return ShredResult(status="missing")
        refusal = _kind_refusal(st, options.recursive)
        if refusal:
            return refusal.result()
        if stat.S_ISDIR(st.st_mode):
            return _shred_tree(dfd, name, st, os.path.join(dir_hint, name), options, hooks)
        return _shred_file(dfd, name, st, dir_hint, options, hooks, tmp_name)
    except Refused as r:
        return r.result()
    except OSError as exc:
        return _os_error(exc).result()


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _fresh_name(dfd: int, preferred: str | None) -> str:
    if preferred and _lstat_at(dfd, preferred) is None:
        return preferred
    while True:
        candidate = random_name()
        if _lstat_at(dfd, candidate) is None:
            return candidate


def _shred_file(
    dfd: int,
    name: str,
    st: os.stat_result,
    dir_hint: str,
    options: ShredOptions,
    hooks: Hooks | None,
    tmp_name: str | None,
) -> ShredResult:
    access = os.O_RDWR if options.verify else os.O_WRONLY
    # No O_TRUNC (the blocks must be overwritten, not released), no O_APPEND (we pwrite);
    # O_NONBLOCK so a FIFO swapped in after the lstat cannot hang the worker.
    flags = access | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=dfd)
    except FileNotFoundError:
        return ShredResult(status="missing")
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
        fs_type = fs_type_of_fd(fd, dir_hint)
        trusted = overwrite_trusted(fs_type)
        try:
            report = overwrite_fd(fd, options, hooks)
        except Refused as r:
            return r.result(fs_type=fs_type, overwrite_trusted=trusted, size=fst.st_size)

        new = _fresh_name(dfd, tmp_name)
        os.rename(name, new, src_dir_fd=dfd, dst_dir_fd=dfd)
        moved = _lstat_at(dfd, new)
        if moved is None or not _same_inode(moved, fst):
            # Someone replaced the entry between our open and the rename: put theirs back.
            if moved is not None:
                os.rename(new, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            raise Refused("replaced")
        # The data is already on disk (fsync per pass); from here on only the unlink has to be
        # durable, so one directory fsync at the end is enough.
        os.ftruncate(fd, 0)
        os.unlink(new, dir_fd=dfd)
        os.fsync(dfd)
        return ShredResult(
            status="shredded",
            size=report.size,
            overwritten=report.overwritten,
            passes=report.passes,
            zero_pass=report.zero_pass,
            verified=report.verified,
            fs_type=fs_type,
            overwrite_trusted=trusted,
            files=1,
        )
    finally:
        os.close(fd)


def _shred_tree(
    parent_fd: int,
    name: str,
    st: os.stat_result,
    dir_hint: str,
    options: ShredOptions,
    hooks: Hooks | None,
) -> ShredResult:
    try:
        dfd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return ShredResult(status="missing")
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("replaced") from None
        raise _os_error(exc) from None
    try:
        if not _same_inode(st, os.fstat(dfd)):
            raise Refused("replaced")
        with os.scandir(dfd) as it:
            names = sorted(e.name for e in it)
        entries = [_shred_at(dfd, n, dir_hint, options, hooks, None) for n in names]
    finally:
        os.close(dfd)

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
    if agg.refused:
        agg.status, agg.reason = "refused", "entries_refused"
        agg.detail = f"{agg.refused} of {len(entries)} entries"
        return agg
    # Empty now: the directory's name goes the same way as a file's.
    new = _fresh_name(parent_fd, None)
    os.rename(name, new, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    os.rmdir(new, dir_fd=parent_fd)
    os.fsync(parent_fd)
    return agg
