"""Fixtures for the 9P tests: a served folder with a secret next to it (outside
the root), a gofer on it, and clients of our own on socketpairs."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.plugins.fs_9p.gofer import Gofer
from pyrunsc.plugins.fs_9p.p9 import Client
from pyrunsc.plugins.fs_9p.p9.messages import Fid


@dataclass
class Tree:
    """``root`` is served; ``outside`` is its sibling, holding ``secret`` (bytes
    that must never come back through the gofer)."""

    root: Path
    outside: Path
    secret: bytes


def make_tree(base: Path) -> Tree:
    root = base / "root"
    outside = base / "outside"
    secret = b"SECRET-" + secrets.token_hex(16).encode()
    (outside / "secretdir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(secret)
    (outside / "secretdir" / "secret.txt").write_bytes(secret)
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello world\n")
    (root / "big.bin").write_bytes(os.urandom(300 * 1024))
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    (root / "sub" / "deeper" / "x").write_bytes(b"x")
    (root / "empty").mkdir()
    (root / "d" / "secretdir").mkdir(parents=True)
    (root / "d" / "secretdir" / "secret.txt").write_bytes(b"INSIDE")
    os.symlink("hello.txt", root / "link_in")
    os.symlink("/etc/shadow", root / "esc_abs")
    os.symlink(str(outside / "secret.txt"), root / "esc_abs_secret")
    os.symlink("../outside/secret.txt", root / "esc_rel")
    os.symlink("../../outside", root / "sub" / "esc_dir")
    os.symlink(str(outside), root / "esc_dir_abs")
    return Tree(root, outside, secret)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return make_tree(tmp_path)


@pytest.fixture
def gofer(tree: Tree) -> Iterator[Gofer]:
    g = Gofer(tree.root)
    yield g
    g.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """``connect(gofer, msize=...) -> Client``: a versioned client on a new
    socketpair channel of ``gofer``."""
    clients: list[Client] = []

    def make(gofer: Gofer, **kw: Any) -> Client:
        a, b = socket.socketpair()
        gofer.start(a)
        c = Client(b, timeout=20, **kw)
        c.version()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(gofer: Gofer, connect: Callable[..., Client]) -> Client:
    return connect(gofer)


def attach(client: Client, aname: str = "/") -> Fid:
    root = client.alloc_fid()
    client.attach(root, aname)
    return root


def read_file(client: Client, root: Fid, path: str) -> bytes:
    """Walk, open read-only, read all, clunk."""
    f = client.walk_path(root, path)
    try:
        client.lopen(f, 0)
        return client.read_all(f)
    finally:
        client.clunk(f)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
