"""Which filesystem holds a file, and whether overwriting it in place can be trusted.

Overwriting a file's blocks only destroys the old data when the filesystem writes in place.
Copy-on-write and log-structured filesystems (btrfs, zfs, bcachefs, f2fs, nilfs), layered ones
(overlay, fuse), memory-backed ones (tmpfs can be swapped out) and network filesystems (the
server decides) write the new bytes elsewhere and leave the old ones behind; the ledger says so.

The type comes from ``fstatfs`` on the open descriptor (the same inode we overwrite, no path
parsing, no race with mounts); ``/proc/self/mountinfo`` is the fallback when the magic number is
unknown, because it names FUSE subtypes and filesystems newer than this table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache

# f_type magic numbers from linux/magic.h (and the filesystems' own headers for zfs/fuse).
MAGIC: dict[int, str] = {
    0xEF53: "ext4",  # ext2/ext3/ext4 share one magic
    0x58465342: "xfs",
    0x3153464A: "jfs",
    0x52654973: "reiserfs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
    0x482B: "hfsplus",
    0x9123683E: "btrfs",
    0x2FC12FC1: "zfs",
    0xCA451A4E: "bcachefs",
    0xF2F52010: "f2fs",
    0x3434: "nilfs",
    0x794C7630: "overlay",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x517B: "smb",
    0x65735546: "fuse",
    0x00C36400: "ceph",
    0x01161970: "gfs2",
    0x5346414F: "afs",
    0x01021997: "9p",
    0x73717368: "squashfs",
    0xF15F: "ecryptfs",
}

# Filesystems known to rewrite a regular file's existing blocks in place. Anything not listed
# (including unknown types) is reported as untrusted: claiming more than we know would be the
# worse error in a destruction ledger.
IN_PLACE = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "jfs", "reiserfs", "vfat", "msdos", "exfat", "hfsplus"}
)


def overwrite_trusted(fs_type: str) -> bool:
    """True when overwriting a file's blocks on ``fs_type`` replaces the old data on the medium.

    Even then, SSD wear levelling and snapshots can keep old copies: storage encryption is the
    real protection, and the README says so.
    """
    return fs_type in IN_PLACE


class _StatFs(ctypes.Structure):
    # Only f_type is read; the rest of struct statfs is padding big enough for every arch.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        lib.fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(_StatFs)]
        lib.fstatfs.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


def fs_magic(fd: int) -> int | None:
    """``f_type`` of the filesystem holding ``fd``, or None when statfs is unavailable."""
    lib = _libc()
    if lib is None:
        return None
    buf = _StatFs()
    if lib.fstatfs(fd, ctypes.byref(buf)) != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def fs_type_from_mountinfo(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The fstype of the longest mount point containing ``path`` (already resolved)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return "unknown"
    best, best_len = "unknown", -1
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mount_point = _unescape(fields[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= best_len:
            # Later lines win on equal length: they are mounted over the earlier ones.
            fstype = right.split()[0] if right.split() else "unknown"
            best, best_len = fstype, len(mount_point)
    return best


def fs_type_of_fd(fd: int, path_hint: str | None = None) -> str:
    """Name of the filesystem holding the open descriptor ``fd``.

    ``path_hint`` (the resolved directory) is only used when statfs gives no known magic.
    """
    magic = fs_magic(fd)
    if magic is not None and magic in MAGIC and MAGIC[magic] != "fuse":
        return MAGIC[magic]
    if path_hint is not None:
        found = fs_type_from_mountinfo(path_hint)
        if found != "unknown":
            return found
    if magic is not None:
        return MAGIC.get(magic, f"unknown:{magic:#x}")
    return "unknown"


def fs_type_of_path(path: str | os.PathLike[str]) -> str:
    """Filesystem type of an existing path (used by the CLI and the benchmark)."""
    real = os.path.realpath(path)
    fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fs_type_of_fd(fd, real)
    finally:
        os.close(fd)
