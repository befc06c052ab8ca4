"""Checkpoint images on real files and real memfds: round trips, zero pages,
and every way a damaged image is refused before the kernel blob is handed back."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.core.checkpoint import (
    CHECKPOINT_FILE,
    FORMAT_VERSION,
    PAGES_FILE,
    ImageError,
    Progress,
    inspect_image,
    open_image,
    read_header,
    write_image,
)
from pyrunsc.core.checkpoint.image import MAGIC, MAX_HEADER, key_id
from pyrunsc.core.checkpoint.pages import CHUNK, nonzero_runs
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile

from .conftest import committed, flip, pattern, read_back

KERNEL = b"\x80\x05pretend-cloudpickle" * 5000
COMPRESSIONS = ["none", "zstd"]


def fill(mf: MemoryFile) -> dict[int, bytes]:
    """A memory file as a sandbox leaves it: data in several allocations,
    pages written with zeros, pages only read, a page freed, data past a
    chunk boundary. Returns offset -> the bytes written there."""
    written: dict[int, bytes] = {}
    a = mf.allocate(3 * CHUNK + 5 * PAGE_SIZE)  # crosses chunk boundaries
    written[a] = pattern(3 * CHUNK + 5 * PAGE_SIZE, 1)
    zeros = mf.allocate(16 * PAGE_SIZE)  # committed, all zero
    mf.write(zeros, bytes(16 * PAGE_SIZE))
    mixed = mf.allocate(8 * PAGE_SIZE)  # zero and non-zero pages alternating
    for i in range(0, 8, 2):
        written[mixed + i * PAGE_SIZE] = pattern(PAGE_SIZE, 100 + i)
    only_read = mf.allocate(4 * PAGE_SIZE)
    mf.read(only_read, 4 * PAGE_SIZE)
    freed = mf.allocate(4 * PAGE_SIZE)
    mf.write(freed, pattern(4 * PAGE_SIZE, 7))
    mf.free(freed, 4 * PAGE_SIZE)
    edge = mf.allocate(PAGE_SIZE)  # a page with a single non-zero byte in the middle
    written[edge + 2000] = b"\x01"
    far = 700 << 20  # far away, past a hole of hundreds of MiB
    written[far] = pattern(2 * PAGE_SIZE, 9)
    for off, data in written.items():
        mf.write(off, data)
    return written


def expected_extents(written: dict[int, bytes]) -> list[tuple[int, int]]:
    pages = sorted({(off + i) // PAGE_SIZE for off, data in written.items() for i in range(len(data))})
    out: list[tuple[int, int]] = []
    for p in pages:
        if out and out[-1][0] + out[-1][1] == p * PAGE_SIZE:
            out[-1] = (out[-1][0], out[-1][1] + PAGE_SIZE)
        else:
            out.append((p * PAGE_SIZE, PAGE_SIZE))
    return out


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip(tmp_path: Path, memfile: MemoryFile, new_memfile: Callable[[], MemoryFile], key: bytes,
                    header: dict[str, Any], compression: str) -> None:
    written = fill(memfile)
    full = write_image(tmp_path / "img", header, KERNEL, memfile, key=key, compression=compression)
    extents = expected_extents(written)
    assert [tuple(e) for e in full["memory"]["extents"]] == extents
    assert full["memory"]["saved"] == sum(n for _, n in extents)

    image = open_image(tmp_path / "img", key=key)
    assert image.header == full
    assert image.header["container_id"] == "counter"
    assert image.header["mounts"][0]["device"] == "9pfs-/"
    assert image.header["compression"] == compression
    target = new_memfile()
    assert image.load(target) == KERNEL
    # Only the saved extents are committed in the new memory file: holes stay holes.
    assert committed(target) == extents
    for off, n in extents:
        assert read_back(target, off, n) == read_back(memfile, off, n)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_one_image_restores_many_times(tmp_path: Path, memfile: MemoryFile, new_memfile: Callable[[], MemoryFile],
                                       key: bytes, header: dict[str, Any], compression: str) -> None:
    memfile.write(memfile.allocate(PAGE_SIZE), pattern(PAGE_SIZE, 3))
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key, compression=compression)
    image = open_image(tmp_path / "img", key=key)
    first, second = new_memfile(), new_memfile()
    assert image.load(first) == image.load(second) == KERNEL
    assert read_back(first, 0, PAGE_SIZE) == read_back(second, 0, PAGE_SIZE) == pattern(PAGE_SIZE, 3)


def test_empty_memory(tmp_path: Path, memfile: MemoryFile, new_memfile: Callable[[], MemoryFile], key: bytes,
                      header: dict[str, Any]) -> None:
    full = write_image(tmp_path / "img", header, b"", memfile, key=key)
    assert full["memory"]["extents"] == [] and full["parts"]["pages"]["size"] == 0
    assert os.path.getsize(tmp_path / "img" / PAGES_FILE) == 0
    target = new_memfile()
    assert open_image(tmp_path / "img", key=key).load(target) == b""
    assert committed(target) == []


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_zero_and_sparse_pages_cost_nothing(tmp_path: Path, key: bytes, header: dict[str, Any],
                                            compression: str) -> None:
    mf = MemoryFile()  # the default, 1 TiB virtual size
    try:
        zeros = mf.allocate(64 << 20)
        mf.write(zeros, bytes(64 << 20))  # 64 MiB committed, all zeros
        mf.write(mf.allocate(PAGE_SIZE), pattern(PAGE_SIZE, 1))
        mf.write(512 << 30, pattern(PAGE_SIZE, 2))  # one page 512 GiB in
        assert sum(n for _, n in committed(mf)) >= (64 << 20) + 2 * PAGE_SIZE
        full = write_image(tmp_path / "img", header, KERNEL, mf, key=key, compression=compression)
    finally:
        mf.close()
    assert full["memory"]["saved"] == 2 * PAGE_SIZE
    assert full["memory"]["committed"] >= 64 << 20
    pages = tmp_path / "img" / PAGES_FILE
    assert pages.stat().st_size <= 2 * PAGE_SIZE
    assert pages.stat().st_blocks * 512 <= 4 * PAGE_SIZE


def test_nonzero_runs_finds_single_bytes() -> None:
    buf = bytearray(3 * CHUNK)
    for off in (0, PAGE_SIZE - 1, 70000, CHUNK + 5, 3 * CHUNK - 1):
        buf[off] = 1
    view = memoryview(buf)
    runs = [r for start in range(0, len(buf), CHUNK) for r in nonzero_runs(view, start, start + CHUNK)]
    assert runs == [(0, PAGE_SIZE), (17 * PAGE_SIZE, PAGE_SIZE), (CHUNK, PAGE_SIZE), (3 * CHUNK - PAGE_SIZE, PAGE_SIZE)]


def test_files_are_private(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any]) -> None:
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key)
    assert (tmp_path / "img").stat().st_mode & 0o777 == 0o700
    for name in (CHECKPOINT_FILE, PAGES_FILE):
        assert (tmp_path / "img" / name).stat().st_mode & 0o777 == 0o600


def test_layout_of_checkpoint_img(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any]) -> None:
    """The documented layout: magic, version, header length, JSON, MAC, blob."""
    import hashlib
    import hmac

    write_image(tmp_path / "img", header, KERNEL, memfile, key=key)
    data = (tmp_path / "img" / CHECKPOINT_FILE).read_bytes()
    assert len(MAGIC) == 16 and data[:16] == MAGIC
    version, length = struct.unpack_from("<II", data, 16)
    assert version == FORMAT_VERSION
    parsed = json.loads(data[24 : 24 + length])
    assert hmac.compare_digest(data[24 + length : 56 + length],
                               hmac.new(key, data[: 24 + length], hashlib.sha256).digest())
    assert data[56 + length :] == KERNEL
    assert parsed["parts"]["kernel"]["sha256"] == hashlib.sha256(KERNEL).hexdigest()
    pages = (tmp_path / "img" / PAGES_FILE).read_bytes()
    assert parsed["parts"]["pages"]["sha256"] == hashlib.sha256(pages).hexdigest()
    assert parsed["key_id"] == key_id(key)


def test_header_must_come_from_new_header(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                          header: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_image(tmp_path / "img", {**header, "memory": {}}, KERNEL, memfile, key=key)
    with pytest.raises(ValueError, match="not JSON"):
        write_image(tmp_path / "img", {**header, "plugins": {"x": object()}}, KERNEL, memfile, key=key)
    with pytest.raises(ValueError, match="compression"):
        write_image(tmp_path / "img", header, KERNEL, memfile, key=key, compression="lz4")
    assert not (tmp_path / "img").exists()


def test_plugin_facts_survive(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any]) -> None:
    header["plugins"]["fs_9p"] = {"fids": 3}
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key)
    assert open_image(tmp_path / "img", key=key).header["plugins"] == {"fs_9p": {"fids": 3}}


def test_progress_counts_every_byte(tmp_path: Path, memfile: MemoryFile, new_memfile: Callable[[], MemoryFile],
                                   key: bytes, header: dict[str, Any]) -> None:
    class Counter(Progress):
        def __init__(self) -> None:
            self.events: list[tuple[str, int]] = []

        def start(self, label: str, total: int) -> None:
            self.events.append((label, total))

        def advance(self, n: int) -> None:
            self.events.append(("+", n))

        def finish(self) -> None:
            self.events.append(("finish", 0))

    fill(memfile)
    seen = Counter()
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key, progress=seen)
    (label, total), *steps, end = seen.events
    assert label == "checkpoint" and end == ("finish", 0)
    assert sum(n for _, n in steps) == total == sum(n for _, n in committed(memfile)) + len(KERNEL)
    assert len(steps) < 20  # per chunk, not per page

    seen = Counter()
    image = open_image(tmp_path / "img", key=key)
    image.load(new_memfile(), progress=seen)
    (label, total), *steps, end = seen.events
    assert label == "restore" and end == ("finish", 0)
    assert sum(n for _, n in steps) == total == image.header["memory"]["saved"] + len(KERNEL)


# -------------------------------------------------------------------------
# Refusals: nothing is handed back from a damaged image.
# -------------------------------------------------------------------------


@pytest.fixture(params=COMPRESSIONS)
def image_dir(request: pytest.FixtureRequest, tmp_path: Path, memfile: MemoryFile, key: bytes,
              header: dict[str, Any]) -> Path:
    fill(memfile)
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key, compression=request.param)
    return tmp_path / "img"


def refused(image_dir: Path, key: bytes, target: MemoryFile, match: str) -> ImageError:
    """The image is refused by open_image or load, with exit status 2 and a
    message naming a file of the image; no kernel blob comes back."""
    with pytest.raises(ImageError, match=match) as info:
        open_image(image_dir, key=key).load(target)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(os.fspath(image_dir))
    return info.value


def header_length(image_dir: Path) -> int:
    return struct.unpack_from("<I", (image_dir / CHECKPOINT_FILE).read_bytes(), 20)[0]


@pytest.mark.parametrize("where", ["magic", "version", "length", "header", "mac", "kernel", "end"])
def test_bit_flip_in_checkpoint_img(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile],
                                    where: str) -> None:
    n = header_length(image_dir)
    offset = {"magic": 3, "version": 17, "length": 22, "header": 24 + n // 2, "mac": 24 + n + 5,
              "kernel": 56 + n + 1, "end": -1}[where]
    flip(image_dir / CHECKPOINT_FILE, offset)
    match = {"magic": "no magic", "version": "format version", "length": "truncated|past the limit",
             "header": "MAC does not verify|not a JSON", "mac": "MAC does not verify",
             "kernel": "SHA-256 mismatch in the kernel", "end": "SHA-256 mismatch in the kernel|corrupt zstd"}[where]
    err = refused(image_dir, key, new_memfile(), match)
    assert CHECKPOINT_FILE in str(err)


@pytest.mark.parametrize("where", [0, 4096 + 17, -1])
def test_bit_flip_in_pages_img(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile], where: int) -> None:
    flip(image_dir / PAGES_FILE, where)
    err = refused(image_dir, key, new_memfile(), "SHA-256 mismatch|corrupt zstd|zstd stream")
    assert PAGES_FILE in str(err)


@pytest.mark.parametrize("keep", [0, 10, 20, 100, "mac", "kernel"])
def test_truncated_checkpoint_img(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile],
                                  keep: int | str) -> None:
    n = header_length(image_dir)
    size = {"mac": 24 + n + 10, "kernel": 56 + n + 100}.get(str(keep), keep)
    assert isinstance(size, int)
    os.truncate(image_dir / CHECKPOINT_FILE, size)
    refused(image_dir, key, new_memfile(), "truncated")


@pytest.mark.parametrize("cut", [1, PAGE_SIZE, "all"])
def test_truncated_pages_img(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile],
                             cut: int | str) -> None:
    size = os.path.getsize(image_dir / PAGES_FILE)
    os.truncate(image_dir / PAGES_FILE, 0 if cut == "all" else size - int(cut))
    err = refused(image_dir, key, new_memfile(), "truncated")
    assert PAGES_FILE in str(err)


def test_extra_bytes_are_refused(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile]) -> None:
    with open(image_dir / PAGES_FILE, "ab") as f:
        f.write(b"\0")
    refused(image_dir, key, new_memfile(), "extra bytes")


@pytest.mark.parametrize("name", [CHECKPOINT_FILE, PAGES_FILE])
def test_missing_part(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile], name: str) -> None:
    (image_dir / name).unlink()
    err = refused(image_dir, key, new_memfile(), "missing")
    assert name in str(err)


def test_missing_folder(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(ImageError, match="no image folder") as info:
        open_image(tmp_path / "nope", key=key)
    assert info.value.exit_code == 2


def test_wrong_key(image_dir: Path, new_memfile: Callable[[], MemoryFile]) -> None:
    err = refused(image_dir, os.urandom(32), new_memfile(), "made with another key")
    assert CHECKPOINT_FILE in str(err)


def rewrite_header(image_dir: Path, key: bytes, change: Callable[[dict[str, Any]], None], version: int) -> None:
    """Re-sign checkpoint.img with an edited header and format version, as a
    future (or buggy) pyrunsc holding the key might write it."""
    import hashlib
    import hmac

    path = image_dir / CHECKPOINT_FILE
    data = path.read_bytes()
    n = header_length(image_dir)
    header = json.loads(data[24 : 24 + n])
    change(header)
    body = json.dumps(header).encode()
    signed = MAGIC + struct.pack("<II", version, len(body)) + body
    path.write_bytes(signed + hmac.new(key, signed, hashlib.sha256).digest() + data[56 + n :])


def test_future_version(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile]) -> None:
    rewrite_header(image_dir, key, lambda h: h.update(format=FORMAT_VERSION + 1), FORMAT_VERSION + 1)
    err = refused(image_dir, key, new_memfile(), f"format version {FORMAT_VERSION + 1} is newer")
    assert "newer pyrunsc" in str(err)


def test_signed_but_inconsistent_header(image_dir: Path, key: bytes, new_memfile: Callable[[], MemoryFile]) -> None:
    def bad_extent(h: dict[str, Any]) -> None:
        h["memory"]["extents"][0][0] += 1

    rewrite_header(image_dir, key, bad_extent, FORMAT_VERSION)
    refused(image_dir, key, new_memfile(), "extents")


def test_huge_header_length_is_not_read(image_dir: Path, key: bytes) -> None:
    path = image_dir / CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 20, MAX_HEADER + 1)
    path.write_bytes(data)
    with pytest.raises(ImageError, match="past the limit"):
        read_header(image_dir)


def test_not_an_image(tmp_path: Path, key: bytes) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / CHECKPOINT_FILE).write_text("#!/bin/sh\necho hello, this is no image\n")
    with pytest.raises(ImageError, match="no magic"):
        open_image(tmp_path / "img", key=key)


def test_memory_file_too_small(image_dir: Path, key: bytes) -> None:
    small = MemoryFile(size=1 << 20)
    try:
        with pytest.raises(ImageError, match="needs a memory file"):
            open_image(image_dir, key=key).load(small)
    finally:
        small.close()


# -------------------------------------------------------------------------
# Verification without restoring (inspect).
# -------------------------------------------------------------------------


def test_verify_and_inspect(image_dir: Path, key: bytes) -> None:
    open_image(image_dir, key=key).verify()
    found = inspect_image(image_dir, key)
    assert found.mac is True and found.problems == []
    assert found.files[PAGES_FILE]["size"] == os.path.getsize(image_dir / PAGES_FILE)
    assert inspect_image(image_dir, None).mac is None
    other = inspect_image(image_dir, os.urandom(32))
    assert other.mac is False and "another key" in other.problems[0]
    flip(image_dir / PAGES_FILE, 100)
    found = inspect_image(image_dir, key)
    assert found.mac is True
    assert found.problems == [f"{PAGES_FILE}: SHA-256 mismatch: the file was altered or corrupted"]
    with pytest.raises(ImageError, match="SHA-256"):
        open_image(image_dir, key=key).verify()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_pages_hashed_on_a_thread_or_inline(tmp_path: Path, memfile: MemoryFile,
                                            new_memfile: Callable[[], MemoryFile], compression: str) -> None:
    """Both ways of hashing (chosen by the machine's load) give the same
    pages.img and digest, and each restores what the other saved."""
    from pyrunsc.core.checkpoint.pages import restore_pages, save_pages

    written = fill(memfile)
    saved = {}
    for threaded in (True, False):
        fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
        saved[threaded] = (fd, save_pages(memfile, fd, compression=compression, threaded=threaded))
    (fd_t, thr), (fd_i, inline) = saved[True], saved[False]
    assert thr == inline
    assert os.pread(fd_t, thr.stored, 0) == os.pread(fd_i, inline.stored, 0)
    for fd, threaded in ((fd_t, False), (fd_i, True)):
        target = new_memfile()
        restore_pages(fd, "pages.img", extents=thr.extents, stored=thr.stored, sha256=thr.sha256,
                      compression=compression, memfile=target, threaded=threaded)
        for off, data in written.items():
            assert read_back(target, off, len(data)) == data
        os.close(fd)
