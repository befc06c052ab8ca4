"""Benchmark: our gofer against diod, with diod's own load generator.

Runs ``diodload`` (Debian package ``diod``) against

- our standalone gofer, ``pyrunsc gofer --serve DIR --listen unix:... --aname ctl``,
- diod, ``diod -f -n -N -l <unix socket> -e ctl -e DIR``,

in the same run, on unix sockets in a temporary folder (nothing listens on a
network), and prints ops/s and the ratio ours/diod.

``diodload`` always attaches the aname ``ctl`` and uses the files ``zero``
(read) and ``null`` (written), msize bytes at offset 0 per op; ``-g`` makes it
a stream of Tgetattr on ``null``. diod serves ``ctl`` from memory (a synthetic
file system), so against diod no disk file is touched; our gofer serves
``ctl`` from DIR, where the benchmark puts real ``zero`` and ``null`` files.
So a second comparison uses the same real files on both: the Python client of
``pyrunsc.plugins.fs_9p.p9`` in THREADS threads, one channel each, doing
Tgetattr and 64 KiB Treads of DIR/zero (aname DIR on both servers); the
client's own cost is in both figures.

Usage: python benchmarks/p9_gofer.py [--seconds 5] [--threads 16] [--msize 65536]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyrunsc.plugins.fs_9p.p9 import Client
from pyrunsc.plugins.fs_9p.p9 import messages as m


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        sys.exit(f"{name} not found: install Debian's diod package")
    return path


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with status {proc.returncode}")
        if path.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(path))
                return
            except OSError:
                pass
        time.sleep(0.05)
    sys.exit(f"{what} did not listen on {path}")


@contextmanager
def running(cmd: list[str], sock: Path, what: str) -> Iterator[None]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_socket(sock, proc, what)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)


def diodload(sock: Path, seconds: int, threads: int, msize: int, getattr_only: bool) -> int:
    cmd = [tool("diodload"), "-s", str(sock), "-r", str(seconds), "-n", str(threads), "-m", str(msize)]
    if getattr_only:
        cmd.append("-g")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = r.stderr + r.stdout
    mo = re.search(r"(\d+) ops/s", out)
    if r.returncode != 0 or not mo or "error" in out.lower() or "open " in out:
        sys.exit(f"diodload failed against {sock}: {out.strip()}")
    return int(mo[1])


def client_load(sock: Path, aname: str, seconds: float, threads: int, op: str) -> int:
    """Ops/s of ``threads`` Python clients, one channel each, on DIR/zero."""
    count = [0] * threads
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock))
            with Client(s, msize=65536 + m.IOHDRSZ, timeout=30) as c:
                c.version()
                root = c.alloc_fid()
                c.attach(root, aname, n_uname=os.geteuid())
                f = c.walk_path(root, "zero")
                if op == "read":
                    c.lopen(f, m.DOTL_RDONLY)
                call: Callable[[], object] = (
                    (lambda: c.getattr(f, m.GETATTR_BASIC)) if op == "getattr" else (lambda: c.read(f, 0, 65536))
                )
                n = 0
                while time.monotonic() < stop:
                    for _ in range(50):
                        call()
                    n += 50
                count[i] = n
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        sys.exit(f"client load against {sock} failed: {errors[0]!r}")
    return int(sum(count) / seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="run time of each measurement (s)")
    ap.add_argument("--threads", type=int, default=16, help="diodload threads (-n)")
    ap.add_argument("--msize", type=int, default=65536, help="msize for diodload (-m)")
    ap.add_argument("--client-threads", type=int, default=4, help="threads of the Python client load")
    args = ap.parse_args()
    diod = tool("diod")

    with tempfile.TemporaryDirectory(prefix="p9bench-") as tmp:
        base = Path(tmp)
        folder = base / "export"
        folder.mkdir()
        (folder / "zero").write_bytes(bytes(2 * args.msize))
        (folder / "null").write_bytes(b"")
        ours_sock, diod_sock = base / "ours.sock", base / "diod.sock"
        ours_cmd = [sys.executable, "-c", "from pyrunsc.core.cli import main; main()", "gofer",
                    "--serve", str(folder), "--listen", f"unix:{ours_sock}", "--aname", "ctl"]
        diod_cmd = [diod, "-f", "-n", "-N", "-L", "stderr", "-l", str(diod_sock), "-e", "ctl", "-e", str(folder)]

        results: dict[str, dict[str, int]] = {}
        with running(ours_cmd, ours_sock, "pyrunsc gofer"), running(diod_cmd, diod_sock, "diod"):
            for name, sock in (("ours", ours_sock), ("diod", diod_sock)):
                r = results.setdefault(name, {})
                r["diodload read+write"] = diodload(sock, args.seconds, args.threads, args.msize, False)
                r["diodload getattr"] = diodload(sock, args.seconds, args.threads, args.msize, True)
                r["py-client getattr"] = client_load(sock, str(folder), args.seconds, args.client_threads, "getattr")
                r["py-client 64K read"] = client_load(sock, str(folder), args.seconds, args.client_threads, "read")

    print(f"9P gofer benchmark: {args.seconds} s each, diodload -n {args.threads} -m {args.msize}, "
          f"Python client {args.client_threads} threads; {os.cpu_count()} CPUs")
    print(f"{'load':<22}{'ours ops/s':>12}{'diod ops/s':>12}{'ours/diod':>11}")
    for load in results["ours"]:
        o, d = results["ours"][load], results["diod"][load]
        print(f"{load:<22}{o:>12}{d:>12}{o / d if d else float('nan'):>11.2f}")
    print("(diodload against diod uses diod's in-memory ctl files; against ours, real files in the folder;"
          " the py-client rows use the same real file on both)")


if __name__ == "__main__":
    main()
