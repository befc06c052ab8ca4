"""Benchmark: the sentry's 9p client filesystem against direct file access.

In one run, on the same host folder (a temporary one):

- **9p**: our client (``NinePFS.mount``, cache=exclusive) on a socketpair to
  a gofer in its own process, started as ``start_gofer`` starts it
  (``pyrunsc gofer-internal --channel FD rw DIR``);
- **direct**: hostfs (``--file-access direct``), the sentry's own host fds;

and measures, through the VFS API (what the syscall layer calls):

- sequential read and write throughput (MB/s) of a FILE_MB file in
  CHUNK-byte read(2)/write(2) calls;
- the cost of ``stat`` of a path four levels deep on a warm cache (µs per
  call: path walk through the dentry cache, permission checks, attributes),
  plus 9p with cache=shared (every step revalidated) for comparison.

It prints each figure and the ratios 9p/direct. The goal (issue 4): a
warm-cache stat through the 9p client costs no more than 2x direct access.

Usage: python benchmarks/p9_client.py [--file-mb 64] [--chunk 1048576] [--stats 20000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Superblock
from pyrunsc.core.vfs.mount import Dentry, Mount, MountNamespace
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_9p import NinePFS
from pyrunsc.plugins.fs_9p.hostfs import HostFSSuperblock

DEEP = "a/b/c/file"


class Subject:
    """One filesystem mounted as the root of its own namespace."""

    def __init__(self, name: str, sb: Superblock, vfs: VirtualFilesystem) -> None:
        self.name, self.sb, self.vfs = name, sb, vfs
        ns = MountNamespace(Mount(sb, Dentry(sb.root()), MountFlags()))
        self.ctx = FSContext(ns, ns.root, ns.root, Credentials())

    def write(self, path: str, size: int, chunk: int) -> float:
        buf = os.urandom(chunk)
        fd = self.vfs.open(self.ctx, self.ctx.root, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        t = time.perf_counter()
        done = 0
        while done < size:
            done += fd.write(buf[: min(chunk, size - done)])
        fd.ops.fsync(fd)
        elapsed = time.perf_counter() - t
        fd.dec_ref()
        return size / elapsed / 1e6

    def read(self, path: str, chunk: int) -> float:
        fd = self.vfs.open(self.ctx, self.ctx.root, path, os.O_RDONLY)
        t = time.perf_counter()
        total = 0
        while data := fd.read(chunk):
            total += len(data)
        elapsed = time.perf_counter() - t
        fd.dec_ref()
        return total / elapsed / 1e6

    def stat_us(self, path: str, n: int) -> float:
        stat = self.vfs.stat
        ctx, root = self.ctx, self.ctx.root
        stat(ctx, root, path)  # warm the cache
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                stat(ctx, root, path)
            best = min(best, (time.perf_counter() - t) / n * 1e6)
        return best


def start_gofer(folder: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """The gofer as ``start_gofer`` runs it: its own process on a socketpair."""
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pyrunsc.core.cli import main; main()", "gofer-internal",
         "--channel", str(theirs.fileno()), "rw", str(folder)],
        pass_fds=[theirs.fileno()], start_new_session=True,
    )
    theirs.close()
    return mine.detach(), proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file-mb", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=1 << 20)
    ap.add_argument("--stats", type=int, default=20000)
    args = ap.parse_args()
    size = args.file_mb << 20
    base = Path(tempfile.mkdtemp(prefix="p9bench-"))
    memfile = MemoryFile(size=1 << 24)
    procs: list[subprocess.Popen[bytes]] = []
    subjects: list[Subject] = []
    try:
        folder = base / "data"
        (folder / "a" / "b" / "c").mkdir(parents=True)
        (folder / DEEP).write_bytes(b"x" * 100)
        vfs = VirtualFilesystem()
        mctx = MountContext(vfs, memfile, filesystems=dict(Plugins().registry.filesystems))
        fds: dict[str, int] = {}
        for mode in ("exclusive", "shared"):
            fd, proc = start_gofer(folder)
            procs.append(proc)
            fds[mode] = fd
        nine = Subject("9p", NinePFS.mount(mctx, str(folder), MountFlags(),
                                           f"trans=fd,rfdno={fds['exclusive']},wfdno={fds['exclusive']}"), vfs)
        shared = Subject("9p shared", NinePFS.mount(mctx, str(folder), MountFlags(),
                                                    f"trans=fd,rfdno={fds['shared']},wfdno={fds['shared']},"
                                                    "cache=shared"), vfs)
        direct = Subject("direct", HostFSSuperblock(str(folder)), vfs)
        subjects = [nine, shared, direct]

        results: dict[str, dict[str, float]] = {}
        for s in (nine, direct):
            r = results[s.name] = {}
            r["write"] = s.write(f"/{s.name}.bin", size, args.chunk)
            r["read"] = max(s.read(f"/{s.name}.bin", args.chunk) for _ in range(2))
            r["stat"] = s.stat_us("/" + DEEP, args.stats)
        shared_stat = shared.stat_us("/" + DEEP, max(args.stats // 20, 100))

        def row(label: str, unit: str, key: str, better: Callable[[float, float], float]) -> None:
            a, b = results["9p"][key], results["direct"][key]
            slowdown = better(a, b)
            verdict = f"{slowdown:.2f}x slower" if slowdown >= 1 else f"{1 / slowdown:.2f}x faster"
            print(f"{label:<28} {a:>12.1f} {b:>12.1f} {unit:<6} ratio 9p/direct {a / b:6.2f}  (9p {verdict})")

        print(f"file {args.file_mb} MiB in {args.chunk}-byte calls; stat of /{DEEP}; gofer in its own process")
        print(f"{'':<28} {'9p':>12} {'direct':>12}")
        row("sequential write", "MB/s", "write", lambda a, b: b / a)
        row("sequential read", "MB/s", "read", lambda a, b: b / a)
        row("stat, warm cache", "µs", "stat", lambda a, b: a / b)
        print(f"{'stat, 9p cache=shared':<28} {shared_stat:>12.1f} {'':>12} µs     "
              f"ratio shared/direct {shared_stat / results['direct']['stat']:6.2f}")
        ratio = results["9p"]["stat"] / results["direct"]["stat"]
        print(f"goal: warm-cache stat through 9p <= 2x direct: {'met' if ratio <= 2 else 'NOT met'} ({ratio:.2f}x)")
    finally:
        for s in subjects:
            close = getattr(s.sb, "close", None)
            if close is not None:
                close()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        memfile.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
