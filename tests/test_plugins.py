"""The plugin framework: loading (core/plugins.py), every hook, and `pyrunsc plugins`.

The fast tests register plugins inline (``Plugins(inline=[...])``), next to the
built-in plugins that the ``pyrunsc`` distribution installs under the entry-point
group ``pyrunsc``. The slow ones install the fixture distributions in
``tests/fixtures/`` into a temporary folder, as a third party would, and run the
real ``pyrunsc`` with that folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

from pyrunsc.core import hookspecs
from pyrunsc.core.cli import State, cli
from pyrunsc.core.config import Config
from pyrunsc.core.errors import ConfigError, PluginError
from pyrunsc.core.hookspecs import hookimpl
from pyrunsc.core.mounts import (
    MountArgs,
    MountFlags,
    RestoreEnvironment,
    create_restore_environment,
    resolve_all,
)
from pyrunsc.core.platform import Platform
from pyrunsc.core.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Plugins, Register
from pyrunsc.core.spec import Mount, load_bundle
from pyrunsc.core.vfs.filesystem import FilesystemType

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_DIST = "pyrunsc-example-plugin"
BROKEN_DIST = "pyrunsc-broken-plugin"
#: The console script of the environment running the tests (.venv/bin/pyrunsc).
PYRUNSC = Path(sys.executable).parent / "pyrunsc"

BUILTINS = (
    "fs_9p", "fs_dev", "fs_proc", "fs_sys", "fs_tmpfs", "platform_kvm", "platform_ptrace",
)
ALL_HOOKS = sorted(n for n, f in vars(hookspecs).items() if hasattr(f, "pyrunsc_spec"))
UNAVAILABLE_REASON = "the example-unavailable platform runs nowhere"


# -------------------------------------------------------------------------
# Helpers and fixtures.
# -------------------------------------------------------------------------


def import_fixture(dist: str, module: str) -> ModuleType:
    """Import ``module`` from the fixture distribution ``dist`` without installing it."""
    spec = importlib.util.spec_from_file_location(module, FIXTURES / dist / f"{module}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _no_disable_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_ENV, raising=False)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return import_fixture(EXAMPLE_DIST, "pyrunsc_example_plugin")


@pytest.fixture(scope="module")
def broken() -> ModuleType:
    return import_fixture(BROKEN_DIST, "pyrunsc_broken_plugin")


@pytest.fixture
def with_example(example: ModuleType) -> Plugins:
    """The built-in plugins and the example plugin."""
    plugins = Plugins(inline=[("example", example)])
    assert plugins.infos[-1].status == "loaded", plugins.infos[-1].error
    return plugins


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log() -> Iterator[list[str]]:
    """The warnings pyrunsc logs during the test (on the ``pyrunsc`` logger
    itself, which the CLI stops from propagating)."""
    logger = logging.getLogger("pyrunsc")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what the CLI's ``setup_logging`` does to the ``pyrunsc`` logger."""
    logger = logging.getLogger("pyrunsc")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
        if h not in saved[0]:
            h.close()
    for h in saved[0]:
        logger.addHandler(h)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def info(plugins: Plugins, name: str) -> Any:
    matches = [i for i in plugins.infos if i.name == name]
    assert len(matches) == 1, [i.name for i in plugins.infos]
    return matches[0]


def fs(name: str, mount_types: Any = (), data_keys: Any = ()) -> type[FilesystemType]:
    """A FilesystemType subclass with these class attributes."""
    attrs = {"name": name, "mount_types": mount_types, "data_keys": data_keys}
    return type(f"FS_{name or 'anon'}", (FilesystemType,), attrs)


def platform(name: str) -> type[Platform]:
    return type(f"Platform_{name or 'anon'}", (Platform,), {"name": name})


class Registers:
    """An inline plugin whose register_types registers ``filesystems`` then ``platforms``."""

    def __init__(self, filesystems: Sequence[Any] = (), platforms: Sequence[Any] = ()) -> None:
        self.filesystems = list(filesystems)
        self.platforms = list(platforms)

    @hookimpl
    def register_types(self, register: Register) -> None:
        for f in self.filesystems:
            register.add_filesystem(f)
        for p in self.platforms:
            register.add_platform(p)


def write_bundle(folder: Path, mounts: list[dict[str, Any]], annotations: dict[str, str]) -> Path:
    (folder / "rootfs").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": True},
        "annotations": annotations,
        "mounts": mounts,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


EXAMPLE_MOUNTS = [
    {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind"]},
    {"destination": "/example", "type": "example", "source": "none",
     "options": ["greeting=hi", "ro"]},
]
EXAMPLE_ANNOTATIONS = {
    "org.pyrunsc.example/mount": "/srv/greeting",
    "org.pyrunsc.example/hide": "/tmp, /nowhere",
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", EXAMPLE_MOUNTS, EXAMPLE_ANNOTATIONS)


def config(tmp_path: Path, **settings: Any) -> Config:
    return Config(root_dir=tmp_path / "state", **settings)


# -------------------------------------------------------------------------
# Loading from the entry-point group.
# -------------------------------------------------------------------------


def test_builtin_plugins_load_one_by_one_from_the_entry_point_group() -> None:
    plugins = Plugins()
    names = [i.name for i in plugins.infos]
    assert set(BUILTINS) <= set(names)
    ours = [i.name for i in plugins.infos if i.distribution == "pyrunsc"]
    # The pyrunsc distribution's plugins first, by name.
    assert names[: len(ours)] == ours == sorted(ours)
    version = metadata.version("pyrunsc")
    for name in BUILTINS:
        i = info(plugins, name)
        assert (i.status, i.error, i.distribution, i.version) == ("loaded", "", "pyrunsc", version)
        # fs_9p also adds the gofer command and starts the gofer.
        extra = {"add_commands", "start_gofer"} if name == "fs_9p" else set()
        assert "register_types" in i.hooks and set(i.hooks) <= {"register_types"} | extra
    registry = plugins.registry
    assert {"9p", "hostfs", "devtmpfs", "devpts", "proc", "sysfs", "tmpfs"} <= set(
        registry.filesystems
    )
    assert {"kvm", "ptrace"} <= set(registry.platforms)
    assert registry.filesystem_for_type("none") is registry.filesystem("sysfs")
    assert registry.owner[registry.filesystems["tmpfs"]] == "fs_tmpfs"
    assert info(plugins, "fs_9p").filesystems == ["9p", "hostfs"]
    assert info(plugins, "platform_kvm").platforms == ["kvm"]
    assert {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} >= set(BUILTINS)


def test_disable_env_blocks_named_plugins(
    monkeypatch: pytest.MonkeyPatch, warnings_log: list[str]
) -> None:
    monkeypatch.setenv(DISABLE_ENV, " platform_kvm, ,fs_proc,no_such_plugin ")
    plugins = Plugins()
    for name in ("platform_kvm", "fs_proc"):
        i = info(plugins, name)
        assert i.status == "disabled"
        assert DISABLE_ENV in i.error
        assert i.hooks == i.filesystems == i.platforms == []
    assert "kvm" not in plugins.registry.platforms
    assert plugins.registry.filesystem_for_type("proc") is None
    assert info(plugins, "platform_ptrace").status == "loaded"
    assert "ptrace" in plugins.registry.platforms
    assert [m for m in warnings_log if "no_such_plugin" in m and DISABLE_ENV in m]
    assert not [m for m in warnings_log if "platform_kvm" in m]
    # An explicit list wins over the environment.
    assert info(Plugins(disabled=[]), "platform_kvm").status == "loaded"


def test_inline_only_loads_no_entry_points(example: ModuleType) -> None:
    plugins = Plugins(entry_points=False, inline=[("example", example)])
    assert [(i.name, i.distribution, i.status) for i in plugins.infos] == [
        ("example", "(inline)", "loaded")
    ]
    assert set(plugins.registry.filesystems) == {"examplefs"}


def test_example_plugin_registers_its_types_and_implements_every_hook(
    with_example: Plugins, example: ModuleType
) -> None:
    i = info(with_example, "example")
    assert i.hooks == ALL_HOOKS
    assert i.filesystems == ["examplefs"]
    assert i.platforms == ["example", "example-unavailable"]
    registry = with_example.registry
    assert registry.filesystem("examplefs") is example.ExampleFS
    assert registry.filesystem_for_type("example") is example.ExampleFS
    assert registry.owner[example.ExampleFS] == "example"
    assert registry.platform("example-unavailable") is example.UnavailablePlatform
    assert i.to_json() == {
        "name": "example", "distribution": "(inline)", "version": "", "status": "loaded",
        "error": None, "hooks": ALL_HOOKS, "filesystems": ["examplefs"],
        "platforms": ["example", "example-unavailable"],
    }


# -------------------------------------------------------------------------
# Error paths: each broken plugin is reported by name; the others still load.
# -------------------------------------------------------------------------


class RaisesInRegister:
    @hookimpl
    def register_types(self, register: Register) -> None:
        register.add_filesystem(fs("halfway", ("halfway",)))
        raise RuntimeError("boom")

    @hookimpl
    def mount_device(self, mount: Mount) -> str:
        return "from-a-broken-plugin"


def test_plugin_raising_in_register_types_is_unloaded_and_reported(
    warnings_log: list[str],
) -> None:
    good = Registers([fs("goodfs", ("good",))])
    plugins = Plugins(inline=[("raiser", RaisesInRegister()), ("good", good)])
    i = info(plugins, "raiser")
    assert (i.status, i.error) == ("broken", "register_types failed: RuntimeError: boom")
    assert i.hooks == i.filesystems == []
    # Nothing it registered before raising stays, and its other hooks are gone.
    assert plugins.registry.filesystem("halfway") is None
    assert plugins.pm.get_plugin("raiser") is None
    assert plugins.mount_device(Mount("/x", "tmpfs")) == "none"
    assert info(plugins, "good").status == "loaded"
    assert plugins.registry.filesystem("goodfs") is good.filesystems[0]
    assert [m for m in warnings_log if "'raiser'" in m and "boom" in m]
    assert [i.name for i in plugins.loaded][-1] == "good"


@pytest.mark.parametrize(
    ("inline", "error"),
    [
        pytest.param(
            [("dup", Registers([fs("tmpfs", ("tmpfs2",))]))],
            "register_types failed: filesystem 'tmpfs' is already registered by 'fs_tmpfs'",
            id="filesystem-name-of-a-builtin",
        ),
        pytest.param(
            [("first", Registers([fs("dupfs", ("a",))])), ("dup", Registers([fs("dupfs", ("b",))]))],
            "register_types failed: filesystem 'dupfs' is already registered by 'first'",
            id="filesystem-name-of-another-plugin",
        ),
        pytest.param(
            [("dup", Registers([fs("dupfs", ("a",)), fs("dupfs", ("b",))]))],
            "register_types failed: filesystem 'dupfs' is already registered by 'dup'",
            id="filesystem-name-twice-in-one-plugin",
        ),
        pytest.param(
            [("dup", Registers([fs("mytmpfs", ("tmpfs",))]))],
            "register_types failed: mount type 'tmpfs' is already served by filesystem "
            "'tmpfs' of plugin 'fs_tmpfs'",
            id="mount-type-of-a-builtin",
        ),
        pytest.param(
            [("dup", Registers([fs("afs", ("x",)), fs("bfs", ("y", "x"))]))],
            "register_types failed: mount type 'x' is already served by filesystem 'afs' "
            "of plugin 'dup'",
            id="mount-type-twice-in-one-plugin",
        ),
        pytest.param(
            [("dup", Registers(platforms=[platform("ptrace")]))],
            "register_types failed: platform 'ptrace' is already registered by 'platform_ptrace'",
            id="platform-name-of-a-builtin",
        ),
        pytest.param(
            [("dup", Registers([object]))],
            "register_types failed: add_filesystem(<class 'object'>): not a FilesystemType "
            "subclass",
            id="not-a-filesystem-class",
        ),
        pytest.param(
            [("dup", Registers([fs("x", ("x",))()]))],
            "not a FilesystemType subclass",
            id="filesystem-instance-not-class",
        ),
        pytest.param(
            [("dup", Registers([fs("")]))],
            "register_types failed: filesystem FS_anon has no name",
            id="filesystem-without-name",
        ),
        pytest.param(
            [("dup", Registers([fs("listfs", ["list"])]))],
            "register_types failed: filesystem 'listfs': mount_types must be a tuple of names, "
            "got ['list']",
            id="mount-types-not-a-tuple",
        ),
        pytest.param(
            [("dup", Registers([fs("keyfs", ("key",), ("",))]))],
            "register_types failed: filesystem 'keyfs': data_keys must be a tuple of names, "
            "got ('',)",
            id="empty-data-key",
        ),
        pytest.param(
            [("dup", Registers(platforms=[fs("notaplatform")]))],
            "not a Platform subclass",
            id="not-a-platform-class",
        ),
        pytest.param(
            [("dup", Registers(platforms=[platform("")]))],
            "register_types failed: platform Platform_anon has no name",
            id="platform-without-name",
        ),
    ],
)
def test_register_types_validation(inline: list[tuple[str, object]], error: str) -> None:
    before = dict(Plugins().registry.filesystems)
    plugins = Plugins(inline=inline)
    i = info(plugins, "dup")
    assert i.status == "broken"
    assert error in i.error
    # Nothing of the broken plugin's is registered: what was there before is
    # unchanged, and only the other inline plugins added their types.
    others = {f.name for name, p in inline if isinstance(p, Registers) and name != "dup"
              for f in p.filesystems}
    assert set(plugins.registry.filesystems) == set(before) | others
    for name, cls in before.items():
        assert plugins.registry.filesystems[name] is cls


class UnknownHook:
    @hookimpl
    def register_types(self, register: Register) -> None:
        register.add_filesystem(fs("unknownfs", ("unknownfs",)))

    @hookimpl(optionalhook=True)
    def optional_hook_of_a_later_pyrunsc(self) -> None:
        raise AssertionError("never called")

    @hookimpl
    def frobnicate(self, mounts: list[Mount]) -> None:
        raise AssertionError("never called")


class OptionalUnknownHook:
    @hookimpl(optionalhook=True)
    def hook_of_a_later_pyrunsc(self) -> None:
        raise AssertionError("never called")


def test_check_pending_refuses_an_unknown_hook_naming_plugin_and_hook(
    warnings_log: list[str],
) -> None:
    later = Registers([fs("laterfs", ("later",))])
    plugins = Plugins(
        inline=[("unknown", UnknownHook()), ("later", later), ("optional", OptionalUnknownHook())]
    )
    i = info(plugins, "unknown")
    assert i.status == "broken"
    assert i.error.startswith("invalid: unknown hook 'frobnicate': not a pyrunsc hook")
    assert plugins.pm.get_plugin("unknown") is None
    assert plugins.registry.filesystem("unknownfs") is None
    # The plugins after it load: its pending hookimpl is gone with it.
    assert info(plugins, "later").status == "loaded"
    assert info(plugins, "optional").status == "loaded"
    plugins.pm.check_pending()
    assert [m for m in warnings_log if "'unknown'" in m and "frobnicate" in m]


class WrongArguments:
    @hookimpl
    def add_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("wrong-args"))

    @hookimpl
    def mount_device(self, mnt: Mount) -> str:
        return "never"


def test_hookimpl_with_wrong_arguments_is_refused_and_leaves_nothing() -> None:
    plugins = Plugins(inline=[("wrong", WrongArguments())])
    i = info(plugins, "wrong")
    assert i.status == "broken"
    assert "mount_device" in i.error and "mnt" in i.error
    assert "\n" not in i.error
    assert plugins.pm.get_plugin("wrong") is None
    group = click.Group("pyrunsc")
    plugins.add_commands(group)
    assert "wrong-args" not in group.commands


class WrapsBeforeCheckpoint:
    @hookimpl(wrapper=True)
    def before_checkpoint(self, kernel: Any, header: dict[str, Any]) -> Iterator[None]:
        header["wrapped"] = True
        yield


class OldStyleWrapsAddCommands:
    @hookimpl(hookwrapper=True)
    def add_commands(self, cli: click.Group) -> Iterator[None]:
        cli.add_command(click.Command("wrapped"))
        yield


@pytest.mark.parametrize(
    ("plugin", "hook"),
    [(WrapsBeforeCheckpoint(), "before_checkpoint"), (OldStyleWrapsAddCommands(), "add_commands")],
)
def test_wrapper_of_a_per_plugin_hook_is_refused(plugin: object, hook: str) -> None:
    plugins = Plugins(entry_points=False, inline=[("wrapper", plugin)])
    i = info(plugins, "wrapper")
    assert (i.status, i.error) == (
        "broken",
        f"invalid: {hook} cannot be a wrapper: pyrunsc calls each plugin's {hook} on its own",
    )
    assert plugins.pm.get_plugin("wrapper") is None


def test_plugin_name_or_object_already_loaded_is_refused(example: ModuleType) -> None:
    plugins = Plugins(
        inline=[
            ("example", example),
            ("fs_tmpfs", Registers([fs("impostor", ("impostor",))])),
            ("pyrunsc.core", Registers()),
            ("example-again", example),
        ]
    )
    assert [(i.name, i.status) for i in plugins.infos[-4:]] == [
        ("example", "loaded"),
        ("fs_tmpfs", "broken"),
        ("pyrunsc.core", "broken"),
        ("example-again", "broken"),
    ]
    assert plugins.infos[-3].error == "invalid: a plugin of this name is already loaded"
    assert plugins.infos[-2].error == "invalid: a plugin of this name is already loaded"
    assert plugins.infos[-1].error == "invalid: the same plugin is already loaded as 'example'"
    assert info(plugins, "example").status == "loaded"
    assert plugins.registry.filesystem("impostor") is None
    # The core's own hooks still answer.
    assert plugins.mount_device(Mount("/x", "bind", "/src")) == "9pfs-/x"


# -------------------------------------------------------------------------
# add_commands.
# -------------------------------------------------------------------------


def base_group() -> click.Group:
    group = click.Group("pyrunsc")

    @group.command("mounts")
    def mounts() -> None:
        click.echo("original mounts")

    return group


class AddsCommand:
    def __init__(self, name: str, text: str) -> None:
        self.command = click.Command(name, callback=lambda: click.echo(text))

    @hookimpl
    def add_commands(self, cli: click.Group) -> None:
        cli.add_command(self.command)


class FailsInAddCommands:
    @hookimpl
    def add_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command("half-added"))
        del cli.commands["mounts"]
        raise ValueError("no commands today")


class RemovesCommand:
    @hookimpl
    def add_commands(self, cli: click.Group) -> None:
        del cli.commands["mounts"]


def test_example_plugin_adds_a_command_that_runs(with_example: Plugins) -> None:
    group = base_group()
    with_example.add_commands(group)
    result = CliRunner().invoke(group, ["example-hello", "--name", "tests"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello, tests, from pyrunsc-example-plugin\n"


def test_failing_add_commands_is_reported_and_undone_not_fatal(
    warnings_log: list[str],
) -> None:
    plugins = Plugins(
        entry_points=False,
        inline=[("before", AddsCommand("before", "b")), ("failing", FailsInAddCommands()),
                ("after", AddsCommand("after", "a"))],
    )
    group = base_group()
    plugins.add_commands(group)
    assert sorted(group.commands) == ["after", "before", "mounts"]
    assert CliRunner().invoke(group, ["mounts"]).output == "original mounts\n"
    assert warnings_log == [
        "plugin 'failing': add_commands failed: ValueError: no commands today"
    ]
    # It stays loaded: only its commands failed.
    assert info(plugins, "failing").status == "loaded"


def test_plugin_adding_an_existing_command_keeps_the_original(
    warnings_log: list[str],
) -> None:
    plugins = Plugins(
        entry_points=False,
        inline=[("shadow", AddsCommand("mounts", "shadowed")), ("remover", RemovesCommand())],
    )
    group = base_group()
    original = group.commands["mounts"]
    plugins.add_commands(group)
    assert group.commands == {"mounts": original}
    assert CliRunner().invoke(group, ["mounts"]).output == "original mounts\n"
    assert sorted(warnings_log) == [
        "plugin 'remover': command 'mounts' already exists; keeping the original",
        "plugin 'shadow': command 'mounts' already exists; keeping the original",
    ]


def test_add_commands_order_the_plugin_loaded_last_first(warnings_log: list[str]) -> None:
    plugins = Plugins(
        entry_points=False,
        inline=[("one", AddsCommand("hello", "one")), ("two", AddsCommand("hello", "two"))],
    )
    group = base_group()
    plugins.add_commands(group)
    assert CliRunner().invoke(group, ["hello"]).output == "two\n"
    assert warnings_log == ["plugin 'one': command 'hello' already exists; keeping the original"]


# -------------------------------------------------------------------------
# Mount hooks: compile_mounts (wrapper), mount_device, add_restore_mount.
# -------------------------------------------------------------------------


def test_compile_mounts_wrapper_adds_and_filters_mounts(
    with_example: Plugins, bundle: Path, tmp_path: Path
) -> None:
    spec = load_bundle(bundle)
    mounts = with_example.compile_mounts(spec, config(tmp_path))
    assert [(m.destination, m.type) for m in mounts] == [
        ("/dev", "devtmpfs"), ("/dev/pts", "devpts"), ("/data", "bind"), ("/example", "example"),
        ("/proc", "proc"), ("/sys", "sysfs"), ("/srv/greeting", "example"),
    ]
    assert mounts[-1].options == ("greeting=annotated",)
    # Without the example plugin, the core's list: /tmp is there, nothing added.
    plain = Plugins().compile_mounts(spec, config(tmp_path))
    assert [m.destination for m in plain] == [
        "/dev", "/dev/pts", "/data", "/example", "/proc", "/sys", "/tmp",
    ]


def test_compile_mounts_wrapper_without_annotations_changes_nothing(
    with_example: Plugins, tmp_path: Path
) -> None:
    spec = load_bundle(write_bundle(tmp_path / "b", EXAMPLE_MOUNTS, {}))
    assert with_example.compile_mounts(spec, config(tmp_path)) == Plugins().compile_mounts(
        spec, config(tmp_path)
    )


def test_example_filesystem_resolves_with_its_name_data_and_device(
    with_example: Plugins, bundle: Path, tmp_path: Path
) -> None:
    resolved = resolve_all(with_example, load_bundle(bundle), config(tmp_path))
    rows = {r.mount.destination: (r.fs_name, r.data, r.device, r.flags) for r in resolved}
    assert rows["/example"] == ("examplefs", ("greeting=hi",), "example-/example",
                                MountFlags(read_only=True))
    assert rows["/srv/greeting"] == ("examplefs", ("greeting=annotated",),
                                     "example-/srv/greeting", MountFlags())
    # The core's devices and the gofer fds of the other mounts are unchanged.
    assert rows["/"][2] == "9pfs-/" and "rfdno=0" in rows["/"][1][1]
    assert rows["/data"][2] == "9pfs-/data" and "rfdno=1" in rows["/data"][1][1]
    assert rows["/proc"][2] == "none"


def test_mount_device_falls_through_to_the_core(with_example: Plugins) -> None:
    assert with_example.mount_device(Mount("/e", "example")) == "example-/e"
    assert with_example.mount_device(Mount("/b", "bind", "/src")) == "9pfs-/b"
    assert with_example.mount_device(Mount("/t", "tmpfs")) == "none"
    assert Plugins().mount_device(Mount("/e", "example")) == "none"


def test_example_filesystem_without_the_plugin_is_left_out(
    bundle: Path, tmp_path: Path, warnings_log: list[str]
) -> None:
    resolved = resolve_all(Plugins(), load_bundle(bundle), config(tmp_path))
    assert "/example" not in [r.mount.destination for r in resolved]
    assert [m for m in warnings_log if "no filesystem plugin serves type 'example'" in m]


def test_add_restore_mount_records_example_mounts_and_leaves_the_rest_to_the_core(
    with_example: Plugins, bundle: Path, tmp_path: Path
) -> None:
    renv = create_restore_environment(with_example, load_bundle(bundle), config(tmp_path))
    assert renv.mount_sources["examplefs"] == [
        MountArgs("example-/example", MountFlags(read_only=True), "greeting=hi,restore=1"),
        MountArgs("example-/srv/greeting", MountFlags(), "greeting=annotated,restore=1"),
    ]
    assert [a.dev for a in renv.mount_sources["9p"]] == ["9pfs-/", "9pfs-/data"]
    assert [a.data.split(",")[1] for a in renv.mount_sources["9p"]] == ["rfdno=0", "rfdno=1"]
    assert list(renv.mount_sources) == ["9p", "devtmpfs", "devpts", "examplefs", "proc", "sysfs"]
    assert json.loads(json.dumps(renv.to_json()))["examplefs"][0] == {
        "dev": "example-/example", "flags": ["ro"], "data": "greeting=hi,restore=1",
    }


def test_bad_example_option_is_a_config_error(with_example: Plugins, tmp_path: Path) -> None:
    mounts = [{"destination": "/example", "type": "example", "source": "none",
               "options": ["greeting=h1!"]}]
    spec = load_bundle(write_bundle(tmp_path / "b", mounts, {}))
    with pytest.raises(ConfigError) as e:
        resolve_all(with_example, spec, config(tmp_path))
    assert e.value.field == "mounts[0].options"
    assert "greeting must be letters only, got 'h1!'" in str(e.value)
    with pytest.raises(ConfigError, match="greeting must be letters only"):
        create_restore_environment(with_example, spec, config(tmp_path))
    unknown = [{"destination": "/example", "type": "example", "options": ["colour=red"]}]
    spec = load_bundle(write_bundle(tmp_path / "c", unknown, {}))
    with pytest.raises(ConfigError, match=r"examplefs does not take option 'colour=red'.*greeting"):
        resolve_all(with_example, spec, config(tmp_path))


# -------------------------------------------------------------------------
# platform_create.
# -------------------------------------------------------------------------


def test_platform_create_by_the_plugin(with_example: Plugins, example: ModuleType,
                                       tmp_path: Path) -> None:
    cfg = config(tmp_path, platform="example")
    p = with_example.platform_create(cfg)
    assert type(p) is example.ExamplePlatform
    assert (p.config, p.greeting) == (cfg, "hello")  # type: ignore[attr-defined]


def test_platform_create_of_an_unavailable_or_unknown_platform(
    with_example: Plugins, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as e:
        with_example.platform_create(config(tmp_path, platform="example-unavailable"))
    assert str(e.value) == (
        f"platform: platform 'example-unavailable' is not available here: {UNAVAILABLE_REASON}"
    )
    with pytest.raises(ConfigError, match=r"unknown platform 'nosuch'; installed: .*example, "
                       r"example-unavailable, .*ptrace"):
        with_example.platform_create(config(tmp_path, platform="nosuch"))
    class Crashes(Platform):
        name = "crashes"

        @classmethod
        def probe(cls) -> str | None:
            raise OSError(19, "No such device")

    crashes = Plugins(entry_points=False, inline=[("crashes", Registers(platforms=[Crashes]))])
    with pytest.raises(ConfigError) as e:
        crashes.platform_create(config(tmp_path, platform="crashes"))
    assert str(e.value) == (
        "platform: platform 'crashes' is not available here: its probe failed: "
        "OSError: [Errno 19] No such device"
    )
    # Without the plugin the core knows no "example" platform.
    with pytest.raises(ConfigError, match="unknown platform 'example'"):
        Plugins().platform_create(config(tmp_path, platform="example"))


# -------------------------------------------------------------------------
# before_checkpoint and after_restore.
# -------------------------------------------------------------------------


class Records:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    @hookimpl
    def before_checkpoint(self, kernel: Any, header: dict[str, Any]) -> None:
        header.setdefault("order", []).append(self.name)
        if self.fail:
            raise OSError(28, "No space left on device")

    @hookimpl
    def after_restore(self, kernel: Any, renv: RestoreEnvironment, header: dict[str, Any]) -> None:
        header.setdefault("restored", []).append(self.name)
        if self.fail:
            raise PluginError("someone", "already names a plugin")


class RecordsFirst(Records):
    @hookimpl(tryfirst=True)
    def before_checkpoint(self, kernel: Any, header: dict[str, Any]) -> None:
        super().before_checkpoint(kernel, header)


def test_checkpoint_and_restore_hooks_of_the_example_plugin(
    with_example: Plugins, bundle: Path, tmp_path: Path
) -> None:
    kernel = SimpleNamespace(hostname="box")
    header: dict[str, Any] = {"version": 1}
    with_example.before_checkpoint(kernel, header)
    assert header == {"version": 1, "plugins": {"example": {"hostname": "box"}}}
    header = json.loads(json.dumps(header))  # as an image stores it

    restored = SimpleNamespace(hostname="")
    renv = create_restore_environment(with_example, load_bundle(bundle), config(tmp_path))
    with_example.after_restore(restored, renv, header)
    assert (restored.hostname, restored.example_mounts) == ("box", 2)


def test_checkpoint_and_restore_hook_failures_name_the_plugin(
    with_example: Plugins,
) -> None:
    with pytest.raises(PluginError) as e:
        with_example.after_restore(SimpleNamespace(), RestoreEnvironment(), {"version": 1})
    assert e.value.plugin == "example"
    assert str(e.value) == (
        "plugin 'example': after_restore failed: RuntimeError: the image has no example state: "
        "it was saved without this plugin"
    )
    with pytest.raises(PluginError, match=r"plugin 'example': before_checkpoint failed: "
                       r"AttributeError: .*hostname"):
        with_example.before_checkpoint(object(), {})


def test_checkpoint_and_restore_hooks_call_order_and_abort() -> None:
    plugins = Plugins(entry_points=False, inline=[("one", Records("one")), ("two", Records("two"))])
    header: dict[str, Any] = {}
    plugins.before_checkpoint(None, header)
    plugins.after_restore(None, RestoreEnvironment(), header)
    assert header == {"order": ["two", "one"], "restored": ["two", "one"]}

    plugins = Plugins(entry_points=False,
                      inline=[("one", RecordsFirst("one")), ("two", Records("two"))])
    header = {}
    plugins.before_checkpoint(None, header)
    assert header["order"] == ["one", "two"]

    plugins = Plugins(entry_points=False,
                      inline=[("one", Records("one")), ("two", Records("two", fail=True))])
    header = {}
    with pytest.raises(PluginError) as e:
        plugins.before_checkpoint(None, header)
    assert str(e.value) == (
        "plugin 'two': before_checkpoint failed: OSError: [Errno 28] No space left on device"
    )
    assert header["order"] == ["two"]  # the first failure aborts
    with pytest.raises(PluginError) as e:
        plugins.after_restore(None, RestoreEnvironment(), header)
    assert str(e.value) == "plugin 'someone': already names a plugin"


# -------------------------------------------------------------------------
# `pyrunsc plugins`, in-process.
# -------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_plugins_command_lists_loaded_and_broken_inline_plugins(
    example: ModuleType, broken: ModuleType
) -> None:
    plugins = Plugins(inline=[("example", example), ("broken_register", broken.taken_mount_type)])
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "--format", "json"], obj=State(plugins=plugins))
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["example"]["platforms"] == [
        {"name": "example", "available": True, "reason": None},
        {"name": "example-unavailable", "available": False, "reason": UNAVAILABLE_REASON},
    ]
    assert rows["example"]["hooks"] == ALL_HOOKS
    assert rows["example"]["filesystems"] == ["examplefs"]
    assert rows["broken_register"]["status"] == "broken"
    assert rows["broken_register"]["error"] == (
        "register_types failed: mount type 'tmpfs' is already served by filesystem 'tmpfs' "
        "of plugin 'fs_tmpfs'"
    )
    assert rows["fs_tmpfs"]["status"] == "loaded"

    table = runner.invoke(cli, ["plugins"], obj=State(plugins=plugins))
    assert table.exit_code == 0, table.output
    for text in ("examplefs", "example-unavailable", "broken_register", "broken:", "fs_tmpfs"):
        assert text in table.output


# -------------------------------------------------------------------------
# Installed distributions (slow): the real `pyrunsc` on a real install.
# -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each fixture distribution installed once into its own folder, built from a
    copy so that the build leaves nothing in tests/fixtures/."""
    base = tmp_path_factory.mktemp("installed")
    procs = {}
    for dist in (EXAMPLE_DIST, BROKEN_DIST):
        src = shutil.copytree(FIXTURES / dist, base / "src" / dist,
                              ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        procs[dist] = subprocess.Popen(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-build-isolation", "--no-deps", "--no-index", "--target", str(base / dist),
             str(src)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    for dist, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"installing {dist} failed:\n{out}"
        assert list((base / dist).glob("*.dist-info/entry_points.txt")), dist
    return {dist: base / dist for dist in procs}


def run_pyrunsc(
    *args: str | Path, path: Sequence[Path] = (), disable: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (DISABLE_ENV, "PYTHONPATH")}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if disable is not None:
        env[DISABLE_ENV] = disable
    return subprocess.run(
        [str(PYRUNSC), *map(str, args)], env=env, capture_output=True, text=True, timeout=60
    )


def listing(path: Sequence[Path], disable: str | None = None) -> tuple[list[dict[str, Any]], str]:
    result = run_pyrunsc("plugins", "--format", "json", path=path, disable=disable)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


@pytest.mark.slow
def test_installed_example_plugin_is_listed(installed: dict[str, Path]) -> None:
    rows, stderr = listing([installed[EXAMPLE_DIST]])
    assert stderr == ""
    names = [r["name"] for r in rows]
    assert names[-1] == "example"
    assert set(BUILTINS) <= set(names[:-1])
    assert all(r["status"] == "loaded" for r in rows)
    assert rows[-1] == {
        "name": "example",
        "distribution": "pyrunsc-example-plugin",
        "version": "0.1.0",
        "status": "loaded",
        "error": None,
        "hooks": ALL_HOOKS,
        "filesystems": ["examplefs"],
        "platforms": [
            {"name": "example", "available": True, "reason": None},
            {"name": "example-unavailable", "available": False, "reason": UNAVAILABLE_REASON},
        ],
    }
    table = run_pyrunsc("plugins", "--format", "table", path=[installed[EXAMPLE_DIST]])
    assert table.returncode == 0, table.stderr
    for text in ("pyrunsc-example-plugin", "examplefs", "example-unavailable", "unavailable"):
        assert text in table.stdout
    # Not installed, not listed.
    assert "example" not in [r["name"] for r in listing([])[0]]


@pytest.mark.slow
def test_installed_example_plugin_command_runs(installed: dict[str, Path]) -> None:
    result = run_pyrunsc("example-hello", "--name", "tests", path=[installed[EXAMPLE_DIST]])
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "hello, tests, from pyrunsc-example-plugin\n", ""
    )
    assert "example-hello" in run_pyrunsc("--help", path=[installed[EXAMPLE_DIST]]).stdout
    assert run_pyrunsc("example-hello").returncode == 2  # no such command without it


@pytest.mark.slow
def test_installed_filesystem_type_is_usable_in_a_bundles_mounts(
    installed: dict[str, Path], bundle: Path
) -> None:
    path = [installed[EXAMPLE_DIST]]
    result = run_pyrunsc("mounts", "--bundle", bundle, "--format", "json", path=path)
    assert result.returncode == 0, result.stderr
    rows = {r["destination"]: r for r in json.loads(result.stdout)}
    assert rows["/example"] == {
        "destination": "/example", "type": "example", "filesystem": "examplefs",
        "device": "example-/example", "flags": ["ro"], "data": "greeting=hi", "source": "none",
        "overlay": False,
    }
    assert rows["/srv/greeting"]["filesystem"] == "examplefs"
    assert "/tmp" not in rows

    result = run_pyrunsc("mounts", "--bundle", bundle, "--restore-env", "--format", "json",
                         path=path)
    assert result.returncode == 0, result.stderr
    renv = json.loads(result.stdout)
    assert renv["examplefs"] == [
        {"dev": "example-/example", "flags": ["ro"], "data": "greeting=hi,restore=1"},
        {"dev": "example-/srv/greeting", "flags": [], "data": "greeting=annotated,restore=1"},
    ]
    assert [a["dev"] for a in renv["9p"]] == ["9pfs-/", "9pfs-/data"]

    # Disabled, its mounts are left out with a warning, and it is listed as disabled.
    result = run_pyrunsc("mounts", "--bundle", bundle, "--format", "json", path=path,
                         disable="example")
    assert result.returncode == 0, result.stderr
    rows = {r["destination"]: r for r in json.loads(result.stdout)}
    assert "/example" not in rows and "/srv/greeting" not in rows and "/tmp" in rows
    assert "no filesystem plugin serves type 'example'" in result.stderr
    entry = listing(path, disable="example")[0][-1]
    assert (entry["name"], entry["status"], entry["hooks"]) == ("example", "disabled", [])
    assert DISABLE_ENV in entry["error"]


@pytest.mark.slow
def test_installed_broken_distribution_is_listed_with_its_errors(
    installed: dict[str, Path],
) -> None:
    rows, stderr = listing([installed[BROKEN_DIST]])
    builtin = {r["name"]: r for r in rows if r["distribution"] == "pyrunsc"}
    for name in BUILTINS:
        assert builtin[name]["status"] == "loaded"
    ours = {r["name"]: r for r in rows if r["distribution"] == "pyrunsc-broken-plugin"}
    assert [r["name"] for r in rows if r["distribution"] == "pyrunsc-broken-plugin"] == [
        "broken_commands", "broken_hook", "broken_import", "broken_register", "fs_tmpfs",
        "shadow_commands",
    ]
    assert {n: r["status"] for n, r in ours.items()} == {
        "broken_commands": "loaded",
        "broken_hook": "broken",
        "broken_import": "broken",
        "broken_register": "broken",
        "fs_tmpfs": "broken",
        "shadow_commands": "loaded",
    }
    assert ours["fs_tmpfs"]["error"] == (
        "another installed plugin has this name (distribution 'pyrunsc')"
    )
    assert all(r["version"] == "0.2.0" for r in ours.values())
    assert ours["broken_import"]["error"] == (
        "failed to import pyrunsc_broken_import: ModuleNotFoundError: "
        "No module named 'pyrunsc_missing_dependency'"
    )
    assert ours["broken_hook"]["error"].startswith(
        "invalid: unknown hook 'frobnicate_mounts': not a pyrunsc hook"
    )
    assert ours["broken_register"]["error"] == (
        "register_types failed: mount type 'tmpfs' is already served by filesystem 'tmpfs' "
        "of plugin 'fs_tmpfs'"
    )
    for r in ours.values():
        if r["status"] == "broken":
            assert r["hooks"] == r["filesystems"] == r["platforms"] == []
            assert f"plugin {r['name']!r} is broken and was not loaded" in stderr
    assert "plugin 'broken_commands': add_commands failed: RuntimeError" in stderr
    assert "plugin 'shadow_commands': command 'plugins' already exists" in stderr

    table = run_pyrunsc("plugins", path=[installed[BROKEN_DIST]])
    assert table.returncode == 0, table.stderr
    for text in ("broken_import", "broken:", "pyrunsc-broken-plugin", "fs_tmpfs", "loaded"):
        assert text in table.stdout


@pytest.mark.slow
def test_installed_broken_plugins_leave_the_rest_working(
    installed: dict[str, Path], bundle: Path
) -> None:
    path = [installed[EXAMPLE_DIST], installed[BROKEN_DIST]]
    help_text = run_pyrunsc("--help", path=path)
    assert help_text.returncode == 0, help_text.stderr
    assert "example-hello" in help_text.stdout and "broken-hello" not in help_text.stdout
    assert run_pyrunsc("broken-hello", path=path).returncode == 2

    result = run_pyrunsc("mounts", "--bundle", bundle, "--format", "json", path=path)
    assert result.returncode == 0, result.stderr
    filesystems = {r["destination"]: r["filesystem"] for r in json.loads(result.stdout)}
    assert filesystems["/example"] == "examplefs"
    assert "brokenfs" not in filesystems.values()

    rows, stderr = listing(path, disable="broken_import,broken_hook")
    provided = [f for r in rows for f in r["filesystems"]]
    assert len(provided) == len(set(provided))
    assert "examplefs" in provided and "tmpfs" in provided
    assert not {"brokenfs", "brokenfs-ok", "impostorfs"} & set(provided)
    by_name = {r["name"]: r for r in rows if r["distribution"] != "pyrunsc"}
    assert by_name["example"]["status"] == "loaded"
    assert by_name["broken_import"]["status"] == by_name["broken_hook"]["status"] == "disabled"
    assert by_name["broken_register"]["status"] == "broken"
    assert "broken_import" not in stderr and "broken_hook" not in stderr


# -------------------------------------------------------------------------
# Plugins failing at mount time are named.
# -------------------------------------------------------------------------


class BadFS(FilesystemType):
    """A filesystem whose check_option and mount_data fail in ways that are bugs."""

    name = "badfs"
    mount_types = ("bad",)
    data_keys = ("k",)

    @classmethod
    def check_option(cls, key: str, value: str) -> None:
        if value == "boom":
            raise KeyError(value)
        if value == "bad":
            raise ValueError("k must not be bad")

    @classmethod
    def mount_data(cls, mount: Mount, config: Config, fds: Any) -> Any:
        if mount.destination == "/raise":
            raise RuntimeError("boom")
        if mount.destination == "/none":
            return None
        return super().mount_data(mount, config, fds)


class BrokenDevice:
    """A mount_device implementation that raises for bind mounts."""

    @hookimpl
    def mount_device(self, mount: Mount) -> str | None:
        if mount.type == "bind":
            return {}["boom"]  # type: ignore[no-any-return]
        return None


class NumberDevice:
    @hookimpl
    def mount_device(self, mount: Mount) -> Any:
        return 42 if mount.destination == "/" else None


class DroppingWrapper:
    @hookimpl(wrapper=True)
    def compile_mounts(self, spec: Any, config: Any) -> Any:
        yield
        return None


class RaisingPlatformCreate:
    @hookimpl
    def platform_create(self, config: Config) -> Any:
        raise OSError("no /dev/kvm")


def _spec_with(tmp_path: Path, *mounts: Mount) -> Any:
    from pyrunsc.core.spec import Root, Spec

    return Spec(oci_version="1.0.2", root=Root(path=str(tmp_path)), mounts=list(mounts), file="config.json")


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (Mount("/raise", "bad", origin=("config.json", "mounts[0]")),
         "plugin 'badfs': filesystem 'badfs': mount_data failed for the mount at '/raise' "
         "(config.json: mounts[0]): RuntimeError: boom"),
        (Mount("/none", "bad", origin=("config.json", "mounts[0]")),
         "plugin 'badfs': filesystem 'badfs': mount_data returned an unusable value for the mount at '/none' "
         "(config.json: mounts[0]): got None, expected (filesystem name, [data options])"),
        (Mount("/k", "bad", options=("k=boom",), origin=("config.json", "mounts[0]")),
         "plugin 'badfs': filesystem 'badfs': check_option('k', ...) failed for the mount at '/k' "
         "(config.json: mounts[0]): KeyError: 'boom'"),
    ],
)
def test_failing_filesystem_type_is_a_plugin_error(tmp_path: Path, mount: Mount, message: str) -> None:
    plugins = Plugins(inline=[("badfs", Registers([BadFS]))])
    for build in (resolve_all, create_restore_environment):
        with pytest.raises(PluginError) as e:
            build(plugins, _spec_with(tmp_path, mount), config(tmp_path))
        assert (e.value.plugin, str(e.value), e.value.exit_code) == ("badfs", message, 1)
    # A ValueError is still bad input, exit status 2.
    bad = Mount("/k", "bad", options=("k=bad",), origin=("config.json", "mounts[0]"))
    with pytest.raises(ConfigError, match="k must not be bad"):
        resolve_all(plugins, _spec_with(tmp_path, bad), config(tmp_path))


def test_failing_mount_device_names_its_plugin(tmp_path: Path) -> None:
    plugins = Plugins(inline=[("devbroken", BrokenDevice())])
    spec = _spec_with(tmp_path)
    for build in (resolve_all, create_restore_environment):
        with pytest.raises(PluginError) as e:
            build(plugins, spec, config(tmp_path))
        assert str(e.value) == (
            "plugin 'devbroken': mount_device failed for the mount at '/' (config.json: root): KeyError: 'boom'"
        )
    # The other mounts, not its business, are untouched.
    assert plugins.mount_device(Mount("/t", "tmpfs")) == "none"
    with pytest.raises(PluginError, match=r"^plugin 'numbers': mount_device returned 42 for the mount at '/'"):
        resolve_all(Plugins(inline=[("numbers", NumberDevice())]), spec, config(tmp_path))


def test_failing_mount_hooks_through_the_cli_exit_1_naming_the_plugin(bundle: Path) -> None:
    plugins = Plugins(inline=[("devbroken", BrokenDevice())])
    result = CliRunner().invoke(cli, ["mounts", "--bundle", str(bundle)], obj=State(plugins=plugins))
    assert result.exit_code == 1
    assert result.stderr == (
        f"pyrunsc: error: plugin 'devbroken': mount_device failed for the mount at '/' "
        f"({bundle}/config.json: root): KeyError: 'boom'\n"
    )
    result = CliRunner().invoke(cli, ["--debug", "mounts", "--bundle", str(bundle)], obj=State(plugins=plugins))
    assert result.exit_code == 1 and "Traceback" in result.stderr and "KeyError" in result.stderr


def test_bad_compile_mounts_and_platform_create_name_their_plugin(tmp_path: Path) -> None:
    plugins = Plugins(inline=[("dropper", DroppingWrapper())])
    with pytest.raises(PluginError, match=r"^plugin 'dropper': compile_mounts returned None, expected a list"):
        plugins.compile_mounts(_spec_with(tmp_path), config(tmp_path))
    plugins = Plugins(inline=[("kvmish", RaisingPlatformCreate())])
    with pytest.raises(PluginError) as e:
        plugins.platform_create(config(tmp_path))
    assert str(e.value) == "plugin 'kvmish': platform_create failed for platform 'ptrace': OSError: no /dev/kvm"
