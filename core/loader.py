"""The boot loader: from a spec and config to a kernel with its init task
(gVisor ``runsc/boot/loader.go``).

Steps, as ARCHITECTURE.md's "Boot, step by step": compile and resolve the
mounts, build the mount namespace from filesystem plugins, create the platform,
then the kernel (clocks, credentials from ``process.user``, capabilities, the
UTS namespace with ``hostname``) and the init task from ``process.args``,
``env`` and ``cwd``, with the caller's stdio.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass

from .config import Config
from .errors import ConfigError, PyrunscError, SyscallError
from .kernel.auth import ALL_CAPS, Credentials
from .kernel.kernel import Kernel, UTSNamespace
from .kernel.task import Task
from .mm.memfile import MemoryFile
from .mounts import FdDispenser, resolve_all
from .plugins import Plugins
from .spec import Capabilities, Spec
from .vfs.filesystem import MountContext
from .vfs.host import HostFiles
from .vfs.namespace import build_mount_namespace
from .vfs.vfs import VirtualFilesystem

log = logging.getLogger("pyrunsc.loader")


@dataclass
class Sandbox:
    """A booted sandbox: the kernel and its init task (None for a restored
    kernel, whose tasks resume where they were)."""

    kernel: Kernel
    init: Task | None
    memfile: MemoryFile

    def close(self) -> None:
        self.kernel.platform.close()
        self.memfile.close()


def credentials(spec: Spec) -> Credentials:
    """``process.user`` and ``process.capabilities`` as kernel credentials.

    With no ``capabilities`` object, root gets all and others none (Linux
    execve); with one, its sets are used as given.
    """
    assert spec.process is not None
    user = spec.process.user
    caps: Capabilities | None = spec.process.capabilities
    creds = Credentials.for_user(user.uid, user.gid, tuple(user.additional_gids))
    if caps is not None:
        from dataclasses import replace

        creds = replace(
            creds,
            effective=Capabilities.mask(caps.effective),
            permitted=Capabilities.mask(caps.permitted),
            inheritable=Capabilities.mask(caps.inheritable),
            bounding=Capabilities.mask(caps.bounding) if caps.bounding else ALL_CAPS,
            ambient=Capabilities.mask(caps.ambient),
        )
    return creds


def boot(
    plugins: Plugins,
    spec: Spec,
    config: Config,
    *,
    stdio: tuple[int, int, int] = (0, 1, 2),
    gofer_fds: list[int] | None = None,
) -> Sandbox:
    """Build the sandbox for ``spec``. ConfigError (exit 2) for bad input such
    as a missing rootfs or program; PyrunscError for runtime failures."""
    if spec.process is None:
        raise ConfigError("a container needs a 'process' to run", file=spec.file, field="process")
    if not os.path.isdir(spec.root.path):
        raise ConfigError(f"the root filesystem {spec.root.path!r} is not a folder", file=spec.file,
                          field="root.path")
    memfile = MemoryFile()
    try:
        vfs = VirtualFilesystem()
        platform = plugins.platform_create(config)
        mctx = MountContext(vfs, memfile, filesystems=dict(plugins.registry.filesystems))
        fds = FdDispenser(gofer_fds) if gofer_fds is not None else FdDispenser()
        compiled = plugins.compile_mounts(spec, config)
        resolved = resolve_all(plugins, spec, config, fds)
        root, mounts = resolved[0], resolved[1:]
        ns = build_mount_namespace(mctx, root, mounts, compiled)
        platform.start(memfile)
        uts = UTSNamespace(hostname=spec.hostname or "localhost")
        kernel = Kernel(platform, memfile, vfs, ns, uts=uts, strace=config.strace)
        mctx.kernel = kernel  # proc reads the kernel's tasks through its mount context
        host = HostFiles()
        stdio_files = host.wrap_stdio(stdio)
        proc = spec.process
        rlimits = {r.resource: (r.soft, r.hard) for r in proc.rlimits}
        umask = proc.user.umask if proc.user.umask is not None else 0o022
        try:
            init = kernel.create_process(
                proc.args, proc.env, proc.cwd, credentials(spec), rlimits=rlimits, umask=umask,
                stdio=stdio_files,
            )
        except SyscallError as e:
            raise _process_error(spec, e) from None
        return Sandbox(kernel, init, memfile)
    except BaseException:
        memfile.close()
        raise


def _process_error(spec: Spec, e: SyscallError) -> PyrunscError:
    """A failure to start ``process.args[0]`` is bad input (exit 2), named."""
    assert spec.process is not None
    prog = spec.process.args[0]
    why = {
        errno.ENOENT: "no such file in the container (or not in PATH)",
        errno.EACCES: "not executable (permission denied, or not a regular file)",
        errno.ENOEXEC: "not a static x86-64 Linux executable",
        errno.ENOTDIR: "a path component is not a directory",
    }.get(e.errno, e.name)
    detail = f" ({e.detail})" if e.detail else ""
    if e.errno in (errno.ENOENT, errno.ENOTDIR) and e.detail.startswith("cwd "):
        return ConfigError(f"{spec.process.cwd!r}: {e.detail}", file=spec.file, field="process.cwd")
    return ConfigError(f"cannot run {prog!r}: {why}{detail}", file=spec.file, field="process.args[0]")
