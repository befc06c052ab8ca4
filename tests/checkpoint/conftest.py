"""Shared fixtures for checkpoint image tests: real memory files (memfds),
a key, and a header as the kernel's checkpoint code would build it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.core.checkpoint import json_digest, new_header
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile

MOUNTS = [
    {"destination": "/", "type": "bind", "filesystem": "9p", "device": "9pfs-/", "flags": ["ro"],
     "data": "trans=fd,rfdno=0,wfdno=0,privateunixsocket=true", "source": "/b/rootfs", "overlay": False},
    {"destination": "/tmp", "type": "tmpfs", "filesystem": "tmpfs", "device": "none", "flags": [],
     "data": "", "source": "tmpfs", "overlay": False},
]


@pytest.fixture
def new_memfile() -> Iterator[Callable[[], MemoryFile]]:
    """Empty memory files to restore into; closed at the end."""
    made: list[MemoryFile] = []

    def make() -> MemoryFile:
        made.append(MemoryFile(size=1 << 30))
        return made[-1]

    yield make
    for mf in made:
        mf.close()


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def header() -> dict[str, Any]:
    return new_header(
        container_id="counter", platform="ptrace", spec_digest=json_digest({"ociVersion": "1.0.2"}),
        mounts=MOUNTS, tasks=[{"pid": 1, "ppid": 0, "state": "S", "command": "sh -c loop"},
                              {"pid": 2, "ppid": 1, "state": "R", "command": "seq"}],
        tmpfs=[{"destination": "/tmp", "bytes": 8192}],
    )


def pattern(length: int, seed: int) -> bytes:
    """Non-zero, page-distinct bytes: every page differs from its neighbours."""
    out = bytearray()
    for i in range(0, length, PAGE_SIZE):
        page = (seed * 1000003 + i).to_bytes(8, "little") * (PAGE_SIZE // 8)
        out += page[: min(PAGE_SIZE, length - i)]
    return bytes(out)


def committed(mf: MemoryFile) -> list[tuple[int, int]]:
    from pyrunsc.core.checkpoint.pages import data_extents

    return data_extents(mf.fd, mf.size)


def read_back(mf: MemoryFile, offset: int, length: int) -> bytes:
    """Bytes of the memory file read with pread, which (unlike a read through
    the mapping) leaves holes uncommitted."""
    return os.pread(mf.fd, length, offset)


def flip(path: Path, offset: int) -> None:
    """Flip one bit of the file at ``offset`` (negative: from the end)."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_SET if offset >= 0 else os.SEEK_END)
        pos = f.tell()
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x10]))


def siblings(path: Path) -> list[str]:
    """Names in ``path``'s parent folder: the image and any temporary folder."""
    return sorted(p.name for p in path.parent.iterdir())
