"""Saving the memory file's pages into ``pages.img``, and restoring them.

gVisor ``pkg/sentry/pgalloc/save_restore.go``: only committed pages are
saved, found with ``SEEK_DATA``/``SEEK_HOLE`` rather than by walking the
allocator, and pages that are all zeros are skipped (a page that was only
read is committed but zero). ``pages.img`` is the saved pages back to back,
in memory-file order, raw or as one zstd stream; where each run of pages
belongs is the list of *extents* ``(offset, length)`` (bytes, page-aligned,
sorted, disjoint, not adjacent) that the image header records.

Restoring writes each extent into a new memory file at its offset with
``pwrite``, so the rest of the file stays holes: it costs no memory and
reads as zeros. (Measured on a 512 MiB image in the page cache: ``preadv``
into a buffer and ``pwrite`` into the memfd was as fast as ``sendfile`` or a
mapped pages.img, faster than reading into the memfd's mapping, which takes
a page fault per page; ``copy_file_range`` cannot cross from the disk's
filesystem to the memfd's. Whatever copies, SHA-256 must see the bytes.)

Everything streams in chunks of :data:`CHUNK` bytes: neither side ever holds
more than a few chunks, whatever the memory file's size. Each chunk written
to ``pages.img`` is sent on to the disk at once (``sync_file_range``, which
does not wait), so that the disk writes while the next chunks are scanned
and hashed, and the image's final fsync finds little left to write (it was
a quarter of a 512 MiB checkpoint's time). The SHA-256 of
``pages.img`` is computed on a worker thread while the copy proceeds
(hashlib and os I/O release the GIL), so the two overlap, on any host with
a second CPU (:func:`spare_cpu`). The hash costs about as much as the copy
itself, so this is what brings a checkpoint or a restore near the cost of
``cp`` (``benchmarks/checkpoint_restore.py``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import hashlib
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, cast

import zstandard

from ..errors import ImageError
from ..mm.memfile import PAGE_SIZE, MemoryFile, page_round_down, page_round_up
from .progress import Progress

#: Bytes of the memory file examined and written per step when saving.
CHUNK = 8 << 20
#: Bytes read, hashed and written per step when restoring: a buffer that
#: stays in the CPU's cache between the read, the hash and the write.
PIECE = 1 << 20
#: Bytes compared at once when looking for zero pages.
_BLOCK = 64 << 10
_ZERO_BLOCK = bytearray(_BLOCK)
_ZERO_PAGE = bytearray(PAGE_SIZE)
#: Buffers in flight between the copy and the hashing thread on restore.
_RING = 4
#: writev's limit on buffers per call.
_IOV_MAX = 1024

COMPRESSIONS = ("none", "zstd")
#: zstd's level for pages: the fastest, which still shrinks typical memory well.
ZSTD_LEVEL = 1

Extent = tuple[int, int]

_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    _sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``length`` bytes of ``fd`` at ``offset``
    to disk, without waiting for it (``sync_file_range(SYNC_FILE_RANGE_WRITE)``).
    Only a head start for a later fsync, which alone makes the data durable:
    a failure (a filesystem without it, a pipe) is ignored."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def data_extents(fd: int, size: int) -> list[Extent]:
    """The committed ranges of ``fd`` below ``size``, as page-aligned
    ``(offset, length)`` pairs in bytes, from ``SEEK_DATA``/``SEEK_HOLE``."""
    out: list[Extent] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        start, end = page_round_down(start), min(page_round_up(end), size)
        if out and out[-1][0] + out[-1][1] >= start:
            prev = out.pop()
            start = prev[0]
        out.append((start, end - start))
        pos = end
    return out


def nonzero_runs(view: memoryview, start: int, end: int) -> list[Extent]:
    """The runs of pages in ``view[start:end]`` (page-aligned) that are not
    all zeros, as ``(offset, length)``. Zero blocks are skipped with one
    ``memcmp``; a page with a non-zero first or last byte is known at once."""
    runs: list[Extent] = []
    run = -1
    pos = start
    while pos < end:
        stop = min(pos + _BLOCK, end)
        # bytearray == memoryview is one memcmp; memoryview == bytearray
        # compares item by item, 300 times slower: hence the Yoda conditions.
        if stop - pos == _BLOCK and _ZERO_BLOCK == view[pos:stop]:  # noqa: SIM300
            if run >= 0:
                runs.append((run, pos - run))
                run = -1
            pos = stop
            continue
        for p in range(pos, stop, PAGE_SIZE):
            if view[p] or view[p + PAGE_SIZE - 1] or _ZERO_PAGE != view[p : p + PAGE_SIZE]:  # noqa: SIM300
                if run < 0:
                    run = p
            elif run >= 0:
                runs.append((run, p - run))
                run = -1
        pos = stop
    if run >= 0:
        runs.append((run, end - run))
    return runs


def spare_cpu() -> bool:
    """True when a second thread can hash while the first copies: the host
    has more than one CPU.

    Whatever the load: on the 2-vCPU test machine, shared with other work,
    a 512 MiB checkpoint and restore of a running sandbox, alternating
    (benchmarks/checkpoint_restore.py's memory case), took with the hash on
    a thread / inline: at a 1-minute load average of 3 (above the old
    threshold, a load average below cpus - 1), checkpoint 317 / 531 ms and
    restore's load 383 / 478 ms (medians of 6); with both CPUs kept busy by
    two more spinning processes, 1545 / 2071 and 975 / 990 ms (of 4). The
    load average says little of the CPU free at this moment (it lags by a
    minute, and counts other sessions' waits), and a busy machine costs the
    thread little."""
    return (os.cpu_count() or 1) > 1


class Sha256Worker:
    """SHA-256 of a stream of buffers, computed on a worker thread.

    :meth:`update` queues a buffer and returns a ticket; the buffer must not
    change until :meth:`wait` for that ticket returns (or :meth:`hexdigest`).
    With ``threaded=False`` it hashes in the caller's thread; None chooses
    with :func:`spare_cpu`. The worker may run on any CPU, even when the
    caller is pinned to one (the ptrace platform pins its tracer thread).
    """

    def __init__(self, *, threaded: bool | None = None) -> None:
        if threaded is None:
            threaded = spare_cpu()
        self._hash = hashlib.sha256()
        self._queued = 0
        self._done = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._queue: queue.SimpleQueue[memoryview | bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="pyrunsc-sha256", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # inherited from a pinned caller: undo it
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        while (data := self._queue.get()) is not None:
            try:
                self._hash.update(data)
            except BaseException as e:  # reported by wait()
                self._error = e
            with self._cond:
                self._done += 1
                self._cond.notify_all()

    def update(self, data: memoryview | bytes) -> int:
        self._queued += 1
        if self._thread is None:
            self._hash.update(data)
            self._done += 1
        else:
            self._queue.put(data)
        return self._queued

    @property
    def hashed(self) -> int:
        """The last ticket whose buffer is hashed (and may change or be released)."""
        return self._done

    def wait(self, ticket: int) -> None:
        """Return once the buffer of ``ticket`` (and all before it) is hashed."""
        if self._thread is not None:
            with self._cond:
                self._cond.wait_for(lambda: self._done >= ticket)
        if self._error is not None:
            raise self._error

    def hexdigest(self) -> str:
        self.wait(self._queued)
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Stop the thread (also when the copy failed midway)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


def write_all(fd: int, bufs: Sequence[memoryview | bytes]) -> int:
    """writev ``bufs`` to ``fd`` completely; the bytes written."""
    total = 0
    for i in range(0, len(bufs), _IOV_MAX):
        batch = list(bufs[i : i + _IOV_MAX])
        want = sum(len(b) for b in batch)
        done = os.writev(fd, batch)
        while done < want:  # a short write: resume within the batch
            skip = done
            rest: list[memoryview | bytes] = []
            for b in batch:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                rest.append(memoryview(b)[skip:])
                skip = 0
            batch, want = rest, want - done
            done = os.writev(fd, batch)
            if done == 0:
                raise OSError(errno.EIO, "write returned 0")
        total += sum(len(b) for b in bufs[i : i + _IOV_MAX])
    return total


@dataclass
class SavedPages:
    """What :func:`save_pages` wrote (bytes, except ``extents``)."""

    #: Where the saved pages belong in the memory file: ``(offset, length)``.
    extents: list[Extent] = field(default_factory=list)
    #: Committed bytes of the memory file (what SEEK_DATA found).
    committed: int = 0
    #: Bytes of non-zero pages saved (the sum of the extents' lengths).
    saved: int = 0
    #: Bytes of pages.img (after compression).
    stored: int = 0
    #: SHA-256 of pages.img, hex.
    sha256: str = ""


def save_pages(memfile: MemoryFile, out: int, *, compression: str = "none", progress: Progress | None = None,
               threaded: bool | None = None, extents: Sequence[Extent] | None = None) -> SavedPages:
    """Write the committed, non-zero pages of ``memfile`` to the file ``out``
    (at its current position), raw or zstd-compressed.

    The memory file must not change meanwhile (every task stopped).
    ``progress`` advances by committed bytes examined, zero pages included;
    the caller has called its ``start``. ``extents``: the memory file's
    committed ranges (:func:`data_extents`), if the caller has them already.

    :raises ValueError: an unknown ``compression``.
    :raises OSError: ``out`` cannot be written (ENOSPC, EFBIG, ...).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; one of {', '.join(COMPRESSIONS)}")
    progress = progress or Progress()
    view = memfile.view
    result = SavedPages()
    hasher = Sha256Worker(threaded=threaded)
    cobj = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj() if compression == "zstd" else None
    # Slices of the memory file's mapping, released once hashed: a slice
    # left alive (by a traceback, say) would keep the mapping from closing.
    pending: collections.deque[tuple[int, list[memoryview]]] = collections.deque()
    try:
        at = os.lseek(out, 0, os.SEEK_CUR)  # where the next bytes go, to start their writeback
    except OSError:
        at = -1  # not seekable: no writeback to start
    try:
        for start, length in data_extents(memfile.fd, memfile.size) if extents is None else extents:
            result.committed += length
            end = start + length
            for pos in range(start, end, CHUNK):
                stop = min(pos + CHUNK, end)
                runs = nonzero_runs(view, pos, stop)
                for off, n in runs:
                    ext = result.extents
                    if ext and ext[-1][0] + ext[-1][1] == off:
                        ext[-1] = (ext[-1][0], ext[-1][1] + n)
                    else:
                        ext.append((off, n))
                    result.saved += n
                bufs = [view[off : off + n] for off, n in runs]
                pending.append((0, bufs))
                # What goes to pages.img: the pages, or what zstd made of them so far.
                data: Sequence[memoryview | bytes] = bufs
                if cobj is not None:
                    packed = b"".join([cobj.compress(b) for b in bufs])
                    data = [packed] if packed else []
                wrote = write_all(out, data)
                if at >= 0:
                    start_writeback(out, at + result.stored, wrote)
                result.stored += wrote
                ticket = 0
                for b in data:
                    ticket = hasher.update(b)
                if cobj is None:
                    pending[-1] = (ticket, bufs)  # the pages are hashed from the mapping
                while pending and pending[0][0] <= hasher.hashed:
                    _release(pending.popleft()[1])
                progress.advance(stop - pos)
        if cobj is not None:
            tail = cobj.flush()
            result.stored += write_all(out, [tail])
            hasher.update(tail)
        result.sha256 = hasher.hexdigest()
    finally:
        hasher.close()
        for _, bufs in pending:
            _release(bufs)
    return result


def _release(views: Iterable[memoryview]) -> None:
    for v in views:
        v.release()


def check_extents(extents: Iterable[Sequence[int]], file_size: int) -> list[Extent]:
    """``extents`` from a header, checked: pairs of page-aligned, sorted,
    disjoint ranges inside ``file_size``; ValueError naming the first bad one."""
    out: list[Extent] = []
    end = 0
    for i, pair in enumerate(extents):
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise ValueError(f"extent {i} is not an [offset, length] pair of integers")
        off, n = pair
        if off % PAGE_SIZE or n % PAGE_SIZE or n <= 0 or off < end or off + n > file_size:
            raise ValueError(f"extent {i} [{off}, {n}] is not page-aligned, sorted and inside the memory file")
        out.append((off, n))
        end = off + n
    return out


class _HashingReader:
    """``read(n)`` of ``size`` bytes of ``fd`` from offset 0, each piece
    hashed; the source of zstd's stream reader."""

    def __init__(self, fd: int, size: int, hasher: Sha256Worker) -> None:
        self.fd, self.size, self.hasher = fd, size, hasher
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        if data:
            self.hasher.update(data)
            self.pos += len(data)
        return data


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def restore_pages(src: int, name: str, *, extents: Sequence[Extent], stored: int, sha256: str, compression: str,
                  memfile: MemoryFile, progress: Progress | None = None, threaded: bool | None = None) -> None:
    """Copy ``pages.img`` (the fd ``src``, ``stored`` bytes) into ``memfile``
    at ``extents``, checking its SHA-256; ``name`` names it in errors.

    Only the extents are written: the rest of ``memfile`` stays holes.
    ``progress`` advances by memory bytes restored.

    :raises ImageError: the file is shorter or longer than the extents need,
        its zstd stream is corrupt, or its SHA-256 differs from ``sha256``.
        ``memfile`` then holds garbage: discard it.
    :raises OSError: reading or writing failed.
    """
    progress = progress or Progress()
    hasher = Sha256Worker(threaded=threaded)
    try:
        if compression == "zstd":
            _restore_zstd(src, name, extents, stored, memfile, progress, hasher)
        elif compression == "none":
            _restore_raw(src, name, extents, stored, memfile, progress, hasher)
        else:
            raise ImageError(f"unknown compression {compression!r}", file=name)
        digest = hasher.hexdigest()
    finally:
        hasher.close()
    if digest != sha256:
        raise ImageError("SHA-256 mismatch: the file was altered or corrupted", file=name)


def _restore_raw(src: int, name: str, extents: Sequence[Extent], stored: int, memfile: MemoryFile,
                 progress: Progress, hasher: Sha256Worker) -> None:
    if sum(n for _, n in extents) != stored:
        raise ImageError(f"holds {stored} bytes but the header's extents need {sum(n for _, n in extents)}",
                         file=name)
    ring = [memoryview(bytearray(PIECE)) for _ in range(min(_RING, max(1, stored // PIECE + 1)))]
    tickets = [0] * len(ring)
    slot = 0
    pos = 0
    for off, length in extents:
        for piece in range(off, off + length, PIECE):
            n = min(PIECE, off + length - piece)
            hasher.wait(tickets[slot])
            buf = ring[slot][:n]
            got = os.preadv(src, [buf], pos)
            if got != n:
                raise ImageError(f"truncated: it ends at byte {pos + got}, the extents need {stored}", file=name)
            _pwrite_all(memfile.fd, buf, piece)
            tickets[slot] = hasher.update(buf)
            slot = (slot + 1) % len(ring)
            pos += n
            progress.advance(n)


def _restore_zstd(src: int, name: str, extents: Sequence[Extent], stored: int, memfile: MemoryFile,
                  progress: Progress, hasher: Sha256Worker) -> None:
    source = _HashingReader(src, stored, hasher)
    buf = memoryview(bytearray(PIECE))
    try:
        reader_source = cast(IO[bytes], source)  # zstd needs only read()
        with zstandard.ZstdDecompressor().stream_reader(reader_source, read_size=PIECE, closefd=False) as reader:
            for off, length in extents:
                for piece in range(off, off + length, PIECE):
                    n = min(PIECE, off + length - piece)
                    got = 0
                    while got < n:
                        k = reader.readinto(buf[got:n])
                        if not k:
                            raise ImageError("the zstd stream ends before the last extent", file=name)
                        got += k
                    _pwrite_all(memfile.fd, buf[:n], piece)
                    progress.advance(n)
            if reader.read(1):
                raise ImageError("the zstd stream holds more than the header's extents", file=name)
    except zstandard.ZstdError as e:
        raise ImageError(f"corrupt zstd stream: {e}", file=name) from None
    while source.read(PIECE):  # hash any bytes after the stream's end too
        pass


def hash_file(fd: int, offset: int, size: int, *, progress: Progress | None = None) -> str:
    """SHA-256 (hex) of ``size`` bytes of ``fd`` at ``offset``; ImageError-free:
    a short file simply hashes fewer bytes."""
    progress = progress or Progress()
    h = hashlib.sha256()
    buf = memoryview(bytearray(min(PIECE, max(size, 1))))
    pos, end = offset, offset + size
    while pos < end:
        got = os.preadv(fd, [buf[: min(len(buf), end - pos)]], pos)
        if not got:
            break
        h.update(buf[:got])
        pos += got
        progress.advance(got)
    return h.hexdigest()
