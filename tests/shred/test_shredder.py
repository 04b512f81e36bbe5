"""The shredder on real files of the real filesystem (no Celery, no database)."""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.shred import fsinfo, shredder
from lifecycle.shred.shredder import (
    REASONS,
    Hooks,
    ShredOptions,
    allocated_size,
    check_path,
    overwrite_fd,
    release_unlinked,
    shred_path,
    shred_paths,
)

# Recognisable and free of NUL bytes, so any byte of it surviving a zero pass is visible.
PATTERN = "홍길동 상담기록 010-1234-5678 RRN 900101-1234567 | ".encode()
NAME = "홍길동_상담기록.txt"  # file names can be personal data: it must never show in a result


def fill(path: Path, size: int) -> bytes:
    data = (PATTERN * (size // len(PATTERN) + 1))[:size]
    path.write_bytes(data)
    return data


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extents(fd: int) -> list[tuple[int, int, int]] | None:
    """Physical extents (logical, physical, length) via FIEMAP; None where unsupported."""
    import fcntl
    import struct

    count = 64
    buf = bytearray(struct.pack("=QQLLLL", 0, 2**64 - 1, 1, 0, count, 0) + bytes(56 * count))
    try:
        fcntl.ioctl(fd, 0xC020660B, buf)  # FS_IOC_FIEMAP, FIEMAP_FLAG_SYNC
    except OSError:
        return None
    mapped = struct.unpack_from("=L", buf, 20)[0]
    return [struct.unpack_from("=QQQ", buf, 32 + 56 * i) for i in range(mapped)]


def same_position_bytes(a: bytes, b: bytes) -> int:
    return sum(1 for x, y in zip(a, b, strict=False) if x == y)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    return o


# -- the overwrite step alone --------------------------------------------------------------


@pytest.mark.parametrize("size", [300_000, 262_144, 1])
def test_overwrite_reaches_every_byte_in_place_on_every_pass(tmp_path: Path, size: int) -> None:
    path = tmp_path / NAME
    original = fill(path, size)
    ino = path.stat().st_ino
    # Opened before the overwrite: if the shredder wrote a new file (or truncated and wrote
    # elsewhere) this descriptor would still show the old bytes or a different length.
    reader = os.open(path, os.O_RDONLY)
    os.fsync(reader)
    blocks = extents(reader)
    seen: list[tuple[int, str, bytes]] = []
    sizes: list[int] = []
    moved: list[int] = []

    def on_chunk(number: int, done: int) -> None:
        # A truncate-then-write shredder would show a shorter file part-way through a pass.
        sizes.append(os.fstat(reader).st_size)

    def on_pass(number: int, kind: str) -> None:
        seen.append((number, kind, os.pread(reader, size + 8192, 0)))
        # In place means the same disk blocks, not freshly allocated ones (where FIEMAP works).
        if blocks is not None and extents(reader) != blocks:
            moved.append(number)

    writer = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        report = overwrite_fd(
            writer,
            ShredOptions(passes=3, zero=True, chunk_size=64 * 1024),
            Hooks(on_chunk=on_chunk, on_pass=on_pass),
        )
    finally:
        os.close(writer)

    assert [(n, k) for n, k, _ in seen] == [
        (1, "random"),
        (2, "random"),
        (3, "random"),
        (4, "zero"),
    ]
    assert sizes and min(sizes) >= size
    assert moved == [], "a pass wrote to other blocks than the file's own"
    contents = [c for _, _, c in seen]
    # Each pass covered at least the whole file (the block-rounded tail is given back after).
    assert all(len(c) >= size for c in contents)
    randoms = [c[:size] for c in contents[:3]]
    for c in randoms:
        assert c != original[:size]
        assert PATTERN[:8] not in c
        # Random bytes match the original at ~1/256 of the positions, never much more.
        assert same_position_bytes(c, original) <= max(4, size // 100)
    # Whole passes, block-rounded tail included: a 1-byte file's three random bytes collide
    # about once in 85 runs, its three 4 KiB blocks never.
    assert len({bytes(c) for c in contents[:3]}) == 3, "passes must use different keystreams"
    assert contents[3][:size] == bytes(size)

    final = os.pread(reader, size + 8192, 0)
    os.close(reader)
    assert len(final) == size  # same size through the old descriptor
    assert final == bytes(size)
    assert same_position_bytes(final, original) == 0
    assert path.stat().st_ino == ino
    assert report.size == size and report.passes == 3 and report.zero_pass
    assert report.overwritten >= size and report.overwritten % 4096 == 0


def test_overwrite_verify_reads_back_the_last_pass(tmp_path: Path) -> None:
    path = tmp_path / NAME
    fill(path, 200_000)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        report = overwrite_fd(fd, ShredOptions(verify=True, chunk_size=8192))
    finally:
        os.close(fd)
    assert report.verified and report.passes == 1 and not report.zero_pass
    assert PATTERN[:8] not in path.read_bytes()


def test_overwrite_covers_the_allocated_size_of_a_preallocated_file(tmp_path: Path) -> None:
    path = tmp_path / NAME
    fill(path, 10_000)
    fd = os.open(path, os.O_RDWR)
    try:
        # Blocks allocated past the end (KEEP_SIZE) can hold old data too: they are overwritten.
        os.posix_fallocate(fd, 0, 10_000)
        st = os.fstat(fd)
        report = overwrite_fd(fd)
    finally:
        os.close(fd)
    assert report.overwritten == allocated_size(st) >= 10_000
    assert path.stat().st_size == 10_000


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ShredOptions(passes=0)
    with pytest.raises(ValueError):
        ShredOptions(passes=36)
    with pytest.raises(ValueError):
        ShredOptions(chunk_size=1000)
    assert ShredOptions(passes=2, zero=True, verify=True).method == (
        "AES-CTR overwrite ×2 + zero pass + read-back verify + rename + unlink"
    )


# -- the whole deletion --------------------------------------------------------------------


def test_shred_leaves_no_file_and_no_entry_with_the_original_name(root: Path) -> None:
    sub = root / "member-42"
    sub.mkdir()
    path = sub / NAME
    fill(path, 150_000)
    keep = sub / "other.txt"
    fill(keep, 1000)
    reader = os.open(path, os.O_RDONLY)
    release_unlinked()
    fds_before = len(os.listdir("/proc/self/fd"))

    result = shred_path(str(path), [root])

    assert result.status == "shredded", result
    assert result.files == 1 and result.size == 150_000 and result.passes == 1
    assert result.fs_type == fsinfo.fs_type_of_path(sub)
    assert result.overwrite_trusted == fsinfo.overwrite_trusted(result.fs_type)
    assert sorted(os.listdir(sub)) == ["other.txt"]  # no original name, no temporary name
    assert not path.exists()
    # The inode we held open was overwritten and, once its blocks were freed after the
    # result, truncated; the shredder's own descriptor to it is closed by then.
    release_unlinked()
    assert os.fstat(reader).st_size == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert os.fstat(reader).st_nlink == 0
    os.close(reader)
    assert keep.read_bytes() == (PATTERN * 100)[:1000]
    assert NAME not in repr(result)


def test_shred_with_passes_zero_and_verify(root: Path) -> None:
    path = root / NAME
    fill(path, 70_000)
    result = shred_path(str(path), [root], ShredOptions(passes=2, zero=True, verify=True))
    assert result.status == "shredded"
    assert (result.passes, result.zero_pass, result.verified) == (2, True, True)
    assert os.listdir(root) == []


def test_small_files_of_a_batch_get_their_own_keystream_and_verify(root: Path) -> None:
    # Small files of a batch take their pass from one stream, each its own counter range:
    # no block of keystream may land in two files, and read-back must recompute each range.
    paths = [root / f"small-{i}" for i in range(3)]
    for p in paths:
        fill(p, 10_000)
    readers = [os.open(p, os.O_RDONLY) for p in paths]
    seen: list[bytes] = []

    def on_durable(_n: int) -> None:
        seen.extend(os.pread(r, 3 * 4096, 0) for r in readers)

    try:
        results = shred_paths(
            [(str(p), None) for p in paths],
            [root],
            ShredOptions(passes=2, verify=True),
            hooks=Hooks(on_durable=on_durable),
        )
    finally:
        for r in readers:
            os.close(r)
    assert [(r.status, r.passes, r.verified) for r in results] == [("shredded", 2, True)] * 3
    blocks = {s[i : i + 4096] for s in seen for i in range(0, len(s), 4096)}
    assert len(seen) == 3 and len(blocks) == 9, "a keystream block was written twice"
    assert os.listdir(root) == []


def test_a_second_run_finds_the_file_missing(root: Path) -> None:
    path = root / NAME
    fill(path, 5000)
    assert shred_path(str(path), [root]).status == "shredded"
    again = shred_path(str(path), [root])
    assert again.status == "missing" and again.ok and again.reason == ""
    assert shred_path(str(root / "gone" / "deeper" / NAME), [root]).status == "missing"


def test_a_run_killed_after_the_rename_is_finished_by_the_next(root: Path) -> None:
    path = root / NAME
    fill(path, 5000)
    tmp = ".shred-0123456789abcdef0123456789abcdef"
    os.rename(path, root / tmp)  # where a killed run left it
    result = shred_path(str(path), [root], tmp_name=tmp)
    assert result.status == "shredded" and result.resumed
    assert os.listdir(root) == []


def test_shred_uses_the_recorded_temporary_name(root: Path) -> None:
    path = root / NAME
    fill(path, 5000)
    renamed: list[list[str]] = []
    tmp = ".shred-" + "ab" * 16

    def on_pass(_n: int, _k: str) -> None:
        renamed.append(os.listdir(root))

    result = shred_path(str(path), [root], tmp_name=tmp, hooks=Hooks(on_pass=on_pass))
    assert result.status == "shredded" and not result.resumed
    assert renamed == [[NAME]]
    with pytest.raises(ValueError):
        shred_path(str(root / "x"), [root], tmp_name="a/b")


def test_recursive_shreds_a_tree_and_removes_its_directories(root: Path) -> None:
    top = root / "member-7"
    (top / "a" / "b").mkdir(parents=True)
    for p in (top / NAME, top / "a" / "1.bin", top / "a" / "b" / "2.bin"):
        fill(p, 9000)
    (top / "empty").mkdir()
    result = shred_path(str(top), [root], ShredOptions(recursive=True))
    assert result.status == "shredded", result
    assert result.files == 3 and result.size == 27_000 and result.refused == 0
    assert os.listdir(root) == []


def test_recursive_refuses_bad_entries_and_keeps_them_intact(root: Path, outside: Path) -> None:
    top = root / "member-8"
    top.mkdir()
    fill(top / "plain.bin", 4000)
    secret = outside / NAME
    fill(secret, 4000)
    before = digest(secret)
    (top / "link").symlink_to(secret)
    (top / "linkdir").symlink_to(outside, target_is_directory=True)
    os.link(secret, top / "hard")
    os.mkfifo(top / "fifo")

    result = shred_path(str(top), [root], ShredOptions(recursive=True))

    assert result.status == "refused" and result.reason == "entries_refused"
    assert result.files == 1 and result.refused == 4
    reasons = sorted(e.reason for e in result.entries)
    assert reasons == ["", "fifo", "hard_links", "symlink", "symlink"]
    assert sorted(os.listdir(top)) == ["fifo", "hard", "link", "linkdir"]
    assert digest(secret) == before and os.listdir(outside) == [NAME]
    assert (top / "link").is_symlink() and (top / "linkdir").is_symlink()
    assert NAME not in repr(result)


# -- refusals leave everything as it was ---------------------------------------------------


def _assert_refused_untouched(result, reason: str, *files: Path, digests: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert result.status == "refused", result
    assert result.reason == reason, result
    assert result.reason in REASONS
    assert NAME not in repr(result) and NAME not in result.message
    for f, d in zip(files, digests, strict=True):
        assert f.exists() or f.is_symlink()
        assert digest(f) == d


def test_refuses_a_path_outside_the_roots(root: Path, outside: Path) -> None:
    victim = outside / NAME
    fill(victim, 5000)
    d = digest(victim)
    r = shred_path(str(victim), [root])
    _assert_refused_untouched(r, "outside_roots", victim, digests=[d])
    # A sibling directory sharing the root's name as a prefix is outside too.
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    fill(sibling / NAME, 10)
    assert shred_path(str(sibling / NAME), [root]).reason == "outside_roots"


def test_refuses_dot_dot_even_when_it_would_land_inside(root: Path, outside: Path) -> None:
    victim = outside / NAME
    fill(victim, 5000)
    inside = root / NAME
    fill(inside, 5000)
    d_out, d_in = digest(victim), digest(inside)
    (root / "sub").mkdir()
    escaping = f"{root}/sub/../../outside/{NAME}"
    _assert_refused_untouched(shred_path(escaping, [root]), "dot_dot", victim, digests=[d_out])
    staying = f"{root}/sub/../{NAME}"
    _assert_refused_untouched(shred_path(staying, [root]), "dot_dot", inside, digests=[d_in])


def test_refuses_relative_empty_and_root_paths(root: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    original = fill(root / NAME, 100)
    monkeypatch.chdir(root)
    assert shred_path(NAME, [root]).reason == "not_absolute"
    assert shred_path("", [root]).reason == "invalid_path"
    assert shred_path(f"{root}/a\x00b", [root]).reason == "invalid_path"
    assert shred_path(str(root), [root], ShredOptions(recursive=True)).reason == "is_root"
    assert shred_path(str(root) + "/", [root]).reason == "is_root"
    assert (root / NAME).read_bytes() == original


def test_refuses_when_the_root_does_not_exist(tmp_path: Path) -> None:
    r = shred_path(str(tmp_path / "nope" / NAME), [tmp_path / "nope"])
    assert r.status == "refused" and r.reason == "root_missing"


def test_refuses_a_symlink_and_leaves_its_target(root: Path, outside: Path) -> None:
    target = outside / NAME
    fill(target, 5000)
    inner = root / "inner.bin"
    fill(inner, 5000)
    d, d_inner = digest(target), digest(inner)
    (root / "to-outside").symlink_to(target)
    (root / "to-inside").symlink_to(inner)
    (root / "dangling").symlink_to(root / "nothing")
    _assert_refused_untouched(
        shred_path(str(root / "to-outside"), [root]), "symlink", target, digests=[d]
    )
    _assert_refused_untouched(
        shred_path(str(root / "to-inside"), [root]), "symlink", inner, digests=[d_inner]
    )
    assert shred_path(str(root / "dangling"), [root]).reason == "symlink"
    assert (root / "to-outside").is_symlink() and (root / "dangling").is_symlink()


def test_refuses_a_symlinked_parent_directory(root: Path, outside: Path) -> None:
    victim = outside / NAME
    fill(victim, 5000)
    d = digest(victim)
    (root / "uploads").symlink_to(outside, target_is_directory=True)
    r = shred_path(str(root / "uploads" / NAME), [root])
    _assert_refused_untouched(r, "symlinked_parent", victim, digests=[d])
    # ...also deeper, and also for a check before enqueueing.
    (outside / "deep").mkdir()
    fill(outside / "deep" / NAME, 50)
    r = shred_path(str(root / "uploads" / "deep" / NAME), [root])
    assert r.reason == "symlinked_parent"
    assert check_path(str(root / "uploads" / NAME), [root]).reason == "symlinked_parent"  # type: ignore[union-attr]


def test_refuses_a_parent_that_is_a_file(root: Path) -> None:
    fill(root / "file", 10)
    assert shred_path(str(root / "file" / NAME), [root]).reason == "parent_not_directory"


def test_refuses_files_with_other_hard_links(root: Path, outside: Path) -> None:
    a = root / NAME
    fill(a, 5000)
    d = digest(a)
    os.link(a, root / "b")
    _assert_refused_untouched(shred_path(str(a), [root]), "hard_links", a, digests=[d])
    _assert_refused_untouched(
        shred_path(str(root / "b"), [root]), "hard_links", root / "b", digests=[d]
    )
    # A link from outside the root makes the file just as shared.
    c = root / "c"
    fill(c, 5000)
    os.link(c, outside / "c-link")
    _assert_refused_untouched(shred_path(str(c), [root]), "hard_links", c, digests=[digest(c)])
    assert shred_path(str(c), [root]).detail == "2 links"


def test_refuses_a_directory_without_recursive(root: Path) -> None:
    d = root / "member-9"
    d.mkdir()
    fill(d / NAME, 100)
    h = digest(d / NAME)
    _assert_refused_untouched(shred_path(str(d), [root]), "directory", d / NAME, digests=[h])
    assert check_path(str(d), [root]).reason == "directory"  # type: ignore[union-attr]
    assert check_path(str(d), [root], recursive=True) is None


def test_refuses_a_fifo(root: Path) -> None:
    os.mkfifo(root / "pipe")
    r = shred_path(str(root / "pipe"), [root])
    assert r.status == "refused" and r.reason == "fifo"
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)


def test_refuses_a_socket(root: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(root)  # AF_UNIX paths are limited to ~108 bytes: bind a relative name
    s = socket.socket(socket.AF_UNIX)
    s.bind("sock")
    try:
        r = shred_path(str(root / "sock"), [root])
        assert r.status == "refused" and r.reason == "socket"
        assert stat.S_ISSOCK(os.lstat(root / "sock").st_mode)
    finally:
        s.close()


def test_refuses_device_files(root: Path) -> None:
    (root / "null-link").symlink_to("/dev/null")
    assert shred_path(str(root / "null-link"), [root]).reason == "symlink"
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    r = shred_path(str(root / "null"), [root])
    assert r.status == "refused" and r.reason == "device"
    assert stat.S_ISCHR(os.lstat(root / "null").st_mode)


def test_a_keystream_chunk_stays_intact_while_the_next_is_computed() -> None:
    # The writer thread still writes chunk i while chunk i+1 is computed: they must not share
    # a buffer.
    ks = shredder._Keystream(4096)
    ks.start(os.urandom(16), os.urandom(16))
    first = ks.take(4096)
    kept = bytes(first)
    second = ks.take(4096)
    assert bytes(first) == kept
    assert bytes(second) != kept
    assert bytes(ks.take(4096)) not in (kept, bytes(second))


@pytest.mark.parametrize("spare_core", [True, False], ids=["writer-thread", "one-thread"])
def test_a_file_of_many_chunks_gets_fresh_keystream_in_every_chunk(
    root: Path, monkeypatch: pytest.MonkeyPatch, spare_core: bool
) -> None:
    # Chunks are computed into two alternating buffers while the writer thread writes the
    # previous one: a buffer reused too early would show as a repeated or stale chunk. On a
    # busy machine (no spare core) the computing thread writes each chunk itself.
    monkeypatch.setattr(shredder, "_spare_core", lambda: spare_core)
    writer_used: list[bool] = []
    real_writer = shredder._Batch._writer

    def writer(self: shredder._Batch) -> object:
        writer_used.append(True)
        return real_writer(self)

    monkeypatch.setattr(shredder._Batch, "_writer", writer)
    chunk = 64 * 1024
    path = root / NAME
    original = fill(path, chunk * 5 + 1000)
    reader = os.open(path, os.O_RDONLY)
    seen: list[bytes] = []
    ends: list[int] = []

    def on_pass(number: int, kind: str) -> None:
        seen.append(os.pread(reader, len(original), 0))

    try:
        r = shred_path(
            str(path),
            [root],
            ShredOptions(chunk_size=chunk),
            hooks=Hooks(on_chunk=lambda n, done: ends.append(done), on_pass=on_pass),
        )
    finally:
        os.close(reader)
    assert r.status == "shredded", r
    assert ends == [chunk, 2 * chunk, 3 * chunk, 4 * chunk, 5 * chunk, r.overwritten]
    [written] = seen
    pieces = [written[i : i + chunk] for i in range(0, len(original), chunk)]
    assert len({bytes(p) for p in pieces}) == len(pieces), "a chunk was written twice"
    for i, piece in enumerate(pieces):
        # Random bytes agree with random bytes at 1 position in 256: about 4 of the last
        # piece's 1,000. The bound leaves that chance (and 256 of 65,536) far below, while a
        # chunk left unwritten would agree everywhere.
        assert same_position_bytes(piece, original[i * chunk : (i + 1) * chunk]) <= max(
            16, len(piece) // 64
        ), f"chunk {i} still holds the original"
    assert bool(writer_used) == spare_core


def test_spare_core_follows_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shredder.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(shredder.os, "getloadavg", lambda: (0.3, 0.0, 0.0))
    assert shredder._spare_core()
    monkeypatch.setattr(shredder.os, "getloadavg", lambda: (6.5, 0.0, 0.0))
    assert not shredder._spare_core()


def test_refuses_a_file_that_grows_during_the_overwrite(root: Path) -> None:
    path = root / NAME
    fill(path, 64 * 1024 * 4)
    appended: list[int] = []

    def on_chunk(number: int, done: int) -> None:
        if not appended:  # another process appends while we are half-way through
            with open(path, "ab") as fh:
                fh.write(b"more personal data\n")
            appended.append(done)

    r = shred_path(str(path), [root], ShredOptions(chunk_size=64 * 1024), hooks=Hooks(on_chunk))
    assert r.status == "refused" and r.reason == "size_changed", r
    assert appended == [64 * 1024]
    # Not renamed, not unlinked: a file in use is left for an operator to look at.
    assert os.listdir(root) == [NAME]
    assert path.read_bytes().endswith(b"more personal data\n")


def test_refuses_a_file_that_shrinks_during_the_overwrite(root: Path) -> None:
    path = root / NAME
    fill(path, 64 * 1024 * 4)

    def on_chunk(number: int, done: int) -> None:
        os.truncate(path, 1000)

    r = shred_path(str(path), [root], ShredOptions(chunk_size=64 * 1024), hooks=Hooks(on_chunk))
    assert r.reason == "size_changed" and os.listdir(root) == [NAME]


def test_check_path_touches_nothing(root: Path, outside: Path) -> None:
    original = fill(root / NAME, 100)
    assert check_path(str(root / NAME), [root]) is None
    assert check_path(str(root / "nope"), [root]).status == "missing"  # type: ignore[union-attr]
    assert check_path(str(outside / NAME), [root]).reason == "outside_roots"  # type: ignore[union-attr]
    assert (root / NAME).read_bytes() == original


def test_several_roots_and_a_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    alias = tmp_path / "alias-root"
    alias.symlink_to(real, target_is_directory=True)
    other = tmp_path / "other-root"
    other.mkdir()
    fill(real / "a", 100)
    fill(other / "b", 100)
    roots = [other, alias]
    # The operator configured the alias: both spellings of the path are inside it.
    assert shred_path(str(alias / "a"), roots).status == "shredded"
    fill(real / "a", 100)
    assert shred_path(str(real / "a"), roots).status == "shredded"
    assert shred_path(str(other / "b"), roots).status == "shredded"


# -- filesystem detection ------------------------------------------------------------------


def test_fs_type_of_tmpfs_is_not_trusted() -> None:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    fs = fsinfo.fs_type_of_path("/dev/shm")
    assert fs == "tmpfs"
    assert not fsinfo.overwrite_trusted(fs)


@pytest.mark.parametrize(
    ("fs", "trusted"),
    [
        ("ext4", True),
        ("xfs", True),
        ("btrfs", False),
        ("zfs", False),
        ("overlay", False),
        ("tmpfs", False),
        ("nfs", False),
        ("cifs", False),
        ("fuse.sshfs", False),
        ("unknown:0x1234", False),
    ],
)
def test_overwrite_trusted_table(fs: str, trusted: bool) -> None:
    assert fsinfo.overwrite_trusted(fs) is trusted


def test_mountinfo_longest_match_and_escapes(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "30 22 0:40 / /srv/files rw - btrfs /dev/sdb rw\n"
        "31 30 0:41 / /srv/files/my\\040uploads rw - overlay overlay rw\n"
        "32 22 0:42 / /srv/filesystem rw - xfs /dev/sdc rw\n"
    )
    look = fsinfo.fs_type_from_mountinfo
    assert look("/srv/files/a/b", str(info)) == "btrfs"
    assert look("/srv/files/my uploads/x", str(info)) == "overlay"
    assert look("/srv/filesystem/x", str(info)) == "xfs"
    assert look("/etc/passwd", str(info)) == "ext4"
    assert look("/x", str(tmp_path / "missing")) == "unknown"


# -- batches ---------------------------------------------------------------------------------


def test_a_batch_overwrites_and_flushes_every_file_before_renaming_any(root: Path) -> None:
    dirs = [root / "m1", root / "m2"]
    paths = []
    for d in dirs:
        d.mkdir()
        for i in range(5):
            p = d / f"{i}-{NAME}"
            fill(p, 20_000 + i)
            paths.append(p)
    readers = [os.open(p, os.O_RDONLY) for p in paths]
    seen: list[tuple[int, list[list[str]], list[bool]]] = []

    def on_durable(n: int) -> None:
        # Every file still under its own name, and already overwritten.
        seen.append(
            (
                n,
                [sorted(os.listdir(d)) for d in dirs],
                [PATTERN[:12] in os.pread(fd, 30_000, 0) for fd in readers],
            )
        )

    results = shred_paths(
        [(str(p), None) for p in paths], [root], hooks=Hooks(on_durable=on_durable)
    )

    assert [r.status for r in results] == ["shredded"] * 10
    assert [r.size for r in results] == [20_000 + i for i in range(5)] * 2
    ((n, listings, patterns),) = seen  # one flush round for the whole batch
    assert n == 10
    assert listings == [sorted(f"{i}-{NAME}" for i in range(5))] * 2
    assert patterns == [False] * 10
    assert [os.listdir(d) for d in dirs] == [[], []]
    release_unlinked()  # the blocks are freed after the result, in the background
    for fd in readers:
        assert os.fstat(fd).st_nlink == 0 and os.fstat(fd).st_size == 0
        os.close(fd)


def test_batches_fit_a_low_hard_descriptor_limit(root: Path) -> None:
    # A worker whose hard limit is low (300 here) must cut the batch, not fail with EMFILE.
    for i in range(100):
        fill(root / f"f{i:03d}", 100)
    code = (
        "import sys\n"
        "from lifecycle.shred.shredder import Hooks, shred_paths\n"
        "rounds = []\n"
        "paths = [(f'{sys.argv[1]}/f{i:03d}', None) for i in range(100)]\n"
        "rs = shred_paths(paths, [sys.argv[1]], hooks=Hooks(on_durable=rounds.append))\n"
        "print(rounds, sorted({r.status for r in rs}))\n"
    )

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    out = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        preexec_fn=low_limit,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[44, 44, 12] ['shredded']"
    assert os.listdir(root) == []


def test_a_big_batch_is_cut_into_rounds_within_the_descriptor_budget(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shredder, "BATCH_FILES", 8)
    paths = [root / f"f{i:02d}" for i in range(30)]
    for p in paths:
        fill(p, 3000)
    rounds: list[int] = []
    results = shred_paths(
        [(str(p), None) for p in paths], [root], hooks=Hooks(on_durable=rounds.append)
    )
    assert all(r.status == "shredded" for r in results)
    assert rounds == [8, 8, 8, 6]
    assert os.listdir(root) == []


def test_a_batch_mixes_refusals_and_shreds_each_on_its_own(root: Path, outside: Path) -> None:
    good = root / "good"
    fill(good, 1000)
    hard = root / "hard"
    h = fill(hard, 1000)
    os.link(hard, outside / "other-name")
    results = shred_paths(
        [
            (str(good), None),
            (str(hard), None),
            (str(outside / "x"), None),
            (str(root / "no"), None),
        ],
        [root],
    )
    assert [(r.status, r.reason) for r in results] == [
        ("shredded", ""),
        ("refused", "hard_links"),
        ("refused", "outside_roots"),
        ("missing", ""),
    ]
    assert hard.read_bytes() == h and os.listdir(root) == ["hard"]


def test_a_file_named_twice_in_a_batch_is_shredded_once(root: Path) -> None:
    d = root / "member"
    d.mkdir()
    fill(d / "a.bin", 1000)
    results = shred_paths(
        [(str(d / "a.bin"), None), (str(d), None)], [root], ShredOptions(recursive=True)
    )
    assert results[0].status == "shredded" and results[1].status == "shredded"
    assert results[1].files == 0 and os.listdir(root) == []


# -- non-UTF-8 names -------------------------------------------------------------------------

RAW_NAME = b"\xff\xfe-" + NAME.encode("euc-kr", errors="replace")  # a legacy-encoded upload


def test_non_utf8_names_are_paths_like_any_other(root: Path) -> None:
    raw_root = os.fsencode(root)
    path = raw_root + b"/" + RAW_NAME
    with open(path, "wb") as fh:
        fh.write(PATTERN * 100)
    # As bytes, and as the str the command line gives (surrogate escapes).
    assert shred_path(path, [root]).status == "shredded"
    with open(path, "wb") as fh:
        fh.write(PATTERN * 100)
    assert shred_path(os.fsdecode(path), [root]).status == "shredded"
    assert os.listdir(raw_root) == []
    tree = raw_root + b"/" + RAW_NAME + b"-dir"
    os.makedirs(tree + b"/" + RAW_NAME)
    with open(tree + b"/" + RAW_NAME + b"/" + RAW_NAME, "wb") as fh:
        fh.write(PATTERN)
    r = shred_path(tree, [root], ShredOptions(recursive=True))
    assert r.status == "shredded" and r.files == 1
    assert os.listdir(raw_root) == []


# -- never a renamed entry left behind -------------------------------------------------------


def _no_shred_names(d: Path) -> None:
    assert [n for n in os.listdir(d) if n.startswith(".shred-")] == []


def test_a_file_swapped_for_a_hard_link_is_refused_and_no_renamed_entry_remains(
    root: Path, outside: Path
) -> None:
    secret = outside / "other-site-data.bin"
    h = fill(secret, 8000)
    victim = root / NAME
    fill(victim, 8000)

    def swap(_n: int, _k: str) -> None:
        # After our open and overwrite: the file is replaced by a link to an outside file.
        os.unlink(victim)
        os.link(secret, victim)

    def relink() -> None:
        # Right after our rename moved the planted link away, the attacker plants it again.
        os.link(secret, victim)

    r = shred_path(str(victim), [root], hooks=Hooks(on_pass=swap, on_renamed=relink))

    assert r.status == "refused" and r.reason == "replaced", r
    _no_shred_names(root)
    assert os.listdir(root) == [NAME]
    assert os.path.samefile(victim, secret)
    assert secret.read_bytes() == h
    assert os.stat(secret).st_nlink == 2


def test_a_swapped_entry_gets_its_name_back(root: Path, outside: Path) -> None:
    secret = outside / "other.bin"
    h = fill(secret, 8000)
    victim = root / NAME
    fill(victim, 8000)

    def swap(_n: int, _k: str) -> None:
        os.unlink(victim)
        os.link(secret, victim)

    r = shred_path(str(victim), [root], hooks=Hooks(on_pass=swap))
    assert r.reason == "replaced"
    assert os.listdir(root) == [NAME] and os.path.samefile(victim, secret)
    assert secret.read_bytes() == h


def test_a_resumed_entry_that_is_refused_gets_its_name_back(root: Path, outside: Path) -> None:
    path = root / NAME
    h = fill(path, 5000)
    tmp = ".shred-" + "cd" * 16
    os.rename(path, root / tmp)  # a killed run renamed it...
    os.link(root / tmp, outside / "link")  # ...and then it gained a second name
    r = shred_path(str(path), [root], tmp_name=tmp)
    assert r.status == "refused" and r.reason == "hard_links" and r.resumed
    assert os.listdir(root) == [NAME] and path.read_bytes() == h


def test_a_directory_that_gains_an_entry_keeps_its_name(root: Path) -> None:
    top = root / "member-3"
    top.mkdir()
    fill(top / "a.bin", 3000)

    def late(_n: int) -> None:
        fill(top / "late.bin", 10)  # the website writes a new upload while we empty the folder

    r = shred_path(str(top), [root], ShredOptions(recursive=True), hooks=Hooks(on_durable=late))
    assert r.status == "refused" and r.reason == "dir_not_empty", r
    _no_shred_names(root)
    assert os.listdir(root) == ["member-3"] and os.listdir(top) == ["late.bin"]


def test_a_rerun_finishes_the_renamed_file_and_the_new_one_under_the_name(root: Path) -> None:
    path = root / NAME
    fill(path, 5000)
    tmp = ".shred-" + "ef" * 16
    os.rename(path, root / tmp)  # a killed run had renamed it...
    fill(path, 7000)  # ...and the website has written a new file under the name since
    r = shred_path(str(path), [root], tmp_name=tmp)
    assert r.status == "shredded" and r.files == 2 and r.resumed
    assert os.listdir(root) == []
