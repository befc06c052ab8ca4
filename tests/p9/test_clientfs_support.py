"""Shared pieces of the 9p client filesystem tests (no tests here): a host
folder served by our gofer on a socketpair, mounted through ``NinePFS.mount``
at /m of a namespace whose root is a tmpfs, driven through the VFS API."""

from __future__ import annotations

import errno
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.kernel.auth import Credentials
from pyrunsc.core.mm.memfile import MemoryFile
from pyrunsc.core.mounts import MountFlags
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.vfs.filesystem import MountContext
from pyrunsc.core.vfs.inode import Stat
from pyrunsc.core.vfs.mount import MountNamespace
from pyrunsc.core.vfs.namei import FSContext
from pyrunsc.core.vfs.vfs import VirtualFilesystem
from pyrunsc.plugins.fs_9p import NinePFS
from pyrunsc.plugins.fs_9p.clientfs import NinePSuperblock
from pyrunsc.plugins.fs_9p.gofer import Gofer, GoferConnection
from pyrunsc.plugins.fs_9p.p9 import messages as m

from ..vfs.conftest import listdir, mount_at, new_mount, read_file, write_file

__all__ = ["Env", "fails", "listdir", "read_file", "write_file"]


def fails(code: int, fn: Callable[..., object], *args: object, **kwargs: object) -> SyscallError:
    """Call ``fn`` and require a SyscallError with ``code``."""
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value.name}"
    return info.value


def populate(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hello.txt").write_bytes(b"hello world\n")
    (root / "big.bin").write_bytes(os.urandom(700 * 1024 + 17))
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    (root / "sub" / "deeper" / "x").write_bytes(b"x")
    (root / "empty").mkdir()
    os.symlink("hello.txt", root / "link_in")


@dataclass
class Env:
    """A 9p mount of ``host`` at /m: ``vfs``, ``ctx`` (root's view),
    ``sb``; ``requests`` counts what the gofer served (by message type name)."""

    vfs: VirtualFilesystem
    ctx: FSContext
    mctx: MountContext
    host: Path
    outside: Path
    secret: bytes
    gofer: Gofer
    sb: NinePSuperblock
    requests: dict[str, int] = field(default_factory=dict)
    extra: list[Any] = field(default_factory=list)

    # Short calls, paths relative to the mount (``"a/b"`` is /m/a/b).
    def p(self, path: str) -> str:
        return "/m/" + path.lstrip("/") if path else "/m"

    def read(self, path: str) -> bytes:
        return read_file(self.vfs, self.ctx, self.p(path))

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        write_file(self.vfs, self.ctx, self.p(path), data, mode)

    def ls(self, path: str = "") -> list[str]:
        return sorted(listdir(self.vfs, self.ctx, self.p(path)))

    def stat(self, path: str, follow: bool = True) -> Stat:
        return self.vfs.stat(self.ctx, self.ctx.root, self.p(path), follow=follow)

    def open(self, path: str, flags: int, mode: int = 0o644) -> Any:
        return self.vfs.open(self.ctx, self.ctx.root, self.p(path), flags, mode)

    def count(self) -> int:
        return sum(self.requests.values())


def channel(gofer: Gofer) -> tuple[int, GoferConnection]:
    """A new socketpair channel of ``gofer``: our end's fd number (to hand to
    the mount, which takes it over) and the gofer's connection."""
    a, b = socket.socketpair()
    conn = gofer.start(a)
    return b.detach(), conn


def mount_data(fd: int, extra: str = "") -> str:
    return f"trans=fd,rfdno={fd},wfdno={fd},privateunixsocket=true" + (f",{extra}" if extra else "")


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    return Plugins()


@pytest.fixture
def mctx(plugins: Plugins) -> Iterator[MountContext]:
    mf = MemoryFile(size=1 << 26)
    yield MountContext(VirtualFilesystem(), mf, filesystems=dict(plugins.registry.filesystems))
    mf.close()


def make_env(
    mctx: MountContext, base: Path, *, cache: str = "", read_only_export: bool = False,
    flags: MountFlags | None = None, msize: int | None = None,
) -> Env:
    host, outside = base / "root", base / "outside"
    populate(host)
    outside.mkdir()
    secret = b"SECRET-" + secrets.token_hex(16).encode()
    (outside / "secret.txt").write_bytes(secret)
    requests: dict[str, int] = {}

    def on_request(conn: GoferConnection, tag: int, req: m.Request) -> None:
        name = type(req).__name__
        requests[name] = requests.get(name, 0) + 1

    gofer = Gofer(host, read_only=read_only_export, on_request=on_request)
    fd, _ = channel(gofer)
    extra = ",".join(x for x in (f"cache={cache}" if cache else "", f"msize={msize}" if msize else "") if x)
    sb = NinePFS.mount(mctx, str(host), flags or MountFlags(), mount_data(fd, extra))
    assert isinstance(sb, NinePSuperblock)
    ns = MountNamespace(new_mount(mctx.new_superblock("tmpfs", "mode=755")))
    ctx = FSContext(ns, ns.root, ns.root, Credentials(), umask=0o022)
    mctx.vfs.mkdir(ctx, ctx.root, "/m", 0o755)
    mount_at(ctx, "/m", sb, flags)
    return Env(mctx.vfs, ctx, mctx, host, outside, secret, gofer, sb, requests)


@pytest.fixture
def env_factory(mctx: MountContext, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []
    counter = iter(range(1000))

    def make(**kw: Any) -> Env:
        e = make_env(mctx, tmp_path / f"e{next(counter)}", **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.sb.close()
        for x in e.extra:
            x.close()
        e.gofer.close()


@pytest.fixture
def env(env_factory: Callable[..., Env]) -> Env:
    return env_factory()


def user_view(ctx: FSContext, uid: int = 1000, gid: int = 1000) -> FSContext:
    return FSContext(ctx.ns, ctx.root, ctx.cwd, Credentials.for_user(uid, gid), ctx.umask)
