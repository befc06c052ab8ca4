"""The compiled mount list and the restore environment.

Semantics follow gVisor ``runsc/boot/fs.go`` at commit 80bdf8a4 ("Sets the
restore environment for restoring a container"):

- ``compileMounts``: devtmpfs ``/dev``, devpts ``/dev/pts``, then every spec
  mount except those the sentry provides itself, then proc ``/proc``, sysfs
  ``/sys`` and tmpfs ``/tmp`` where no spec mount has that (cleaned)
  destination, whatever its type. See :func:`default_compile_mounts`.
- ``getMountNameAndOptions`` and ``mountFlags``: each mount's filesystem name,
  mount data and flags. The owning filesystem plugin gives the name and data;
  the generic flags are parsed here. See :func:`resolve_mount`.
- ``mountDevice``: ``9pfs-<destination>`` for bind mounts, ``none`` otherwise;
  the root is ``9pfs-/``. See :func:`default_mount_device`.
- ``createRestoreEnvironment`` and ``addRestoreMount``: the root first, then
  each compiled mount, as ``MountArgs(dev, flags, data)`` under its filesystem
  name. See :func:`create_restore_environment`.

Unlike the seed, direct file access works with checkpoint and restore: its
mounts are recorded under the direct filesystem's name with their host paths.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .document import quote
from .errors import ConfigError, PluginError, PyrunscError
from .spec import Mount, Spec, clean_path

if TYPE_CHECKING:
    from .config import Config
    from .plugins import Plugins

log = logging.getLogger("pyrunsc.mounts")

#: Mount destinations inside /dev that the sentry provides itself
#: (gVisor ``specutils.IsSupportedDevMount``; ``pkg/sentry/fs/dev``).
SENTRY_DEV_PATHS = (
    "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/null", "/dev/zero",
    "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm", "/dev/pts", "/dev/ptmx",
)

#: Flag names as they appear in JSON output, in this order.
FLAG_NAMES = ("ro", "noatime", "noexec", "nosuid", "nodev")

#: Generic mount options accepted for every filesystem type, with what each
#: sets on :class:`MountFlags` (None: accepted, no effect in the sentry).
#: Linux ``mount(8)`` and runc ``libcontainer/specconv`` ``mountPropagationMapping``.
GENERIC_OPTIONS: dict[str, tuple[str, bool] | None] = {
    "ro": ("read_only", True),
    "rw": ("read_only", False),
    "noatime": ("no_atime", True),
    "atime": ("no_atime", False),
    "strictatime": ("strict_atime", True),
    "nostrictatime": ("strict_atime", False),
    "relatime": ("strict_atime", False),
    "norelatime": ("strict_atime", True),
    "nodiratime": ("no_diratime", True),
    "diratime": ("no_diratime", False),
    "noexec": ("no_exec", True),
    "exec": ("no_exec", False),
    "nosuid": ("no_suid", True),
    "suid": ("no_suid", False),
    "nodev": ("no_dev", True),
    "dev": ("no_dev", False),
    "sync": ("sync", True),
    "async": ("sync", False),
    "dirsync": ("dir_sync", True),
    "bind": None,
    "rbind": None,
    "private": None,
    "rprivate": None,
    "slave": None,
    "rslave": None,
    "shared": None,
    "rshared": None,
    "unbindable": None,
    "runbindable": None,
    "defaults": None,
}


@dataclass(frozen=True)
class MountFlags:
    """Per-mount flags (gVisor ``fs.MountSourceFlags``; Linux ``MS_*``).

    Linux's default atime policy is relatime; ``strict_atime`` and
    ``no_atime`` change it.
    """

    read_only: bool = False
    no_atime: bool = False
    strict_atime: bool = False
    no_diratime: bool = False
    no_exec: bool = False
    no_suid: bool = False
    no_dev: bool = False
    sync: bool = False
    dir_sync: bool = False

    def names(self) -> list[str]:
        """The set flags among ``ro, noatime, noexec, nosuid, nodev``, in that order."""
        attrs = ("read_only", "no_atime", "no_exec", "no_suid", "no_dev")
        return [n for n, a in zip(FLAG_NAMES, attrs, strict=True) if getattr(self, a)]

    def all_names(self) -> list[str]:
        """Every set flag, for display (adds strictatime, nodiratime, sync, dirsync)."""
        extra = [
            ("strictatime", self.strict_atime), ("nodiratime", self.no_diratime),
            ("sync", self.sync), ("dirsync", self.dir_sync),
        ]
        return self.names() + [n for n, on in extra if on]


@dataclass(frozen=True)
class MountArgs:
    """How to find one mount again on restore (gVisor ``fs.MountArgs``)."""

    dev: str
    flags: MountFlags = MountFlags()
    data: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"dev": self.dev, "flags": self.flags.names(), "data": self.data}


@dataclass
class RestoreEnvironment:
    """Mount sources by filesystem name, in mount order (gVisor ``fs.RestoreEnvironment``).

    On restore, each saved mount takes the next ``MountArgs`` whose device
    matches under its filesystem name.
    """

    mount_sources: dict[str, list[MountArgs]] = field(default_factory=dict)

    def add(self, fs_name: str, args: MountArgs) -> None:
        self.mount_sources.setdefault(fs_name, []).append(args)

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        return {name: [a.to_json() for a in lst] for name, lst in self.mount_sources.items()}


class FdDispenser:
    """Hands out gofer fds in mount order, root first (gVisor ``fdDispenser``).

    With no fds given it numbers them 0, 1, 2, ... as the seed's tests do,
    which is what ``pyrunsc mounts`` shows before a gofer exists.
    """

    def __init__(self, fds: Iterable[int] | None = None) -> None:
        self._given = fds is not None
        self._fds: Iterator[int] = iter(fds) if fds is not None else itertools.count()

    def remove(self) -> int:
        """The next fd; PyrunscError when more mounts need one than were given."""
        try:
            return next(self._fds)
        except StopIteration:
            raise PyrunscError("more mounts need a gofer connection than the gofer has") from None


@dataclass(frozen=True)
class ResolvedMount:
    """A mount with its filesystem name, data, flags and device, ready to mount."""

    mount: Mount
    fs_name: str
    data: tuple[str, ...]
    flags: MountFlags
    device: str
    #: A tmpfs overlay goes over it (``--overlay`` on a writable bind mount).
    overlay: bool = False


def is_sentry_dev_mount(mount: Mount) -> bool:
    """True when the sentry provides ``mount``'s destination itself: ``/dev``, or
    one of :data:`SENTRY_DEV_PATHS` or anything below one."""
    dst = mount.clean_destination
    if dst == "/dev":
        return True
    return any(dst == d or dst.startswith(d + "/") for d in SENTRY_DEV_PATHS)


def default_compile_mounts(spec: Spec) -> list[Mount]:
    """The seed's ``compileMounts``: the mounts to build, in order."""
    mounts = [Mount("/dev", "devtmpfs"), Mount("/dev/pts", "devpts")]
    seen = set()
    for m in spec.mounts:
        if is_sentry_dev_mount(m):
            log.info("%s: dev mount at %s gives way to the sentry's own", mount_place(m), quote(m.destination))
            continue
        mounts.append(m)
        seen.add(m.clean_destination)
    # The OCI spec says proc and sys SHOULD be mounted; /tmp as tmpfs spares
    # the gofer and lets applications mknod there.
    for dest, mtype in (("/proc", "proc"), ("/sys", "sysfs"), ("/tmp", "tmpfs")):
        if dest not in seen:
            mounts.append(Mount(dest, mtype))
    return mounts


def default_mount_device(mount: Mount) -> str:
    """The seed's ``mountDevice``: ``9pfs-<destination>`` for bind mounts, else ``none``.

    The string is the same across checkpoint and restore and names the gofer
    connection uniquely; the root (a bind of ``root.path`` at ``/``) is ``9pfs-/``.
    """
    if mount.type == "bind":
        return "9pfs-" + mount.destination
    return "none"


def root_mount(spec: Spec) -> Mount:
    """The root filesystem as a bind mount of ``root.path`` at ``/``."""
    return Mount(
        "/", "bind", spec.root.path, ("ro",) if spec.root.readonly else (),
        origin=(spec.file, "root"),
    )


def parse_flags(mount: Mount, where: str) -> MountFlags:
    """The seed's ``mountFlags``, extended to every generic option.

    Unknown options without ``=`` are ignored with a warning naming them (as the
    seed does); ``key=value`` options are the filesystem's to judge.
    """
    values: dict[str, bool] = {}
    for opt in mount.options:
        if "=" in opt:
            continue
        if opt not in GENERIC_OPTIONS:
            log.warning("%s: ignoring unknown mount option %s", where, quote(opt))
            continue
        effect = GENERIC_OPTIONS[opt]
        if effect is not None:
            values[effect[0]] = effect[1]
    return MountFlags(**values)


def _origin(mount: Mount) -> tuple[str | None, str]:
    """(file, field) naming ``mount`` in errors: ``mounts[2]`` when it came from
    a spec, else a description of the runtime's own mount."""
    if mount.origin is not None:
        return mount.origin
    return None, f"{mount.type} mount at {mount.destination}"


def mount_place(mount: Mount, suffix: str = "") -> str:
    """Where ``mount`` was written, for warnings: ``FILE:LINE:COL: FIELD`` (the
    position for a YAML deployment only), ``FIELD`` being ``mounts[2]`` then
    ``suffix`` (``.options``); or a description of a mount the runtime adds."""
    file, field = _origin(mount)
    if file is None:
        return field
    pos = f":{mount.position[0]}:{mount.position[1]}" if mount.position else ""
    return f"{file}{pos}: {field}{suffix}"


def _root_has_no_filesystem(plugins: Plugins, mount: Mount) -> ConfigError:
    """The error for a root (a mount at ``/``) whose type no plugin serves:
    nothing could be mounted at all, so this is not a warning."""
    from .plugins import DISABLE_ENV

    file, where = _origin(mount)
    broken = sorted(i.name for i in plugins.infos if i.status == "broken")
    if mount.type == "bind" and "fs_9p" in plugins.disabled:
        hint = f"; fs_9p, which serves them, is disabled by {DISABLE_ENV}"
    elif plugins.disabled:
        hint = f"; is the plugin that serves them disabled? ({DISABLE_ENV}={','.join(sorted(plugins.disabled))})"
    elif broken:
        hint = f"; is the plugin that serves them broken? (broken: {', '.join(broken)})"
    elif mount.type == "bind":
        hint = "; pyrunsc's fs_9p plugin serves them: is it installed? (`pyrunsc plugins`)"
    else:
        hint = ""
    line, column = mount.position or (None, None)
    return ConfigError(
        f"no filesystem plugin serves {quote(mount.type)} mounts, which the root filesystem needs{hint}",
        file=file, field=where, line=line, column=column,
    )


def resolve_mount(
    plugins: Plugins, mount: Mount, config: Config, fds: FdDispenser
) -> ResolvedMount | None:
    """The seed's ``getMountNameAndOptions``: None for an unknown type (warned),
    except at ``/``: a root with no filesystem is a ConfigError.

    ConfigError, naming the mount and option, for a ``key=value`` option the
    filesystem does not take or a bad value (Linux answers EINVAL). A
    filesystem type (or a ``mount_device`` hook) that fails otherwise, or
    returns something unusable, is a PluginError naming its plugin.
    """
    file, where = _origin(mount)
    opt_field = f"{where}.options" if mount.origin else where
    line, column = mount.position or (None, None)
    dest = quote(mount.destination)

    def error(message: str, field: str) -> ConfigError:
        return ConfigError(message, file=file, field=field, line=line, column=column)

    owner = plugins.registry.filesystem_for_type(mount.type)
    if owner is None:
        if mount.clean_destination == "/":
            raise _root_has_no_filesystem(plugins, mount)
        log.warning(
            "%s: ignoring mount at %s: no filesystem plugin serves type %s",
            mount_place(mount), dest, quote(mount.type),
        )
        return None
    plugin = plugins.registry.owner.get(owner, owner.__module__)

    def broken(what: str, detail: str) -> PluginError:
        return PluginError(
            plugin,
            f"filesystem {owner.name!r}: {what} for the mount at {dest} ({mount_place(mount)}): {detail}",
        )

    for opt in mount.options:
        if "=" not in opt:
            continue
        key, value = opt.split("=", 1)
        if key not in owner.data_keys:
            takes = ", ".join(owner.data_keys) or "no key=value options"
            raise error(
                f"{owner.name} does not take option {quote(opt)} (mount at {dest}); it takes {takes}",
                opt_field,
            )
        try:
            owner.check_option(key, value)
        except ValueError as e:
            raise error(f"option {quote(opt)} (mount at {dest}): {e}", opt_field) from None
        except PyrunscError:
            raise
        except Exception as e:
            raise broken(f"check_option({quote(key)}, ...) failed", f"{type(e).__name__}: {e}") from e
    flags = parse_flags(mount, mount_place(mount, ".options"))
    try:
        result = owner.mount_data(mount, config, fds)
    except ValueError as e:
        raise error(f"{e} (mount at {dest})", where) from None
    except PyrunscError:
        raise
    except Exception as e:
        raise broken("mount_data failed", f"{type(e).__name__}: {e}") from e
    if (
        not isinstance(result, tuple | list)
        or len(result) != 2
        or not isinstance(result[0], str)
        or not isinstance(result[1], tuple | list)
        or not all(isinstance(d, str) for d in result[1])
    ):
        got = repr(result)
        raise broken(
            "mount_data returned an unusable value",
            f"got {got if len(got) <= 80 else got[:77] + '...'}, expected (filesystem name, [data options])",
        )
    fs_name, data = result
    overlay = mount.type == "bind" and config.overlay and not flags.read_only
    return ResolvedMount(
        mount=mount,
        fs_name=fs_name,
        data=tuple(data),
        flags=flags,
        device=plugins.mount_device(mount),
        overlay=overlay,
    )


def resolve_all(
    plugins: Plugins, spec: Spec, config: Config, fds: FdDispenser | None = None
) -> list[ResolvedMount]:
    """The root then every compiled mount, resolved; unknown types left out."""
    fds = fds or FdDispenser()
    out = []
    for m in [root_mount(spec), *plugins.compile_mounts(spec, config)]:
        r = resolve_mount(plugins, m, config, fds)
        if r is not None:
            out.append(r)
    return out


def mount_rows(resolved: Iterable[ResolvedMount]) -> list[dict[str, Any]]:
    """Resolved mounts as ``pyrunsc mounts --format json`` shows them, and as
    an image header records them: destination, type, filesystem, device,
    flags (all set flag names), data, source, overlay."""
    return [
        {
            "destination": r.mount.destination,
            "type": r.mount.type,
            "filesystem": r.fs_name,
            "device": r.device,
            "flags": r.flags.all_names(),
            "data": ",".join(r.data),
            "source": r.mount.source,
            "overlay": r.overlay,
        }
        for r in resolved
    ]


def create_restore_environment(
    plugins: Plugins, spec: Spec, config: Config, fds: FdDispenser | None = None
) -> RestoreEnvironment:
    """The seed's ``createRestoreEnvironment``: root first, then every compiled
    mount through the ``add_restore_mount`` hook."""
    fds = fds or FdDispenser()
    renv = RestoreEnvironment()
    for m in [root_mount(spec), *plugins.compile_mounts(spec, config)]:
        plugins.add_restore_mount(config, renv, m, fds)
    return renv


def subtargets(root: str, mounts: Iterable[Mount]) -> list[str]:
    """Destinations of ``mounts`` strictly below ``root``, relative to it (the
    seed's ``subtargets``): they need stub folders in an overlay over ``root``."""
    r = clean_path(root)
    if not r.endswith("/"):
        r += "/"
    out = []
    for m in mounts:
        t = m.clean_destination
        if t.startswith(r) and t[len(r):]:
            out.append(t[len(r):])
    return out
