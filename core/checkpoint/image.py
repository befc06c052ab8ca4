"""The checkpoint image: a folder with ``checkpoint.img`` and ``pages.img``.

After gVisor's ``pkg/state/statefile`` (magic, metadata length, JSON
metadata, HMAC, then the state) and ``runsc/cmd/checkpoint.go`` (an image
folder holding ``checkpoint.img`` and ``pages.img``); our own code.

``checkpoint.img``::

    offset  size  what
    0       16    magic b"PYRUNSC-CKPT\\r\\n\\x1a\\n"
    16      4     format version, little-endian u32 (FORMAT_VERSION)
    20      4     header length H, little-endian u32
    24      H     header: UTF-8 JSON object (below)
    24+H    32    HMAC-SHA256, keyed with the image key, of bytes [0, 24+H)
    56+H    K     the kernel blob (a cloudpickle of the kernel; zstd when the
                  image is compressed); K = header["parts"]["kernel"]["size"]

``pages.img``: the memory file's committed non-zero pages back to back (see
:mod:`.pages`), raw or one zstd stream; ``header["memory"]["extents"]``
says where each run belongs.

The header carries what the caller describes (:func:`new_header`:
container id, platform, spec digest, compiled mounts with devices, tasks,
tmpfs sizes, plugins' facts) and what :func:`write_image` adds: ``format``,
``pyrunsc_version``, ``created`` (UTC, ISO 8601), ``compression``,
``key_id``, ``memory`` (``file_size``, ``page_size``, ``committed``,
``saved`` bytes and ``extents``) and ``parts`` (for ``kernel`` and
``pages``: ``file``, stored ``size``, ``raw_size`` and ``sha256``). The MAC
covers the header, and the header holds the SHA-256 of every part, so the
MAC covers every byte of the image.

Reading (:func:`open_image`) checks the magic, the format version, the MAC
and each file's size; :meth:`CheckpointImage.load` then copies the pages
into a new memory file and checks every part's SHA-256 *before* it hands
back the kernel blob: the caller unpickles it, this module never does.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import zstandard

from ..errors import ImageError, PyrunscError
from ..mm.memfile import PAGE_SIZE, MemoryFile
from .folder import StagedFolder
from .pages import (
    COMPRESSIONS,
    SavedPages,
    check_extents,
    data_extents,
    hash_file,
    restore_pages,
    save_pages,
    write_all,
)
from .progress import Progress

MAGIC = b"PYRUNSC-CKPT\r\n\x1a\n"
#: The format this pyrunsc writes, and the newest it reads.
FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.img"
PAGES_FILE = "pages.img"
MAC_BYTES = 32
_PREFIX = struct.Struct("<16sII")
#: A header longer than this is taken for corruption, not read.
MAX_HEADER = 256 << 20
#: zstd's level for the kernel blob (small; compress it well).
KERNEL_ZSTD_LEVEL = 3
#: Header keys that write_image fills in; a caller's header may not set them.
WRITER_KEYS = frozenset({"format", "pyrunsc_version", "created", "compression", "key_id", "memory", "parts"})
#: Header keys a caller's header must have (see new_header).
CALLER_KEYS = ("container_id", "platform", "spec_digest", "mounts", "tasks")


@functools.cache
def pyrunsc_version() -> str:
    try:
        return metadata.version("pyrunsc")
    except metadata.PackageNotFoundError:
        return "unknown"


def key_id(key: bytes) -> str:
    """A short public name for ``key`` (16 hex digits), recorded in images so
    that a MAC failure can say "made with another key" rather than "altered"."""
    return hmac.new(key, b"pyrunsc image key id", hashlib.sha256).hexdigest()[:16]


def json_digest(value: Any) -> str:
    """``sha256:<hex>`` of ``value`` as canonical JSON (sorted keys, no
    spaces): the form of ``spec_digest``."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def new_header(*, container_id: str, platform: str, spec_digest: str, mounts: Sequence[Mapping[str, Any]],
               tasks: Sequence[Mapping[str, Any]], tmpfs: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The caller's part of an image header, to hand to the
    ``before_checkpoint`` hook (plugins add facts under ``header["plugins"]``)
    and then to :func:`write_image`.

    :param container_id: the checkpointed container's ID.
    :param platform: the platform it ran on (``ptrace``, ``kvm``).
    :param spec_digest: the digest of its spec, e.g. :func:`json_digest` of config.json.
    :param mounts: the compiled mounts with their devices, as dicts
        (``pyrunsc mounts --format json`` rows: destination, type,
        filesystem, device, flags, data, source, overlay).
    :param tasks: a summary of the tasks, as dicts (e.g. pid, ppid, state, command).
    :param tmpfs: tmpfs mounts and the bytes they hold: ``{"destination", "bytes"}``.
    """
    return {
        "container_id": container_id,
        "platform": platform,
        "spec_digest": spec_digest,
        "mounts": [dict(m) for m in mounts],
        "tasks": [dict(t) for t in tasks],
        "tmpfs": [dict(t) for t in tmpfs],
        "plugins": {},
    }


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def _encode_header(header: Mapping[str, Any]) -> bytes:
    try:
        data = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"the image header is not JSON: {e}") from None
    if len(data) > MAX_HEADER:
        raise ValueError(f"the image header has {len(data)} bytes; at most {MAX_HEADER}")
    return data


def write_image(path: str | os.PathLike[str], header: Mapping[str, Any], kernel: bytes, memfile: MemoryFile, *,
                key: bytes, compression: str = "none", overwrite: bool = False,
                progress: Progress | None = None) -> dict[str, Any]:
    """Write an image of ``memfile`` and the ``kernel`` blob to the folder ``path``.

    :param header: the caller's header (:func:`new_header`, after the
        ``before_checkpoint`` hook); any JSON-able keys, none of :data:`WRITER_KEYS`.
    :param kernel: the pickled kernel; stored as it is (zstd with ``compression="zstd"``).
    :param memfile: the paused sandbox's memory file; its committed non-zero
        pages are saved, streamed in chunks.
    :param key: the image key (:mod:`.key`).
    :param compression: ``none`` or ``zstd`` (pages and kernel blob).
    :param overwrite: replace an existing image folder at ``path`` (never
        another kind of folder or file).
    :param progress: told of bytes done (memory examined, then the kernel
        blob); ``start`` and ``finish`` are called here.
    :return: the complete header as written.

    The folder appears at ``path`` complete or not at all: the files are
    written unnamed and fsynced, then published by one rename (see
    :mod:`.folder`). An exception (KeyboardInterrupt included) or a kill
    leaves nothing at ``path`` and no temporary folder.

    :raises ImageError: ``path`` exists (exit status 2), unless ``overwrite``
        and it is an image folder.
    :raises ValueError: a bad ``header`` or ``compression`` (a bug in the caller).
    :raises PyrunscError: the image cannot be written (disk full, ...): exit status 1.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; one of {', '.join(COMPRESSIONS)}")
    reserved = WRITER_KEYS & set(header)
    missing = [k for k in CALLER_KEYS if k not in header]
    if reserved or missing:
        raise ValueError(f"bad image header: reserved keys {sorted(reserved)}, missing keys {missing}")
    _encode_header(header)  # a bad header fails before any writing
    target = Path(path)
    progress = progress or Progress()
    stored_kernel = (zstandard.ZstdCompressor(level=KERNEL_ZSTD_LEVEL).compress(kernel)
                     if compression == "zstd" else kernel)
    try:
        with StagedFolder(target, replace=overwrite, marker=CHECKPOINT_FILE) as staged:
            pages_fd = staged.create(PAGES_FILE)
            ckpt_fd = staged.create(CHECKPOINT_FILE)
            committed = data_extents(memfile.fd, memfile.size)
            progress.start("checkpoint", sum(n for _, n in committed) + len(kernel))
            saved = save_pages(memfile, pages_fd, compression=compression, progress=progress, extents=committed)
            full = _full_header(header, saved, memfile, stored_kernel, len(kernel), key, compression)
            data = _encode_header(full)
            signed = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(data)) + data
            write_all(ckpt_fd, [signed, _mac(key, signed), stored_kernel])
            progress.advance(len(kernel))
            staged.commit()
    except FileExistsError as e:
        why = e.strerror or "already exists"
        hint = "" if overwrite else "; remove it or choose another path"
        raise ImageError(f"{why}{hint}", file=os.fspath(target)) from None
    except OSError as e:
        raise PyrunscError(f"cannot write the image {os.fspath(target)}: {e.strerror or e}") from e
    progress.finish()
    return full


def _full_header(header: Mapping[str, Any], saved: SavedPages, memfile: MemoryFile, stored_kernel: bytes,
                 kernel_size: int, key: bytes, compression: str) -> dict[str, Any]:
    full = dict(header)
    full.update(
        format=FORMAT_VERSION,
        pyrunsc_version=pyrunsc_version(),
        created=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        compression=compression,
        key_id=key_id(key),
        memory={
            "file_size": memfile.size,
            "page_size": PAGE_SIZE,
            "committed": saved.committed,
            "saved": saved.saved,
            "extents": [[off, n] for off, n in saved.extents],
        },
        parts={
            "kernel": {"file": CHECKPOINT_FILE, "size": len(stored_kernel), "raw_size": kernel_size,
                       "sha256": hashlib.sha256(stored_kernel).hexdigest()},
            "pages": {"file": PAGES_FILE, "size": saved.stored, "raw_size": saved.saved,
                      "sha256": saved.sha256},
        },
    )
    return full


# -------------------------------------------------------------------------
# Reading.
# -------------------------------------------------------------------------


@dataclass
class RawHeader:
    """``checkpoint.img``'s header as found, before or without the key."""

    path: Path
    version: int
    #: The bytes the MAC covers: prefix and JSON header.
    signed: bytes
    mac: bytes
    header: dict[str, Any]
    #: Where the kernel blob starts in checkpoint.img.
    kernel_offset: int
    #: checkpoint.img's size in bytes.
    file_size: int

    def verify_mac(self, key: bytes) -> bool:
        return hmac.compare_digest(_mac(key, self.signed), self.mac)

    def mac_problem(self, key: bytes) -> str:
        """Why the MAC fails with ``key``: another key, or an altered header."""
        theirs = self.header.get("key_id")
        if isinstance(theirs, str) and theirs != key_id(key):
            return (f"the MAC does not verify: the image was made with another key (key id {theirs}, "
                    f"this key is {key_id(key)}); give the right one with --image-key")
        return "the MAC does not verify: the header was altered or corrupted"


def _read_exact(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_header(path: str | os.PathLike[str]) -> RawHeader:
    """Read ``path/checkpoint.img``'s magic, version and header, without a key.

    The header is *not yet trusted*: check :meth:`RawHeader.verify_mac`
    (:func:`open_image` does).

    :raises ImageError: the folder or file is missing, not a pyrunsc image,
        truncated, of a future or unknown format version, or its header is
        not a JSON object.
    """
    folder = Path(path)
    file = folder / CHECKPOINT_FILE
    shown = os.fspath(file)
    if not folder.is_dir():
        raise ImageError("no image folder here" if not os.path.lexists(folder) else "not a folder",
                         file=os.fspath(folder))
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError("missing: not a checkpoint image folder, or an incomplete one", file=shown) from None
    except OSError as e:
        raise ImageError(f"cannot read: {e.strerror}", file=shown) from None
    try:
        size = os.fstat(fd).st_size
        prefix = _read_exact(fd, _PREFIX.size, 0)
        if len(prefix) < _PREFIX.size:
            if MAGIC.startswith(prefix[: len(MAGIC)]):
                raise ImageError(f"truncated: {len(prefix)} bytes, shorter than the {_PREFIX.size}-byte prefix",
                                 file=shown)
            raise ImageError("not a pyrunsc checkpoint image (no magic)", file=shown)
        magic, version, length = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise ImageError("not a pyrunsc checkpoint image (no magic)", file=shown)
        if version > FORMAT_VERSION:
            raise ImageError(f"format version {version} is newer than this pyrunsc reads ({FORMAT_VERSION}); "
                             f"restore it with a newer pyrunsc", file=shown)
        if version < 1:
            raise ImageError(f"unknown format version {version}", file=shown)
        if length > MAX_HEADER:
            raise ImageError(f"header length {length} is past the limit ({MAX_HEADER}): corrupted", file=shown)
        rest = _read_exact(fd, length + MAC_BYTES, _PREFIX.size)
    finally:
        os.close(fd)
    if len(rest) < length + MAC_BYTES:
        raise ImageError(f"truncated: {size} bytes, but the header and its MAC end at byte "
                         f"{_PREFIX.size + length + MAC_BYTES}", file=shown)
    data, mac = rest[:length], rest[length:]
    try:
        header = json.loads(data)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise ImageError("the header is not a JSON object: corrupted or altered", file=shown)
    return RawHeader(folder, version, prefix + data, mac, header, _PREFIX.size + length + MAC_BYTES, size)


def _field(header: Mapping[str, Any], shown: str, *names: str) -> Any:
    value: Any = header
    for name in names:
        if not isinstance(value, dict) or name not in value:
            raise ImageError(f"the header has no {'.'.join(names)}", file=shown)
        value = value[name]
    return value


def _int_field(header: Mapping[str, Any], shown: str, *names: str) -> int:
    value = _field(header, shown, *names)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ImageError(f"the header's {'.'.join(names)} is not a size: {value!r}", file=shown)
    return value


@dataclass
class CheckpointImage:
    """An image whose header is verified (MAC, format version, file sizes).

    ``header`` is safe to read (plain JSON: mounts to compare with the restore
    environment, ``memory.file_size`` for the new memory file, ...). The
    kernel blob comes only from :meth:`load`, once every part is verified.
    """

    path: Path
    header: dict[str, Any]
    raw: RawHeader = field(repr=False)
    extents: list[tuple[int, int]] = field(repr=False, default_factory=list)

    @property
    def compression(self) -> str:
        return str(self.header.get("compression", "none"))

    def _part(self, name: str) -> tuple[int, str, int]:
        shown = os.fspath(self.path / CHECKPOINT_FILE)
        size = _int_field(self.header, shown, "parts", name, "size")
        raw_size = _int_field(self.header, shown, "parts", name, "raw_size")
        digest = _field(self.header, shown, "parts", name, "sha256")
        if not isinstance(digest, str):
            raise ImageError(f"the header's parts.{name}.sha256 is not a string", file=shown)
        return size, digest, raw_size

    def check_sizes(self) -> None:
        """ImageError if a file is missing, or shorter or longer than the header says."""
        ksize = self._part("kernel")[0]
        want = self.raw.kernel_offset + ksize
        shown = os.fspath(self.path / CHECKPOINT_FILE)
        if self.raw.file_size != want:
            what = "truncated" if self.raw.file_size < want else "has extra bytes"
            raise ImageError(f"{what}: {self.raw.file_size} bytes, the header says {want}", file=shown)
        psize = self._part("pages")[0]
        pages = self.path / PAGES_FILE
        try:
            have = os.stat(pages).st_size
        except FileNotFoundError:
            raise ImageError("missing", file=os.fspath(pages)) from None
        if have != psize:
            what = "truncated" if have < psize else "has extra bytes"
            raise ImageError(f"{what}: {have} bytes, the header says {psize}", file=os.fspath(pages))

    def _open(self, name: str) -> int:
        try:
            return os.open(self.path / name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"cannot read: {e.strerror}", file=os.fspath(self.path / name)) from None

    def _kernel(self) -> bytes:
        """The kernel blob, checked against its SHA-256 and decompressed."""
        size, digest, raw_size = self._part("kernel")
        shown = os.fspath(self.path / CHECKPOINT_FILE)
        fd = self._open(CHECKPOINT_FILE)
        try:
            stored = _read_exact(fd, size, self.raw.kernel_offset)
        finally:
            os.close(fd)
        if len(stored) != size:
            raise ImageError(f"truncated: the kernel blob has {len(stored)} of {size} bytes", file=shown)
        if hashlib.sha256(stored).hexdigest() != digest:
            raise ImageError("SHA-256 mismatch in the kernel blob: altered or corrupted", file=shown)
        if self.compression != "zstd":
            return stored
        try:
            blob = zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_size)
        except zstandard.ZstdError as e:
            raise ImageError(f"corrupt zstd kernel blob: {e}", file=shown) from None
        if len(blob) != raw_size:
            raise ImageError(f"the kernel blob has {len(blob)} bytes, the header says {raw_size}", file=shown)
        return blob

    def load(self, memfile: MemoryFile, *, progress: Progress | None = None) -> bytes:
        """Restore the pages into ``memfile`` (a new, empty memory file at
        least ``header["memory"]["file_size"]`` bytes), verify every part, and
        return the kernel blob for the caller to unpickle.

        ``progress`` is told of memory bytes restored, then the kernel blob's;
        ``start`` and ``finish`` are called here.

        :raises ImageError: a part is truncated, corrupt or altered (its
            SHA-256 differs), or ``memfile`` is too small. No blob is returned
            then; ``memfile`` may hold garbage and must be discarded.
        """
        progress = progress or Progress()
        pages_size, pages_digest, saved = self._part("pages")
        file_size = _int_field(self.header, os.fspath(self.path / CHECKPOINT_FILE), "memory", "file_size")
        if memfile.size < file_size:
            raise ImageError(f"needs a memory file of {file_size} bytes, got {memfile.size}",
                             file=os.fspath(self.path))
        self.check_sizes()
        kernel_size = self._part("kernel")[2]
        progress.start("restore", saved + kernel_size)
        blob = self._kernel()  # small: fail fast, before copying the pages
        fd = self._open(PAGES_FILE)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # read ahead when not in the page cache
            restore_pages(fd, os.fspath(self.path / PAGES_FILE), extents=self.extents, stored=pages_size,
                          sha256=pages_digest, compression=self.compression, memfile=memfile, progress=progress)
        except OSError as e:
            raise PyrunscError(f"cannot restore the memory of {os.fspath(self.path)}: {e.strerror or e}") from e
        finally:
            os.close(fd)
        progress.advance(kernel_size)
        progress.finish()
        return blob

    def verify(self, *, progress: Progress | None = None) -> None:
        """Check every part's SHA-256 without restoring anything (a full read).

        :raises ImageError: as :meth:`load`.
        """
        progress = progress or Progress()
        self.check_sizes()
        pages_size, pages_digest, _ = self._part("pages")
        progress.start("verify", pages_size + self._part("kernel")[0])
        self._kernel()
        progress.advance(self._part("kernel")[0])
        fd = self._open(PAGES_FILE)
        try:
            digest = hash_file(fd, 0, pages_size, progress=progress)
        finally:
            os.close(fd)
        if digest != pages_digest:
            raise ImageError("SHA-256 mismatch: the file was altered or corrupted",
                             file=os.fspath(self.path / PAGES_FILE))
        progress.finish()


def open_image(path: str | os.PathLike[str], *, key: bytes) -> CheckpointImage:
    """Open the image folder ``path``, checking what can be checked without
    reading the parts: the magic, the format version, the header's MAC with
    ``key``, the header's shape and every file's size.

    :raises ImageError: (exit status 2, naming the file) the image is missing,
        truncated, of a future format version, made with another key, or altered.
    """
    raw = read_header(path)
    shown = os.fspath(raw.path / CHECKPOINT_FILE)
    if not raw.verify_mac(key):
        raise ImageError(raw.mac_problem(key), file=shown)
    header = raw.header
    if header.get("format") != raw.version:
        raise ImageError(f"the header's format {header.get('format')!r} differs from the file's ({raw.version})",
                         file=shown)
    compression = _field(header, shown, "compression")
    if compression not in COMPRESSIONS:
        raise ImageError(f"unknown compression {compression!r}", file=shown)
    file_size = _int_field(header, shown, "memory", "file_size")
    try:
        extents = check_extents(_field(header, shown, "memory", "extents"), file_size)
    except (ValueError, TypeError) as e:
        raise ImageError(f"the header's memory.extents: {e}", file=shown) from None
    image = CheckpointImage(raw.path, header, raw, extents)
    image.check_sizes()
    if sum(n for _, n in extents) != image._part("pages")[2]:
        raise ImageError("the header's extents and parts.pages.raw_size disagree", file=shown)
    return image


# -------------------------------------------------------------------------
# Inspection (pyrunsc image inspect).
# -------------------------------------------------------------------------


@dataclass
class Inspection:
    """What ``pyrunsc image inspect`` shows: the header (trusted only when
    ``mac`` is True), the verdicts and the files' sizes."""

    path: Path
    header: dict[str, Any]
    version: int
    #: True: the MAC verifies with the key; False: it does not; None: no key.
    mac: bool | None
    #: Why the image is bad (MAC, checksums, sizes); empty when it is good.
    problems: list[str]
    #: Per file: ``size`` (bytes) and ``allocated`` (bytes on disk).
    files: dict[str, dict[str, int]]
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": os.fspath(self.path),
            "format": self.version,
            "mac": {True: "ok", False: "mismatch", None: "unchecked"}[self.mac],
            "verified": self.mac is True and not self.problems,
            "problems": self.problems,
            "files": self.files,
            "header": self.header,
        }


def inspect_image(path: str | os.PathLike[str], key: bytes | None, *,
                  progress: Progress | None = None) -> Inspection:
    """Read an image's header and check it as far as ``key`` allows: the
    MAC (with a key), each file's size and each part's SHA-256.

    :raises ImageError: the header cannot be read at all (see :func:`read_header`).
    """
    t0 = time.perf_counter()
    raw = read_header(path)
    files = {}
    for name in (CHECKPOINT_FILE, PAGES_FILE):
        try:
            st = os.stat(raw.path / name)
            files[name] = {"size": st.st_size, "allocated": st.st_blocks * 512}
        except OSError:
            pass
    problems: list[str] = []
    mac = None if key is None else raw.verify_mac(key)
    if mac is False:
        assert key is not None
        problems.append(f"{CHECKPOINT_FILE}: {raw.mac_problem(key)}")
    image = CheckpointImage(raw.path, raw.header, raw)
    try:
        image.verify(progress=progress)
    except ImageError as e:
        problems.append(str(e).removeprefix(os.fspath(raw.path) + os.sep))
    return Inspection(raw.path, raw.header, raw.version, mac, problems, files, time.perf_counter() - t0)
