"""Checkpoint images (issue #7): writing and reading an image against ``cp`` of the same bytes.

Usage: ``.venv/bin/python benchmarks/checkpoint_image.py [--sizes 1,64,512] [--rounds R]
[--compression none,zstd] [--dir DIR] [--methods]``

For each size S (MiB), a memory file (a memfd, as the sentry's) gets S MiB of
random, non-zero pages, and the same bytes go to a file in /dev/shm (the
memory-backed stand-in for the memory file). Round-robin in one run, the
best of R rounds after one warm-up round, each step after an ``os.sync()``,
the steps in another order each round (on the test VM, the first disk write
after others is now and then 5-10x slower, whoever makes it; the best time
is the steady one):

- **write**: :func:`write_image` of that memory file into DIR (pages.img and
  checkpoint.img written, fsynced, the folder renamed into place), against
  ``cp`` of the /dev/shm file into DIR followed by ``sync`` of the copy (the
  same bytes made as durable).
- **read**: :func:`open_image` and :meth:`CheckpointImage.load` into a new
  memory file (MAC, sizes and SHA-256 of every part checked, pages copied
  into the memfd; the memfd made and closed outside the timing), against ``cp`` of a disk file of pages.img's size into
  /dev/shm. Both read files that are in the page cache (just written).

The goal is a ratio of at most 1.5 each way. Then **zero pages**: a memory
file with 512 MiB committed but all zeros, plus one page of data, gives a
pages.img of one page. With ``--methods``, the ways of copying a pages file
into a memfd are timed against each other (with and without the SHA-256 that
a restore must compute anyway), as chosen in ``core/checkpoint/pages.py``.

The figures depend on the machine's load: a SHA-256 pass over the bytes is
part of every write and read (timed alone, in memory, in the ``sha256``
column); it runs on a second thread when a CPU is free, inline otherwise.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pyrunsc.core.checkpoint import new_header, open_image, write_image
from pyrunsc.core.checkpoint.pages import Sha256Worker, data_extents
from pyrunsc.core.checkpoint.progress import format_bytes
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile

MiB = 1 << 20
KEY = b"benchmark key, not a secret....."
KERNEL = os.urandom(256 << 10)  # a stand-in for the pickled kernel


def dirty_memfile(size: int) -> MemoryFile:
    mf = MemoryFile()
    off = mf.allocate(size)
    for pos in range(0, size, 8 * MiB):
        data = bytearray(os.urandom(min(8 * MiB, size - pos)))
        for page in range(0, len(data), PAGE_SIZE):  # no page may be all zeros
            data[page] |= 1
        mf.write(off + pos, data)
    return mf


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, after the data of earlier steps went to disk
    (so that their writeback does not slow this one down)."""
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def sha256_of(mf: MemoryFile, size: int) -> None:
    h = hashlib.sha256()
    for pos in range(0, size, 8 * MiB):
        with mf.view[pos : pos + 8 * MiB] as part:
            h.update(part)


def cp_sync(src: Path, dst: Path) -> None:
    sh("cp", str(src), str(dst))
    sh("sync", str(dst))


def header() -> dict[str, object]:
    return new_header(container_id="bench", platform="ptrace", spec_digest="", mounts=[], tasks=[])


def bench_size(mib: int, rounds: int, compressions: list[str], work: Path) -> list[dict[str, object]]:
    size = mib * MiB
    mf = dirty_memfile(size)
    shm_src = Path("/dev/shm") / f"pyrunsc-bench-{os.getpid()}"
    disk_src = work / "src"
    try:
        with open(shm_src, "wb") as f:  # the same bytes, as a file in memory
            f.write(mf.read(0, size))
        shutil.copyfile(shm_src, disk_src)
        times: dict[str, list[float]] = {}
        images: dict[str, Path] = {}

        def record(name: str, seconds: float) -> None:
            times.setdefault(name, []).append(seconds)

        dst = work / "copy"
        shm_dst = Path("/dev/shm") / f"pyrunsc-bench-dst-{os.getpid()}"

        def cp_write() -> None:
            cp_sync(shm_src, dst)

        def cp_read() -> None:
            sh("cp", str(disk_src), str(shm_dst))

        def image_write(comp: str) -> None:
            write_image(images[comp], header(), KERNEL, mf, key=KEY, compression=comp)

        targets: list[MemoryFile] = []

        def image_read(comp: str) -> None:
            open_image(images[comp], key=KEY).load(targets[-1])

        writes = [("cp+sync", cp_write, dst)] + [(f"write {c}", partial(image_write, c), work / f"img-{c}")
                                                 for c in compressions]
        reads = [("cp read", cp_read)] + [(f"read {c}", partial(image_read, c)) for c in compressions]
        for c in compressions:
            images[c] = work / f"img-{c}"
        for r in range(rounds + 1):
            if r == 1:  # the first round warms up: not counted
                times.clear()
            record("sha256", timed(partial(sha256_of, mf, size)))
            # Each round in another order: no step is always the first to write.
            for name, step, output in writes[r % len(writes):] + writes[: r % len(writes)]:
                if output.is_dir():
                    shutil.rmtree(output)
                output.unlink(missing_ok=True)
                record(name, timed(step))
            for name, step in reads[r % len(reads):] + reads[: r % len(reads)]:
                targets.append(MemoryFile())  # made and closed outside the timing, as cp's file is
                try:
                    record(name, timed(step))
                finally:
                    targets.pop().close()
                    shm_dst.unlink(missing_ok=True)
        med = {k: min(v) for k, v in times.items()}
        rows = []
        for comp in compressions:
            img = images[comp]
            stored = sum(p.stat().st_size for p in img.iterdir())
            rows.append({
                "MiB": mib, "compression": comp, "sha256": med["sha256"],
                "cp+sync": med["cp+sync"], "write": med[f"write {comp}"],
                "write ratio": med[f"write {comp}"] / med["cp+sync"],
                "cp read": med["cp read"], "read": med[f"read {comp}"],
                "read ratio": med[f"read {comp}"] / med["cp read"],
                "image": stored,
            })
        return rows
    finally:
        mf.close()
        shm_src.unlink(missing_ok=True)
        disk_src.unlink(missing_ok=True)


def zero_pages(work: Path) -> str:
    mf = MemoryFile()
    try:
        mf.write(mf.allocate(512 * MiB), bytes(512 * MiB))  # committed, all zeros
        mf.write(mf.allocate(PAGE_SIZE), b"\x01" * PAGE_SIZE)
        committed = sum(n for _, n in data_extents(mf.fd, mf.size))
        img = work / "img-zero"
        seconds = timed(lambda: write_image(img, header(), KERNEL, mf, key=KEY))
        pages = img / "pages.img"
        return (f"zero pages: {format_bytes(committed)} committed (512 MiB of zeros + 1 page of data) -> "
                f"pages.img {pages.stat().st_size} bytes ({pages.stat().st_blocks * 512} on disk), "
                f"written in {seconds * 1e3:.0f} ms")
    finally:
        mf.close()


def methods(mib: int, rounds: int, work: Path) -> None:
    """Ways of copying a pages file into a memfd, with and without SHA-256."""
    size = mib * MiB
    src_path = work / "pages"
    with open(src_path, "wb") as f:
        for _ in range(0, size, 8 * MiB):
            f.write(os.urandom(8 * MiB))
    src = os.open(src_path, os.O_RDONLY)
    chunk = 1 * MiB  # as restore_pages reads

    def fresh() -> tuple[int, mmap.mmap]:
        fd = os.memfd_create("bench", 0)
        os.ftruncate(fd, 1 << 40)
        return fd, mmap.mmap(fd, 1 << 40, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def pread_pwrite(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        buf = memoryview(bytearray(chunk))
        for off in range(0, size, chunk):
            n = os.preadv(src, [buf], off)
            if h:
                h.update(buf[:n])
            os.pwrite(fd, buf[:n], off)

    def into_mapping(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        with memoryview(m) as view:
            for off in range(0, size, chunk):
                with view[off : off + chunk] as part:
                    os.preadv(src, [part], off)
                    if h:
                        h.update(part)

    def map_source(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        with mmap.mmap(src, size, mmap.MAP_SHARED, mmap.PROT_READ) as s, memoryview(s) as view:
            for off in range(0, size, chunk):
                with view[off : off + chunk] as part:
                    if h:
                        h.update(part)
                    os.pwrite(fd, part, off)

    def sendfile(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        with memoryview(m) as view:
            for off in range(0, size, chunk):
                n = os.sendfile(fd, src, off, chunk)
                if h:
                    with view[off : off + n] as part:
                        h.update(part)

    def copy_file_range(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        for off in range(0, size, chunk):
            os.copy_file_range(src, fd, chunk, off, off)

    def threaded(fd: int, m: mmap.mmap, h: hashlib._Hash | None) -> None:
        """The same, the SHA-256 on a second thread (chosen when a CPU is free)."""
        hasher = Sha256Worker(threaded=True)
        ring = [memoryview(bytearray(1 * MiB)) for _ in range(4)]
        tickets = [0] * 4
        for i, off in enumerate(range(0, size, 1 * MiB)):
            hasher.wait(tickets[i % 4])
            buf = ring[i % 4]
            n = os.preadv(src, [buf], off)
            os.pwrite(fd, buf[:n], off)
            tickets[i % 4] = hasher.update(buf[:n])
        hasher.hexdigest()

    ways = {"pread+pwrite (used)": pread_pwrite, "preadv into the mapping": into_mapping,
            "mmap pages.img + pwrite": map_source, "sendfile": sendfile, "copy_file_range": copy_file_range,
            "pread+pwrite, sha256 on a 2nd thread": threaded}
    results: dict[str, list[float]] = {}
    cp_times = []
    for _ in range(rounds):
        dst = Path("/dev/shm") / f"pyrunsc-bench-m-{os.getpid()}"
        cp_times.append(timed(partial(sh, "cp", str(src_path), str(dst))))
        dst.unlink()
        for name, way in ways.items():
            for hashed in (False, True):
                if way is threaded and not hashed:
                    continue
                fd, m = fresh()
                label = f"{name}{' + sha256' if hashed and way is not threaded else ''}"
                try:
                    h = hashlib.sha256() if hashed else None
                    results.setdefault(label, []).append(timed(partial(way, fd, m, h)))
                except OSError as e:
                    results.setdefault(label, []).append(float("nan"))
                    if e.errno != errno.EXDEV:
                        raise
                finally:
                    m.close()
                    os.close(fd)
    os.close(src)
    cp = min(cp_times)
    print(f"\ncopying a {mib} MiB pages file into a memfd (best of {rounds}; cp into /dev/shm: {cp * 1e3:.0f} ms)")
    for name, ts in results.items():
        t = min(ts)
        shown = "fails (EXDEV: not across filesystems)" if t != t else f"{t * 1e3:6.0f} ms  {t / cp:4.2f}x cp"
        print(f"  {name:36} {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,64,512", help="MiB of dirty memory, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compression", default="none,zstd")
    ap.add_argument("--dir", type=Path, default=None, help="where images are written (default: a temporary folder)")
    ap.add_argument("--methods", action="store_true", help="also compare ways of copying pages into a memfd")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyrunsc-bench-", dir=args.dir))
    compressions = args.compression.split(",")
    try:
        print(f"{'MiB':>4} {'comp':>5} | {'cp+sync':>8} {'write':>8} {'ratio':>6} | {'cp':>7} {'read':>8} "
              f"{'ratio':>6} | {'sha256':>7} | image")
        for mib in (int(s) for s in args.sizes.split(",")):
            rounds = args.rounds
            for r in bench_size(mib, rounds, compressions, work):
                print(f"{r['MiB']:>4} {r['compression']:>5} | {r['cp+sync'] * 1e3:6.0f}ms "
                      f"{r['write'] * 1e3:6.0f}ms {r['write ratio']:5.2f}x | {r['cp read'] * 1e3:5.0f}ms "
                      f"{r['read'] * 1e3:6.0f}ms {r['read ratio']:5.2f}x | {r['sha256'] * 1e3:5.0f}ms | "
                      f"{format_bytes(int(str(r['image'])))}", flush=True)
        print(zero_pages(work))
        if args.methods:
            methods(512, args.rounds, work)
        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
