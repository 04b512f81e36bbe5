"""Benchmark: the shredder against the disk's limit and against GNU shred, in one run.

    python bench/bench_shred.py [--dir DIR] [--size-mib 1024] [--files 2000] [--file-kib 64]

(a) one big file: ``dd if=/dev/zero bs=1M conv=fsync`` writes it (the disk's sequential write
    limit), then the shredder overwrites and deletes that same file; goal: at least 0.85 of dd.
(b) many small files: ``shred -n 1 -u`` called per file, then the shredder on as many fresh
    files in one process; goal: at least 5x the files/s.
Peak RSS of this process (the shredder runs here; dd and shred are children) must stay < 100 MB.

Both sides run on the same directory, so on the same disk. Run it on an otherwise idle machine:
other load on the disk moves both figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lifecycle.shred.fsinfo import fs_type_of_path, overwrite_trusted
from lifecycle.shred.shredder import ShredOptions, shred_path

MiB = 1 << 20


def _sync() -> None:
    # Start each timed step with no dirty pages left over from the previous one.
    os.sync()


def bench_big(work: Path, size_mib: int) -> tuple[float, float, float]:
    path = work / "big.bin"
    _sync()
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size_mib}", "conv=fsync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dd_s = time.perf_counter() - t0
    _sync()
    # The same file overwritten in place by dd: what the shredder does, without the keystream.
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size_mib}", "conv=notrunc,fsync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dd_inplace_s = time.perf_counter() - t0
    _sync()
    t0 = time.perf_counter()
    result = shred_path(str(path), [work], ShredOptions())
    shred_s = time.perf_counter() - t0
    if result.status != "shredded":
        raise SystemExit(f"shredder did not shred the big file: {result.message}")
    return size_mib / dd_s, size_mib / dd_inplace_s, size_mib / shred_s


def _make_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir()
    payload = os.urandom(size)
    paths = []
    for i in range(count):
        p = folder / f"member-{i:05d}-upload.bin"
        p.write_bytes(payload)
        paths.append(p)
    _sync()
    return paths


def bench_small(work: Path, count: int, size_kib: int) -> tuple[float, float]:
    size = size_kib * 1024
    gnu = _make_files(work / "gnu", count, size)
    t0 = time.perf_counter()
    for p in gnu:
        subprocess.run(["shred", "-n", "1", "-u", str(p)], check=True)
    gnu_s = time.perf_counter() - t0

    ours = _make_files(work / "ours", count, size)
    opts = ShredOptions()
    t0 = time.perf_counter()
    for p in ours:
        if shred_path(str(p), [work], opts).status != "shredded":
            raise SystemExit("shredder did not shred a small file")
    ours_s = time.perf_counter() - t0
    return count / gnu_s, count / ours_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("var"), help="where to write (same disk)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--file-kib", type=int, default=64)
    args = ap.parse_args()
    for tool in ("dd", "shred"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    args.dir.mkdir(parents=True, exist_ok=True)
    need = (args.size_mib + args.files * args.file_kib / 1024) * MiB * 1.1
    if shutil.disk_usage(args.dir).free < need:
        raise SystemExit(f"not enough free space in {args.dir} ({need / MiB:.0f} MiB needed)")
    work = Path(tempfile.mkdtemp(prefix="bench-shred-", dir=args.dir)).resolve()
    try:
        fs = fs_type_of_path(work)
        print(f"directory {work} on {fs} (overwrite trusted: {overwrite_trusted(fs)})")
        print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
        dd_rate, dd_inplace_rate, big_rate = bench_big(work, args.size_mib)
        gnu_rate, small_rate = bench_small(work, args.files, args.file_kib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    big_ratio, small_ratio = big_rate / dd_rate, small_rate / gnu_rate
    rows = [
        (
            f"(a) 1 file of {args.size_mib} MiB",
            f"{big_rate:,.0f} MiB/s",
            f"dd conv=fsync {dd_rate:,.0f} MiB/s",
            f"{big_ratio:.2f}",
            ">= 0.85",
            big_ratio >= 0.85,
        ),
        (
            "    same file, in place",
            "",
            f"dd conv=notrunc,fsync {dd_inplace_rate:,.0f} MiB/s",
            f"{big_rate / dd_inplace_rate:.2f}",
            "(for reference)",
            None,
        ),
        (
            f"(b) {args.files} files of {args.file_kib} KiB",
            f"{small_rate:,.0f} files/s",
            f"shred -n 1 -u {gnu_rate:,.0f} files/s",
            f"{small_ratio:.1f}x",
            ">= 5x",
            small_ratio >= 5,
        ),
        ("peak RSS", f"{rss_mb:.0f} MB", "", "", "< 100 MB", rss_mb < 100),
    ]
    head = ("case", "shredder", "baseline (same run, same disk)", "ratio", "goal", "met")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + "  met")
    for r in rows:
        cells = "  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths, strict=True))
        met = "" if r[5] is None else "yes" if r[5] else "NO"
        print(f"{cells}  {met}")


if __name__ == "__main__":
    main()
