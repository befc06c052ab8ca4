"""devpts: the filesystem of pseudo-terminal slaves (Linux ``fs/devpts/inode.c``,
``Documentation/filesystems/devpts.rst``; gVisor ``fsimpl/devpts``).

An instance holds ``ptmx`` (inode 2, character device 5:2) and one
``N`` (inode N + 3, character device 136:N) per open pty. Opening ``ptmx``
on the instance, or the devtmpfs ``/dev/ptmx`` node (see
:mod:`.devices`), allocates the lowest free index N (Linux
``devpts_new_index``), creates ``N`` and gives the master; ``N`` goes away
when the master closes, and N is free again once the slave is closed too.

Mount options (Linux's): ``uid=``, ``gid=`` (owner of new slaves; default
0, see below), ``mode=`` (of new slaves, default 0600), ``ptmxmode=``
(default 0666, as gVisor; Linux's default 0000 makes ``ptmx`` usable only
through ``/dev/ptmx``), ``max=`` (most ptys at once, ENOSPC beyond;
default 2**20, ``NR_UNIX98_PTY_MAX``) and ``newinstance``. Anything else is
EINVAL. As in gVisor (and Linux before 4.7), mounts without
``newinstance`` share one instance per kernel, whose options are those of the
first mount; with ``newinstance`` a mount gets its own.

Linux owns a new slave by the opener's fsuid and fsgid; a device opener is
not given credentials here, so without ``uid=``/``gid=`` slaves belong to
0:0 until the syscall layer can pass the opener's (see :meth:`DevptsSuperblock.new_pty`).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyrunsc.core.errors import SyscallError
from pyrunsc.core.vfs.file import DirectoryOps, FileDescription, FileOps
from pyrunsc.core.vfs.filesystem import parse_data
from pyrunsc.core.vfs.inode import DT_CHR, S_IFCHR, S_IFDIR, DirEntry, Inode, Superblock, dtype, makedev
from pyrunsc.core.vfs.options import parse_id, parse_mode

from .tty import Pty, PtyMasterOps

if TYPE_CHECKING:
    from pyrunsc.core.kernel.auth import Credentials
    from pyrunsc.core.vfs.vfs import DeviceRegistry

DEVPTS_SUPER_MAGIC = 0x1CD1
TTYAUX_MAJOR, PTMX_MINOR = 5, 2
UNIX98_PTY_SLAVE_MAJOR = 136
NR_UNIX98_PTY_MAX = 1 << 20

OPTION_KEYS = ("uid", "gid", "mode", "ptmxmode", "max", "newinstance")


@dataclass
class DevptsOptions:
    """Parsed devpts mount data; ``uid``/``gid`` None means "the opener's"."""

    uid: int | None = None
    gid: int | None = None
    mode: int = 0o600
    ptmxmode: int = 0o666
    max: int = NR_UNIX98_PTY_MAX
    newinstance: bool = False

    @classmethod
    def parse(cls, data: str) -> DevptsOptions:
        """From ``"mode=620,gid=5,newinstance"``; EINVAL for an unknown key or a bad value."""
        opts = cls()
        for key, value in parse_data(data).items():
            try:
                if key == "uid":
                    opts.uid = parse_id(value)
                elif key == "gid":
                    opts.gid = parse_id(value)
                elif key == "mode":
                    opts.mode = parse_mode(value) & 0o777
                elif key == "ptmxmode":
                    opts.ptmxmode = parse_mode(value) & 0o777
                elif key == "max":
                    if not value.isdigit():
                        raise ValueError(f"max must be a number, got {value!r}")
                    opts.max = min(int(value), NR_UNIX98_PTY_MAX)
                elif key == "newinstance":
                    opts.newinstance = True
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as e:
                raise SyscallError(errno.EINVAL, f"devpts: {e}") from None
        return opts


class DevptsSuperblock(Superblock):
    """One devpts instance. Its names come and go with ptys, so dentries are
    not trusted (``cache_dentries`` False). ``registry`` is the VFS's
    DeviceRegistry, where each slave's 136:N is registered."""

    cache_dentries = False

    def __init__(
        self, registry: DeviceRegistry, opts: DevptsOptions | None = None, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        super().__init__("devpts", DEVPTS_SUPER_MAGIC, clock=clock)
        self.registry = registry
        self.opts = opts or DevptsOptions()
        self._root = DevptsRoot(self)  # inode 1
        self.ptmx = DevptsNode(self, S_IFCHR | self.opts.ptmxmode, makedev(TTYAUX_MAJOR, PTMX_MINOR))  # inode 2
        #: Visible slaves by index.
        self.slaves: dict[int, PtsInode] = {}
        #: Indices in use (a slave whose master closed keeps its index until closed).
        self.indices: set[int] = set()

    def root(self) -> Inode:
        return self._root

    def new_pty(self, creds: Credentials | None = None) -> PtyMasterOps:
        """Allocate the lowest free index N, create ``N`` (owned by the
        ``uid``/``gid`` options, else by ``creds``' fsuid/fsgid, else 0:0)
        and return the master's FileOps. ENOSPC when ``max`` ptys are open."""
        index = 0
        while index in self.indices:
            index += 1
        if index >= self.opts.max:
            raise SyscallError(errno.ENOSPC)
        pty = Pty(index, on_master_close=self._kill, on_release=self._free)
        uid = self.opts.uid if self.opts.uid is not None else creds.fsuid if creds is not None else 0
        gid = self.opts.gid if self.opts.gid is not None else creds.fsgid if creds is not None else 0
        self.slaves[index] = PtsInode(self, pty, uid, gid)
        self.indices.add(index)
        self.registry.register(UNIX98_PTY_SLAVE_MAJOR, index, open_pts)
        return pty.open_master()

    def _kill(self, pty: Pty) -> None:
        """The master closed: ``N`` goes away (Linux ``devpts_pty_kill``)."""
        inode = self.slaves.pop(pty.index, None)
        if inode is not None:
            inode.nlink = 0

    def _free(self, pty: Pty) -> None:
        """Both ends closed: N may be allocated again (Linux ``devpts_kill_index``)."""
        self.indices.discard(pty.index)


class DevptsNode(Inode):
    """A devpts character device (``ptmx``, or a slave); size changes are EINVAL."""

    def __init__(self, sb: DevptsSuperblock, mode: int, rdev: int, uid: int = 0, gid: int = 0) -> None:
        super().__init__(sb, mode, uid, gid, rdev=rdev)
        self.btime = None


class PtsInode(DevptsNode):
    """``/dev/pts/N``: the slave of ``pty``; mode from the ``mode`` option."""

    def __init__(self, sb: DevptsSuperblock, pty: Pty, uid: int, gid: int) -> None:
        super().__init__(sb, S_IFCHR | sb.opts.mode, makedev(UNIX98_PTY_SLAVE_MAJOR, pty.index), uid, gid)
        self.ino = pty.index + 3
        self.pty = pty


def open_pts(fd: FileDescription) -> FileOps:
    """The opener of character devices 136:N: the slave of a live pty, when
    ``fd`` is on its devpts node; EIO otherwise, e.g. for a node made with
    mknod elsewhere, a pty whose master is closed or a locked pty (Linux
    ``pts_unix98_lookup`` and ``pty_open``)."""
    inode = fd.inode
    if not isinstance(inode, PtsInode):
        raise SyscallError(errno.EIO)
    return inode.pty.open_slave()


class DevptsRoot(Inode):
    """The root directory (mode 0755, inode 1): ``ptmx``, then the slaves by index.

    Cookies: ``ptmx`` 3, slave N ``N + 4``. Nothing can be created or removed
    (EACCES for open(O_CREAT), EPERM for the rest).
    """

    def __init__(self, sb: DevptsSuperblock) -> None:
        super().__init__(sb, S_IFDIR | 0o755)
        self.btime = None

    @property
    def _sb(self) -> DevptsSuperblock:
        sb = self.sb
        assert isinstance(sb, DevptsSuperblock)
        return sb

    def open(self, fd: FileDescription) -> FileOps:
        return DirectoryOps()

    def lookup(self, name: str) -> Inode:
        sb = self._sb
        if name == "ptmx":
            return sb.ptmx
        if name.isdigit() and str(int(name)) == name:
            inode = sb.slaves.get(int(name))
            if inode is not None:
                return inode
        raise SyscallError(errno.ENOENT)

    def iterate(self, cookie: int) -> Iterator[DirEntry]:
        sb = self._sb
        if cookie < 3:
            yield DirEntry("ptmx", sb.ptmx.ino, dtype(sb.ptmx.mode), 3)
        for index in sorted(sb.slaves):
            if index + 4 > cookie:
                yield DirEntry(str(index), sb.slaves[index].ino, DT_CHR, index + 4)

    def is_empty_dir(self) -> bool:
        return False

    def create(self, name: str, mode: int, creds: Credentials) -> Inode:
        raise SyscallError(errno.EACCES)
