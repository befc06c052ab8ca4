"""Hook specifications: what a pyrunsc plugin can implement.

Plugins are modules (or objects) registered under the entry-point group
``pyrunsc``; they implement hooks with :data:`hookimpl`::

    from pyrunsc.core.hookspecs import hookimpl

    @hookimpl
    def register_types(register):
        register.add_filesystem(MyFS)

The core's own implementations are marked ``trylast``, so a plugin can
override any ``firstresult`` hook by returning a value, or wrap it with
``@hookimpl(wrapper=True)``.

Call order. ``register_types`` is called for each plugin as it loads, in load
order. Every other hook is called in pluggy's order: wrappers around the rest;
then ``tryfirst`` implementations; then the others, the plugin loaded last
first; then ``trylast`` ones (the core's). ``register_types``,
``add_commands``, ``before_checkpoint`` and ``after_restore`` are called one
plugin at a time, so that a failure names its plugin; they cannot be wrappers.

Every hook is documented in ``docs/plugins.md``; ``tests/test_docs.py`` fails
when one is not, or when no test plugin (``tests/fixtures/*``) implements it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .config import Config
    from .mounts import FdDispenser, ResolvedMount, RestoreEnvironment
    from .platform import Platform
    from .plugins import Register
    from .sandbox import GoferStart
    from .spec import Mount, Spec

PROJECT = "pyrunsc"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# Registration. Called once per plugin, right after the plugin loads.
# -------------------------------------------------------------------------


@hookspec
def register_types(register: Register) -> None:
    """Register the filesystem types and platforms this plugin provides.

    :param register: call ``register.add_filesystem(cls)`` with a
        :class:`pyrunsc.core.vfs.filesystem.FilesystemType` subclass, and
        ``register.add_platform(cls)`` with a
        :class:`pyrunsc.core.platform.Platform` subclass.
    :return: None. A class that fails validation, a name or mount type that
        another plugin already registered, or any exception marks this plugin
        broken: it is reported and unloaded, none of its registrations take
        effect, and the other plugins still load.

    Called once per plugin, right after it loads, in load order: entry points
    (built-in first, then the others by name), then plugins passed inline. Not
    firstresult; cannot be a wrapper.
    """


@hookspec
def add_commands(cli: click.Group) -> None:
    """Add CLI commands to ``pyrunsc``.

    :param cli: the top-level ``pyrunsc`` click group; call
        ``cli.add_command(cmd)``. A command name that already exists keeps its
        original command, with a warning naming the plugin.
    :return: None. An exception is reported as a warning naming the plugin,
        whatever it changed in ``cli`` is undone, and the CLI still runs.

    Called once when the CLI starts, after all plugins have loaded, one plugin
    at a time in call order (the plugin loaded last first), so of two plugins
    adding the same name the one loaded last wins. Not firstresult; cannot be
    a wrapper.
    """


# -------------------------------------------------------------------------
# Mounts (gVisor runsc/boot/fs.go, commit 80bdf8a4).
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def compile_mounts(spec: Spec, config: Config) -> list[Mount] | None:
    """The ordered list of mounts to build for ``spec``, not counting the root.

    :param spec: the loaded OCI spec.
    :param config: the runtime settings.
    :return: a list of :class:`pyrunsc.core.spec.Mount`, in mount order.

    The core's implementation (``trylast``) is the seed's ``compileMounts``:
    devtmpfs ``/dev``, devpts ``/dev/pts``, the spec's mounts except the ones
    the sentry provides, then proc, sysfs and tmpfs where missing. Wrap it with
    ``@hookimpl(wrapper=True)`` to add or filter mounts: ``mounts = yield``
    gives the list, and the wrapper returns the list to use.

    Called each time the mounts are compiled (resolving them, building a
    restore environment), in call order. Stops at first non-None result.
    """


@hookspec(firstresult=True)
def mount_device(mount: Mount) -> str | None:
    """The device string that identifies ``mount`` across a checkpoint.

    :param mount: a compiled mount; the root is a bind mount at ``/``.
    :return: a string. The core's implementation (``trylast``) gives
        ``9pfs-<destination>`` for bind mounts and ``none`` otherwise.

    Called once per mount when mounts are resolved and when a restore
    environment is built, in call order; return None for a mount that is not
    yours. Stops at first non-None result.
    """


@hookspec(firstresult=True)
def add_restore_mount(
    config: Config, renv: RestoreEnvironment, mount: Mount, fds: FdDispenser
) -> bool | None:
    """Record ``mount``'s ``MountArgs`` in the restore environment ``renv``.

    :param config: the runtime settings of the restoring sandbox.
    :param renv: the restore environment being built; call
        ``renv.add(fs_name, MountArgs(dev, flags, data))``.
    :param mount: a compiled mount; the root (a bind mount at ``/``) comes first.
    :param fds: the restoring gofer's fds; take one with ``fds.remove()`` for
        each mount the gofer serves, in mount order.
    :return: True once recorded, None to leave ``mount`` to the next
        implementation. The core's implementation (``trylast``) resolves the
        mount through its filesystem plugin and records it (or skips an unknown
        type with a warning).

    Called once per mount, in mount order, and for each mount in call order.
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def start_gofer(spec: Spec, config: Config, mounts: list[ResolvedMount]) -> GoferStart | None:
    """Start the file server (the gofer) for the mounts that need one.

    :param spec: the loaded OCI spec.
    :param config: the runtime settings (``config.file_access`` says proxy or direct).
    :param mounts: the resolved mounts, root first, in compiled order; each
        has ``fs_name``, ``data`` (whose ``rfdno=N`` numbers the gofer
        connections 0, 1, 2, ... in order) and ``mount.source``.
    :return: a :class:`pyrunsc.core.sandbox.GoferStart`: the sandbox's ends of
        the connections, one connected socket fd per gofer-served mount in
        order (the sandbox process inherits them and numbers them into the
        mount data), and the gofer process to wait for; None when no mount
        needs a gofer, or when the mounts are not yours.

    Called by ``pyrunsc run`` and ``restore`` before the sandbox process
    starts, once per sandbox. Stops at first non-None result.
    """


# -------------------------------------------------------------------------
# Platforms.
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def platform_create(config: Config) -> Platform | None:
    """The platform that ``config.platform`` names, ready to run tasks.

    :param config: the runtime settings.
    :return: a :class:`pyrunsc.core.platform.Platform`. The core's
        implementation (``trylast``) instantiates the registered platform of
        that name, or raises ConfigError listing the installed platforms when
        it is unknown or unavailable here.

    Called once per sandbox, at boot and at restore, in call order; return
    None for a platform that is not yours. Stops at first non-None result.
    """


# -------------------------------------------------------------------------
# Checkpoint and restore.
# -------------------------------------------------------------------------


@hookspec
def before_checkpoint(kernel: Any, header: dict[str, Any]) -> None:
    """Take part in a checkpoint, before the kernel is saved.

    :param kernel: the paused kernel about to be saved.
    :param header: the image header; a plugin may keep small JSON-able facts
        under ``header["plugins"][<plugin name>]``.
    :return: None. An exception aborts the checkpoint with a PluginError
        naming the plugin.

    Called once per checkpoint, with every task stopped, one plugin at a time
    in call order (the plugin loaded last first). Not firstresult; cannot be a
    wrapper.
    """


@hookspec
def after_restore(kernel: Any, renv: RestoreEnvironment, header: dict[str, Any]) -> None:
    """Complete a restore, after the kernel is loaded and before tasks run.

    :param kernel: the restored kernel.
    :param renv: the restore environment its mounts were re-bound through.
    :param header: the image header, as ``before_checkpoint`` left it.
    :return: None. An exception aborts the restore with a PluginError naming
        the plugin.

    Called once per restore, one plugin at a time in call order (the plugin
    loaded last first). Not firstresult; cannot be a wrapper.
    """
