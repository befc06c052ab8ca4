"""The plugin manager: loads plugins and is the core's one way to call hooks.

Load order (tox 4's ``tox.plugin.manager``): the entry-point group ``pyrunsc``
(the built-in plugins of the ``pyrunsc`` distribution first, then the others by
name), less the names in ``PYRUNSC_DISABLE_PLUGINS``; then plugins passed
inline. The core's own hook implementations are registered before them all, as
``pyrunsc.core``, and marked ``trylast`` so that every plugin comes before them.
Each plugin is loaded, validated (``check_pending``, and no wrappers for the
hooks called one plugin at a time) and asked to ``register_types`` on its own:
one that fails at any step is unloaded and reported with its error, and the
others still load.

The core calls hooks only through :class:`Plugins`' methods, never through
``pm.hook`` directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError, PyrunscError
from .hookspecs import hookimpl
from .mounts import (
    FdDispenser,
    MountArgs,
    RestoreEnvironment,
    default_compile_mounts,
    default_mount_device,
    mount_place,
    resolve_mount,
)
from .platform import Platform
from .spec import Mount
from .vfs.filesystem import FilesystemType

if TYPE_CHECKING:
    import click

    from .config import Config
    from .mounts import ResolvedMount
    from .sandbox import GoferStart
    from .spec import Spec

log = logging.getLogger("pyrunsc.plugins")

ENTRY_POINT_GROUP = "pyrunsc"
DISABLE_ENV = "PYRUNSC_DISABLE_PLUGINS"
DISTRIBUTION = "pyrunsc"
CORE_NAME = "pyrunsc.core"

#: Hooks that pyrunsc calls one plugin at a time (to name the plugin that
#: fails), so a ``wrapper``/``hookwrapper`` implementation could never run.
PER_PLUGIN_HOOKS = ("register_types", "add_commands", "before_checkpoint", "after_restore")


@dataclass
class PluginInfo:
    """What ``pyrunsc plugins`` shows about one plugin."""

    name: str
    distribution: str = ""
    version: str = ""
    #: "loaded", "disabled" or "broken".
    status: str = "loaded"
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    filesystems: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error or None,
            "hooks": self.hooks,
            "filesystems": self.filesystems,
            "platforms": self.platforms,
        }


class Registry:
    """Filesystem types and platforms by name, and which plugin gave each."""

    def __init__(self) -> None:
        self.filesystems: dict[str, type[FilesystemType]] = {}
        self.platforms: dict[str, type[Platform]] = {}
        self._by_mount_type: dict[str, type[FilesystemType]] = {}
        self.owner: dict[type, str] = {}

    def filesystem(self, name: str) -> type[FilesystemType] | None:
        return self.filesystems.get(name)

    def filesystem_for_type(self, mount_type: str) -> type[FilesystemType] | None:
        """The filesystem that serves spec mounts of ``mount_type``, if any."""
        return self._by_mount_type.get(mount_type)

    def platform(self, name: str) -> type[Platform] | None:
        return self.platforms.get(name)

    def _commit(
        self, owner: str, filesystems: list[type[FilesystemType]], platforms: list[type[Platform]]
    ) -> None:
        for fs in filesystems:
            self.filesystems[fs.name] = fs
            for t in fs.mount_types:
                self._by_mount_type[t] = fs
            self.owner[fs] = owner
        for p in platforms:
            self.platforms[p.name] = p
            self.owner[p] = owner


class Register:
    """The object a plugin's ``register_types`` receives (tox's ``ToxEnvRegister``).

    Registrations are checked at once and take effect only when the plugin's
    hook returns without error, so a broken plugin leaves nothing behind.
    """

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self.plugin = plugin
        self.filesystems: list[type[FilesystemType]] = []
        self.platforms: list[type[Platform]] = []

    def add_filesystem(self, cls: type[FilesystemType]) -> None:
        """Register a :class:`FilesystemType` subclass; PluginError if invalid or taken."""
        if not (isinstance(cls, type) and issubclass(cls, FilesystemType)):
            raise PluginError(
                self.plugin, f"add_filesystem({cls!r}): not a FilesystemType subclass"
            )
        if not isinstance(cls.name, str) or not cls.name:
            raise PluginError(self.plugin, f"filesystem {cls.__name__} has no name")
        for attr in ("mount_types", "data_keys"):
            value = getattr(cls, attr)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise PluginError(
                    self.plugin,
                    f"filesystem {cls.name!r}: {attr} must be a tuple of names, got {value!r}",
                )
        taken = self._registry.filesystem(cls.name) or next(
            (f for f in self.filesystems if f.name == cls.name), None
        )
        if taken is not None:
            raise PluginError(
                self.plugin,
                f"filesystem {cls.name!r} is already registered by "
                f"{self._registry.owner.get(taken, self.plugin)!r}",
            )
        for t in cls.mount_types:
            other = self._registry.filesystem_for_type(t) or next(
                (f for f in self.filesystems if t in f.mount_types), None
            )
            if other is not None:
                raise PluginError(
                    self.plugin,
                    f"mount type {t!r} is already served by filesystem {other.name!r} "
                    f"of plugin {self._registry.owner.get(other, self.plugin)!r}",
                )
        self.filesystems.append(cls)

    def add_platform(self, cls: type[Platform]) -> None:
        """Register a :class:`Platform` subclass; PluginError if invalid or taken."""
        if not (isinstance(cls, type) and issubclass(cls, Platform)):
            raise PluginError(self.plugin, f"add_platform({cls!r}): not a Platform subclass")
        if not isinstance(cls.name, str) or not cls.name:
            raise PluginError(self.plugin, f"platform {cls.__name__} has no name")
        taken = self._registry.platform(cls.name) or next(
            (p for p in self.platforms if p.name == cls.name), None
        )
        if taken is not None:
            raise PluginError(
                self.plugin,
                f"platform {cls.name!r} is already registered by "
                f"{self._registry.owner.get(taken, self.plugin)!r}",
            )
        self.platforms.append(cls)


class CoreHooks:
    """The core's default hook implementations, registered last (``trylast``)."""

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins

    @hookimpl(trylast=True)
    def compile_mounts(self, spec: Spec, config: Config) -> list[Mount]:
        return default_compile_mounts(spec)

    @hookimpl(trylast=True)
    def mount_device(self, mount: Mount) -> str:
        return default_mount_device(mount)

    @hookimpl(trylast=True)
    def add_restore_mount(
        self, config: Config, renv: RestoreEnvironment, mount: Mount, fds: FdDispenser
    ) -> bool:
        resolved = resolve_mount(self.plugins, mount, config, fds)
        if resolved is not None:
            renv.add(resolved.fs_name, MountArgs(resolved.device, resolved.flags, ",".join(resolved.data)))
        return True

    @hookimpl(trylast=True)
    def platform_create(self, config: Config) -> Platform:
        return self.plugins.platform_class(config)(config)


class Plugins:
    """Loads plugins and calls their hooks; one method per hook.

    ``inline`` are (name, plugin) pairs registered after the entry points, for
    tests and embedding. ``entry_points=False`` loads only those. ``disabled``
    names entry-point plugins not to load; None reads ``PYRUNSC_DISABLE_PLUGINS``
    (comma-separated).

    ``infos`` describes every plugin, loaded, disabled or broken, in load order;
    ``registry`` holds the filesystem types and platforms of the loaded ones.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        inline: Sequence[tuple[str, object]] = (),
        disabled: Iterable[str] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.infos: list[PluginInfo] = []
        if disabled is None:
            disabled = [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
        self.disabled = set(disabled)
        # First, so that no plugin can take its name; trylast keeps it last.
        self.pm.register(CoreHooks(self), name=CORE_NAME)
        if entry_points:
            self._load_entry_points()
        for name, plugin in inline:
            self._add(PluginInfo(name=name, distribution="(inline)"), plugin)

    # Loading.

    def _load_entry_points(self) -> None:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))

        def order(ep: metadata.EntryPoint) -> tuple[bool, str]:
            dist = ep.dist.name if ep.dist else ""
            return (dist != DISTRIBUTION, ep.name)

        seen: dict[str, str] = {}
        for ep in sorted(eps, key=order):
            info = PluginInfo(
                name=ep.name,
                distribution=ep.dist.name if ep.dist else "",
                version=ep.dist.version if ep.dist else "",
            )
            if ep.name in seen:
                self._broken(
                    info, f"another installed plugin has this name (distribution {seen[ep.name]!r})"
                )
                continue
            seen[ep.name] = info.distribution
            if ep.name in self.disabled:
                info.status = "disabled"
                info.error = f"blocked by {DISABLE_ENV}"
                self.infos.append(info)
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as e:
                self._broken(info, f"failed to import {ep.value}: {type(e).__name__}: {e}")
                continue
            self._add(info, plugin)
        for name in sorted(self.disabled - seen.keys()):
            log.warning("%s names %r, which is not an installed plugin", DISABLE_ENV, name)

    def _broken(self, info: PluginInfo, error: str) -> None:
        info.status, info.error = "broken", error
        self.infos.append(info)
        log.warning("plugin %r is broken and was not loaded: %s", info.name, error)

    def _add(self, info: PluginInfo, plugin: object) -> None:
        name = info.name
        if self.pm.has_plugin(name):
            self._broken(info, "invalid: a plugin of this name is already loaded")
            return
        if self.pm.is_registered(plugin):
            self._broken(
                info, f"invalid: the same plugin is already loaded as {self.pm.get_name(plugin)!r}"
            )
            return
        try:
            # pluggy validates every hookimpl before it changes any state.
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as e:
            self._broken(info, "invalid: " + "; ".join(str(e).splitlines()))
            return
        error = self._validate(name, plugin)
        if error:
            self.pm.unregister(name=name)
            self._broken(info, f"invalid: {error}")
            return
        register = Register(self.registry, name)
        try:
            for impl in self._impls("register_types", name):
                _invoke(impl, register=register)
        except Exception as e:
            self.pm.unregister(name=name)
            msg = e.message if isinstance(e, PluginError) else f"{type(e).__name__}: {e}"
            self._broken(info, f"register_types failed: {msg}")
            return
        self.registry._commit(name, register.filesystems, register.platforms)
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
        info.filesystems = [f.name for f in register.filesystems]
        info.platforms = [p.name for p in register.platforms]
        self.infos.append(info)

    def _validate(self, name: str, plugin: object) -> str:
        """Why the just-registered ``plugin`` cannot stay loaded, or ""."""
        callers = self.pm.get_hookcallers(plugin) or []
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            unknown = sorted(
                c.name
                for c in callers
                if not c.has_spec()
                and any(i.plugin is plugin and not i.optionalhook for i in c.get_hookimpls())
            )
            if not unknown:
                return str(e)
            return (
                f"unknown hook {', '.join(map(repr, unknown))}: not a pyrunsc hook (see "
                "pyrunsc.core.hookspecs; mark it @hookimpl(optionalhook=True) if it is "
                "meant for a later pyrunsc)"
            )
        for hook in PER_PLUGIN_HOOKS:
            for impl in self._impls(hook, name):
                if impl.wrapper or impl.hookwrapper:
                    return (
                        f"{hook} cannot be a wrapper: pyrunsc calls each plugin's {hook} "
                        "on its own"
                    )
        return ""

    def _impls(self, hook: str, plugin: str | None = None) -> list[pluggy.HookImpl]:
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return [i for i in impls if plugin is None or i.plugin_name == plugin]

    @property
    def loaded(self) -> list[PluginInfo]:
        return [i for i in self.infos if i.status == "loaded"]

    # Hooks.

    def compile_mounts(self, spec: Spec, config: Config) -> list[Mount]:
        mounts = self._call("compile_mounts", "", spec=spec, config=config)
        if not isinstance(mounts, list) or not all(isinstance(m, Mount) for m in mounts):
            raise self._bad_result("compile_mounts", "a list of Mount", mounts, spec=spec, config=config)
        return mounts

    def mount_device(self, mount: Mount) -> str:
        what = f" for the mount at {mount.destination!r} ({mount_place(mount)})"
        device = self._call("mount_device", what, mount=mount)
        if not isinstance(device, str):
            raise self._bad_result("mount_device", "a string", device, what, mount=mount)
        return device

    def add_restore_mount(
        self, config: Config, renv: RestoreEnvironment, mount: Mount, fds: FdDispenser
    ) -> None:
        what = f" for the mount at {mount.destination!r} ({mount_place(mount)})"
        self._call("add_restore_mount", what, config=config, renv=renv, mount=mount, fds=fds)

    def start_gofer(self, spec: Spec, config: Config, mounts: list[ResolvedMount]) -> GoferStart | None:
        start = self._call("start_gofer", "", spec=spec, config=config, mounts=mounts)
        from .sandbox import GoferStart

        if start is not None and not isinstance(start, GoferStart):
            raise self._bad_result("start_gofer", "a GoferStart or None", start, spec=spec, config=config,
                                   mounts=mounts)
        return start

    def platform_class(self, config: Config) -> type[Platform]:
        """The registered platform ``config`` names, if this host can run it
        (its ``probe()``). ConfigError (exit 2) naming the platform and why
        not: unknown, or unavailable (no /dev/kvm, no permission, ...).
        ``run`` and ``restore`` call it before anything starts."""
        cls = self.registry.platform(config.platform)
        if cls is None:
            raise ConfigError(
                f"unknown platform {config.platform!r}; installed: "
                + (", ".join(sorted(self.registry.platforms)) or "none"),
                field="platform",
            )
        try:
            reason = cls.probe()
        except Exception as e:
            reason = f"its probe failed: {type(e).__name__}: {e}"
        if reason is not None:
            raise ConfigError(
                f"platform {config.platform!r} is not available here: {reason}", field="platform"
            )
        return cls

    def platform_create(self, config: Config) -> Platform:
        platform = self._call("platform_create", f" for platform {config.platform!r}", config=config)
        if not isinstance(platform, Platform):
            raise self._bad_result("platform_create", "a Platform", platform, config=config)
        return platform

    def _call(self, hook: str, what: str, **kwargs: Any) -> Any:
        """Call ``hook`` through pluggy. An exception other than a PyrunscError
        (which plugins raise on purpose) becomes a PluginError naming the
        plugin whose implementation raised it, found on the traceback; one
        raised by the core's own implementation is a bug and propagates."""
        try:
            return getattr(self.pm.hook, hook)(**kwargs)
        except PyrunscError:
            raise
        except Exception as e:
            name = self._raiser(hook, e)
            if name is None or name == CORE_NAME:
                raise
            raise PluginError(name, f"{hook} failed{what}: {type(e).__name__}: {e}") from e

    def _raiser(self, hook: str, error: BaseException) -> str | None:
        """The plugin whose ``hook`` implementation is the innermost one on
        ``error``'s traceback, or None."""
        codes = {impl.function.__code__: impl.plugin_name for impl in self._impls(hook)}
        name = None
        tb = error.__traceback__
        while tb is not None:
            name = codes.get(tb.tb_frame.f_code, name)
            tb = tb.tb_next
        return name

    def _bad_result(
        self, hook: str, expected: str, result: Any, what: str = "", **kwargs: Any
    ) -> PluginError:
        """A PluginError for a ``firstresult`` hook that returned ``result``
        instead of ``expected``. The culprit is found by calling the plain
        implementations again in call order (these hooks have no side
        effects): the one that gives the first result, unless a wrapper
        changed it."""
        culprit = None
        first = None
        for impl in reversed(self._impls(hook)):
            if impl.wrapper or impl.hookwrapper:
                continue
            try:
                first = _invoke(impl, **kwargs)
            except Exception:
                continue
            if first is not None:
                culprit = impl.plugin_name
                break
        if first is not result and first != result:
            wrappers = [i.plugin_name for i in self._impls(hook) if i.wrapper or i.hookwrapper]
            culprit = " or ".join(dict.fromkeys(wrappers)) or culprit
        got = repr(result)
        if len(got) > 80:
            got = got[:77] + "..."
        return PluginError(culprit or "?", f"{hook} returned {got}{what}, expected {expected}")

    def add_commands(self, cli: click.Group) -> None:
        """Let each plugin add commands, in call order; a failing plugin is reported
        (and whatever it changed is undone), not fatal; a command name that already
        exists keeps its original command."""
        for impl in reversed(self._impls("add_commands")):
            before = dict(cli.commands)
            try:
                _invoke(impl, cli=cli)
            except Exception as e:
                cli.commands.clear()
                cli.commands.update(before)
                log.warning(
                    "plugin %r: add_commands failed: %s: %s",
                    impl.plugin_name, type(e).__name__, e,
                )
                continue
            for cmd_name in before:
                if cli.commands.get(cmd_name) is not before[cmd_name]:
                    cli.commands[cmd_name] = before[cmd_name]
                    log.warning(
                        "plugin %r: command %r already exists; keeping the original",
                        impl.plugin_name, cmd_name,
                    )

    def before_checkpoint(self, kernel: Any, header: dict[str, Any]) -> None:
        self._call_strict("before_checkpoint", kernel=kernel, header=header)

    def after_restore(self, kernel: Any, renv: RestoreEnvironment, header: dict[str, Any]) -> None:
        self._call_strict("after_restore", kernel=kernel, renv=renv, header=header)

    def _call_strict(self, hook: str, **kwargs: Any) -> None:
        """Call each plugin's ``hook`` in call order; the first failure aborts,
        as a PluginError naming the plugin."""
        for impl in reversed(self._impls(hook)):
            try:
                _invoke(impl, **kwargs)
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(impl.plugin_name, f"{hook} failed: {type(e).__name__}: {e}") from e


def _invoke(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it asks for, as pluggy does."""
    return impl.function(*(kwargs[a] for a in impl.argnames))
