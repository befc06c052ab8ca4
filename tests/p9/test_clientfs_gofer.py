"""The ``start_gofer`` hook: under proxy file access, a gofer (forked by
``start_gofer``) serves the root and each bind mount on its own
socketpair; the sandbox's ends mount through the 9p client filesystem; the
gofer exits once every channel has closed (the sandbox is gone)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyrunsc.core.config import Config
from pyrunsc.core.errors import ConfigError
from pyrunsc.core.mounts import FdDispenser, ResolvedMount, resolve_all
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.sandbox import GoferStart
from pyrunsc.core.spec import Mount, Root, Spec
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.plugins.fs_9p import NinePFS, gofer_mounts
from pyrunsc.plugins.fs_9p.clientfs import NinePSuperblock

from . import test_clientfs_support as support
from .test_clientfs_support import fails

# Fixtures (test_clientfs_support.py).
plugins, mctx = support.plugins, support.mctx


def make_spec(tmp: Path, *, readonly: bool = True) -> Spec:
    rootfs, data = tmp / "rootfs", tmp / "data"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_bytes(b"sandbox\n")
    (rootfs / "data").mkdir()
    data.mkdir()
    (data / "in.txt").write_bytes(b"bind mount\n")
    return Spec(oci_version="1.0.2", root=Root(path=str(rootfs), readonly=readonly),
                mounts=[Mount("/data", "bind", str(data), ("rbind", "rw")), Mount("/scratch", "tmpfs")])


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure we test for
        proc.kill()
        proc.wait()
        raise AssertionError("the gofer outlived its channels") from None


@pytest.fixture
def started(tmp_path: Path, plugins: Plugins) -> Iterator[tuple[Spec, GoferStart, list[ResolvedMount]]]:
    spec = make_spec(tmp_path)
    config = Config(file_access="proxy")
    start = plugins.start_gofer(spec, config, resolve_all(plugins, spec, config))
    assert start is not None and start.process is not None
    try:
        # What the sandbox does with the fds it inherits: number them into the mounts.
        resolved = resolve_all(plugins, spec, config, FdDispenser(start.fds))
        yield spec, start, resolved
    finally:
        if start.process.poll() is None:
            start.process.kill()
            start.process.wait()
        for fd in start.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def test_the_gofer_serves_the_root_and_bind_mounts(
    started: tuple[Spec, GoferStart, list[ResolvedMount]], mctx: MountContext, tmp_path: Path
) -> None:
    _, start, resolved = started
    served = [r for r in resolved if r.fs_name == "9p"]
    assert [r.mount.destination for r in served] == ["/", "/data"]
    assert [f"rfdno={fd}" in r.data for r, fd in zip(served, start.fds, strict=True)] == [True, True]
    sbs = []
    for r in served:
        sb = NinePFS.mount(mctx, r.mount.source or "", r.flags, ",".join(r.data))
        assert isinstance(sb, NinePSuperblock)
        sbs.append(sb)
    start.fds.clear()  # the mounts own them now
    root, data = sbs
    hostname = root.root().lookup("etc").lookup("hostname")
    assert hostname.read(0, 100) == b"sandbox\n"
    # root.readonly: the gofer itself refuses writes, whatever the sentry asks.
    assert root.read_only
    root.read_only = False  # pretend a broken sentry
    fails(errno.EROFS, hostname.write, 0, b"x")
    assert (tmp_path / "rootfs" / "etc" / "hostname").read_bytes() == b"sandbox\n"
    f = data.root().lookup("in.txt")
    assert f.write(0, b"BIND") == 4
    assert (tmp_path / "data" / "in.txt").read_bytes() == b"BIND mount\n"
    assert start.process is not None and start.process.poll() is None
    for sb in sbs:
        sb.close()
    assert wait_exit(start.process) == 0


def test_the_gofer_exits_when_the_sandbox_dies(started: tuple[Spec, GoferStart, list[ResolvedMount]]) -> None:
    _, start, _ = started
    assert start.process is not None
    # A stand-in for the sandbox process: it inherits the ends, we drop ours.
    sandbox = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=start.fds)
    for fd in start.fds:
        os.close(fd)
    start.fds.clear()
    time.sleep(0.5)
    assert start.process.poll() is None  # still serving the live sandbox
    sandbox.send_signal(signal.SIGKILL)
    sandbox.wait()
    assert wait_exit(start.process) == 0


def test_the_gofer_runs_apart_and_holds_only_its_own_ends(
    started: tuple[Spec, GoferStart, list[ResolvedMount]],
) -> None:
    _, start, _ = started
    assert start.process is not None
    pid = start.process.pid
    assert os.getsid(pid) == pid  # its own session: a terminal's Ctrl-C is not for it
    theirs = {os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in start.fds}
    assert ours and not ours & theirs  # socket:[inode] of the sandbox's ends


def test_direct_file_access_needs_no_gofer(tmp_path: Path, plugins: Plugins) -> None:
    spec = make_spec(tmp_path)
    config = Config(file_access="direct")
    resolved = resolve_all(plugins, spec, config)
    assert gofer_mounts(config, resolved) == []
    assert plugins.start_gofer(spec, config, resolved) is None


def test_overlay_makes_the_gofer_read_only(tmp_path: Path, plugins: Plugins, mctx: MountContext) -> None:
    spec = make_spec(tmp_path, readonly=False)
    config = Config(file_access="proxy", overlay=True)
    start = plugins.start_gofer(spec, config, resolve_all(plugins, spec, config))
    assert start is not None and start.process is not None
    try:
        resolved = resolve_all(plugins, spec, config, FdDispenser(start.fds))
        data = next(r for r in resolved if r.mount.destination == "/data")
        sb = NinePFS.mount(mctx, "", data.flags, ",".join(data.data))
        fails(errno.EROFS, sb.root().lookup("in.txt").write, 0, b"x")
        sb.close()
    finally:
        for fd in start.fds[:1] + start.fds[2:]:
            os.close(fd)
        assert wait_exit(start.process) == 0


def test_a_source_that_is_not_a_folder_is_named(tmp_path: Path, plugins: Plugins) -> None:
    spec = make_spec(tmp_path)
    (tmp_path / "file").write_bytes(b"")
    spec.mounts.append(Mount("/f", "bind", str(tmp_path / "file")))
    config = Config(file_access="proxy")
    with pytest.raises(ConfigError, match=r"mount at /f .*is not a folder"):
        plugins.start_gofer(spec, config, resolve_all(plugins, spec, config))
    spec.mounts[-1] = Mount("/g", "bind", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        plugins.start_gofer(spec, config, resolve_all(plugins, spec, config))
