"""fs_9p: the root and bind mounts, served by the gofer over 9P2000.L (proxy
file access) or opened by the sentry itself (direct file access).

Mount names and data follow gVisor ``runsc/boot/fs.go`` (commit 80bdf8a4):
under proxy access a bind mount is ``9p`` with
``trans=fd,rfdno=N,wfdno=N,privateunixsocket=true``, N being the mount's gofer
fd; under direct access it is ``hostfs`` with
``root=<host path>,dont_translate_ownership=true``.

The gofer itself (the 9P2000.L server confined to one folder) is
:mod:`.gofer`, on the protocol package :mod:`.p9`; the plugin adds its
standalone form to the CLI as ``pyrunsc gofer``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
from typing import TYPE_CHECKING, NoReturn

from pyrunsc.core.config import Config
from pyrunsc.core.errors import ConfigError, PyrunscError, SyscallError
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import FdDispenser, MountFlags, ResolvedMount
from pyrunsc.core.plugins import Register
from pyrunsc.core.spec import Mount, Spec
from pyrunsc.core.vfs.filesystem import FilesystemType, MountContext, parse_data
from pyrunsc.core.vfs.inode import Superblock

if TYPE_CHECKING:
    import click

    from pyrunsc.core.sandbox import GoferStart


class NinePFS(FilesystemType):
    """9p: a 9P2000.L client on one gofer connection per mount, or on an
    external 9P server's (a spec mount of type ``9p``, see :meth:`mount_data`).
    The client is :mod:`.clientfs`."""

    name = "9p"
    mount_types = ("bind", "9p")
    #: What a spec mount may write (``aname`` and ``dfltuid`` only on ``9p``
    #: mounts): Tattach's aname, uname and numeric user, the msize asked
    #: for, and the cache mode (exclusive/shared, or Linux's names).
    data_keys = ("aname", "uname", "dfltuid", "msize", "cache")

    @classmethod
    def check_option(cls, key: str, value: str) -> None:
        from .clientfs import check_option

        check_option(key, value)

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: FdDispenser) -> tuple[str, list[str]]:
        """``bind``: the seed's ``trans=fd,rfdno=N,wfdno=N,privateunixsocket=true``
        (proxy file access; N the next gofer fd) or hostfs (direct), plus
        ``msize``/``cache`` when the mount gives them. ``9p``: an external
        server, source ``unix:PATH`` or ``tcp:HOST:PORT`` ->
        ``trans=unix,addr=PATH`` or ``trans=tcp,addr=HOST,port=PORT``, then
        the mount's options in spec order. ValueError for a bad source, or
        for aname/uname/dfltuid on a bind mount."""
        from .clientfs import parse_source

        given = [o for o in mount.options if "=" in o and o.split("=", 1)[0] in cls.data_keys]
        if mount.type == "9p":
            return cls.name, [*parse_source(mount.source or ""), *given]
        misplaced = [o.split("=", 1)[0] for o in given if o.split("=", 1)[0] in ("aname", "uname", "dfltuid")]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} applies to mounts of type 9p only, not bind mounts")
        if config.file_access == "direct":
            return HostFS.mount_data(mount, config, fds)
        fd = fds.remove()
        return cls.name, ["trans=fd", f"rfdno={fd}", f"wfdno={fd}", "privateunixsocket=true", *given]

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        """Connect (the gofer fd, or the external server), Tversion, Tattach:
        see :func:`.clientfs.mount_9p` for the data keys and errors."""
        from .clientfs import mount_9p

        return mount_9p(ctx, source, flags, data)


class HostFS(FilesystemType):
    """hostfs: host files opened directly by the sentry (``--file-access direct``)."""

    name = "hostfs"

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: FdDispenser) -> tuple[str, list[str]]:
        if not mount.source:
            raise ValueError("a bind mount needs a source")
        return cls.name, [f"root={mount.source}", "dont_translate_ownership=true"]

    @classmethod
    def mount(cls, ctx: MountContext, source: str, flags: MountFlags, data: str) -> Superblock:
        from .hostfs import HostFSSuperblock

        root = parse_data(data).get("root") or source
        if not root:
            raise SyscallError(errno.EINVAL, "hostfs needs root=<host folder>")
        return HostFSSuperblock(root, read_only=flags.read_only, clock=ctx.clock)


@hookimpl
def register_types(register: Register) -> None:
    register.add_filesystem(NinePFS)
    register.add_filesystem(HostFS)


@hookimpl
def add_commands(cli: click.Group) -> None:
    """``pyrunsc gofer``: the standalone gofer (see :mod:`.gofer`)."""
    from .gofer import gofer_command

    cli.add_command(gofer_command)


def gofer_mounts(config: Config, mounts: list[ResolvedMount]) -> list[ResolvedMount]:
    """The mounts the gofer serves, in order: under proxy file access, every
    ``9p`` mount whose data says ``trans=fd`` (the root and bind mounts)."""
    if config.file_access != "proxy":
        return []
    return [r for r in mounts if r.fs_name == NinePFS.name and parse_data(",".join(r.data)).get("trans") == "fd"]


@hookimpl
def start_gofer(spec: Spec, config: Config, mounts: list[ResolvedMount]) -> GoferStart | None:
    """Fork the gofer, serving each gofer mount's host folder on its own
    socketpair (AF_UNIX, SOCK_STREAM), root first, as gVisor's
    ``runsc/sandbox`` starts ``runsc gofer`` with one ``--io-fds`` per mount.

    A mount is served read-only when its flags say ``ro`` (the root: when
    ``root.readonly``) or with ``--overlay``, whose tmpfs upper layer takes
    the writes (gVisor ``runsc/cmd/gofer.go``). The gofer gets only its own
    ends (pass_fds), runs in a new session (a terminal's Ctrl-C is the
    container's) and exits once every channel has closed, i.e. when the
    sandbox holding the other ends has exited. Its ends are closed here.

    Returns GoferStart(fds=the sandbox's ends in mount order, process=the
    gofer), or None under direct file access or when no mount needs a gofer.
    ConfigError naming the mount when its source is not a folder (the gofer
    serves folders only); PyrunscError when the gofer cannot be started.
    """
    from pyrunsc.core.sandbox import ChildProcess, GoferStart

    served = gofer_mounts(config, mounts)
    if not served:
        return None
    for r in served:
        src = r.mount.source or ""
        if not os.path.isdir(src):
            what = "does not exist" if not os.path.exists(src) else "is not a folder (the gofer serves folders only)"
            file, field = r.mount.origin or (None, f"mount at {r.mount.destination}")
            raise ConfigError(f"the source {src!r} of the mount at {r.mount.destination} {what}",
                              file=file, field=field)
    ours: list[socket.socket] = []
    theirs: list[socket.socket] = []
    channels: list[tuple[int, bool, str]] = []
    try:
        for r in served:
            mine, gofer_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            ours.append(mine)
            theirs.append(gofer_end)
            mine.set_inheritable(True)
            read_only = r.flags.read_only or config.overlay
            channels.append((gofer_end.fileno(), read_only, os.path.abspath(r.mount.source or "")))
        sys.stdout.flush()
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(ready_r)
            os.close(ready_w)
            raise PyrunscError(f"cannot start the gofer: {e}") from None
        if pid == 0:
            _gofer_main(channels, ready_w)
        os.close(ready_w)
        # Wait until the gofer holds only its own ends (and is serving).
        ready, _, _ = select.select([ready_r], [], [], 10)
        ok = bool(ready) and os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        if not ok:
            raise PyrunscError("the gofer did not start")
    except BaseException:
        for s in ours:
            s.close()
        raise
    finally:
        for s in theirs:
            s.close()
    return GoferStart(fds=[s.detach() for s in ours], process=ChildProcess(pid))


def _gofer_main(channels: list[tuple[int, bool, str]], ready_w: int) -> NoReturn:
    """The forked gofer (forking spares a second interpreter start-up): its own
    session, no file of its parent's but its channels and stderr (so it holds
    neither the sandbox's ends nor the caller's pipes), then it tells the
    parent it is ready on ``ready_w`` and serves until the channels close."""
    code = 1
    try:
        os.setsid()
        keep = {fd for fd, _, _ in channels} | {2, ready_w}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.close(devnull)
        os.write(ready_w, b"1")
        os.close(ready_w)
        from .gofer import serve_channels

        serve_channels(channels)
        code = 0
    except BaseException:  # the gofer must never fall back into the caller's code
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


