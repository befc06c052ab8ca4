"""Runtime settings (core/config.py): values, defaults and precedence, down to the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrunsc.core.cli import State, cli
from pyrunsc.core.config import Config, check_setting, default_root_dir
from pyrunsc.core.deployment import load_deployment
from pyrunsc.core.errors import ConfigError

PYRUNSC = Path(sys.executable).parent / "pyrunsc"


@pytest.fixture(autouse=True)
def pyrunsc_logger() -> Iterator[logging.Logger]:
    """Undo the CLI's setup_logging (no propagation, a closed stream) after each test."""
    logger = logging.getLogger("pyrunsc")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = []
    logger.propagate = True
    yield logger
    logger.handlers[:], logger.propagate, logger.level = saved


# Values and defaults.


def test_defaults() -> None:
    c = Config()
    assert (c.platform, c.file_access, c.overlay, c.network, c.debug, c.strace) == (
        "ptrace", "proxy", False, "none", False, False,
    )
    assert c.root_dir == default_root_dir()


def test_default_root_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    if os.geteuid() == 0:
        assert default_root_dir() == Path("/run/pyrunsc")
    else:
        assert default_root_dir() == tmp_path / "pyrunsc"
        monkeypatch.delenv("XDG_RUNTIME_DIR")
        assert default_root_dir() == Path(f"/tmp/pyrunsc-{os.geteuid()}")


def test_every_allowed_value() -> None:
    c = Config(platform="kvm", file_access="direct", overlay=True, network="none",
               debug=True, strace=True, root_dir=Path("/var/run/x"))
    assert (c.platform, c.file_access, c.overlay, c.debug, c.strace, c.root_dir) == (
        "kvm", "direct", True, True, True, Path("/var/run/x"),
    )


def test_root_dir_given_as_a_string_becomes_a_path() -> None:
    assert Config(root_dir="/srv/state").root_dir == Path("/srv/state")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("network", "host", "--network: network 'host' is not supported yet; only 'none' is "
                            "(the sandbox has no network)"),
        ("network", "bridge", "--network: network 'bridge' is not supported yet; only 'none' is "
                              "(the sandbox has no network)"),
        ("file_access", "shared", "--file-access: file access 'shared' is not one of proxy, direct"),
        ("platform", "", "--platform: expected a platform name, got ''"),
        ("platform", 3, "--platform: expected a platform name, got 3"),
        ("overlay", "yes", "--overlay: expected true or false, got 'yes'"),
        ("debug", 1, "--debug: expected true or false, got 1"),
        ("strace", None, "--strace: expected true or false, got None"),
        ("root_dir", 5, "--root: expected a folder path, got 5"),
        ("root_dir", "", "--root: expected a folder path, got ''"),
    ],
)
def test_bad_values_are_refused_clearly(setting: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Config(**{setting: value})
    assert str(e.value) == message
    assert e.value.exit_code == 2
    with pytest.raises(ConfigError):
        check_setting(setting, value)


# Precedence: CLI flag, then the deployment's runtime, then the default.


@pytest.mark.parametrize(
    ("flags", "runtime", "expected"),
    [
        ({}, {}, "proxy"),
        ({}, {"file_access": "direct"}, "direct"),
        ({"file_access": "direct"}, {}, "direct"),
        ({"file_access": "direct"}, {"file_access": "proxy"}, "direct"),
        ({"file_access": "proxy"}, {"file_access": "direct"}, "proxy"),
        ({"file_access": None}, {"file_access": "direct"}, "direct"),
        (None, None, "proxy"),
    ],
)
def test_resolve_precedence(flags: dict[str, Any] | None, runtime: dict[str, Any] | None, expected: str) -> None:
    assert Config.resolve(flags, runtime).file_access == expected


def test_resolve_keeps_settings_independent() -> None:
    c = Config.resolve(
        {"overlay": False, "root_dir": Path("/r")},
        {"overlay": True, "platform": "kvm", "strace": True},
    )
    assert (c.overlay, c.platform, c.strace, c.file_access, c.root_dir) == (
        False, "kvm", True, "proxy", Path("/r"),
    )


def test_resolve_refuses_unknown_settings_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"^unknown setting 'fileAccess'$"):
        Config.resolve({"fileAccess": "direct"})
    with pytest.raises(ConfigError, match=r"^--network: network 'host' is not supported yet"):
        Config.resolve(None, {"network": "host"})


_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "platform": st.sampled_from(["ptrace", "kvm"]),
    "file_access": st.sampled_from(["proxy", "direct"]),
    "overlay": st.booleans(),
    "network": st.just("none"),
    "debug": st.booleans(),
    "strace": st.booleans(),
}


def _maybe_settings() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: st.none() | v for k, v in _VALUES.items()})


@settings(max_examples=100, deadline=None)
@given(flags=_maybe_settings(), runtime=_maybe_settings())
def test_resolve_precedence_property(flags: dict[str, Any], runtime: dict[str, Any]) -> None:
    c = Config.resolve(flags, runtime)
    default = Config()
    for name in _VALUES:
        if flags.get(name) is not None:
            expected = flags[name]
        elif runtime.get(name) is not None:
            expected = runtime[name]
        else:
            expected = getattr(default, name)
        assert getattr(c, name) == expected, name


# State.config: the CLI's merge, with the installed platforms.


def _deployment(folder: Path, runtime: str = "", spec_extra: str = "") -> Path:
    (folder / "rootfs").mkdir(parents=True, exist_ok=True)
    text = "name: app\n"
    if runtime:
        text += "runtime:\n" + "".join(f"  {line}\n" for line in runtime.split(";"))
    text += (
        "spec:\n  ociVersion: 1.0.2\n  root: {path: rootfs}\n  process: {args: [sh], cwd: /}\n"
        + spec_extra
    )
    path = folder / "d.yaml"
    path.write_text(text)
    return path


def test_state_config_merges_flags_over_the_deployment(tmp_path: Path) -> None:
    dep = load_deployment(_deployment(tmp_path, "platform: kvm;fileAccess: direct;strace: true"))
    c = State().config(dep)
    assert (c.platform, c.file_access, c.strace) == ("kvm", "direct", True)
    c = State(flags={"platform": "ptrace", "strace": False}, root=tmp_path / "state").config(dep)
    assert (c.platform, c.file_access, c.strace, c.root_dir) == ("ptrace", "direct", False, tmp_path / "state")


def test_state_config_refuses_an_uninstalled_platform(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        State(flags={"platform": "gpu"}).config()
    assert str(e.value) == "--platform: unknown platform 'gpu'; installed: kvm, ptrace"


# End to end through `pyrunsc mounts`.


def _mounts(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, obj=State())


def _root_row(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [sorted(r) for r in rows[:1]] == [
        sorted(["destination", "type", "filesystem", "device", "flags", "data", "source", "overlay"])
    ]
    assert rows[0]["destination"] == "/"
    root: dict[str, Any] = rows[0]
    return root


@pytest.mark.parametrize(
    ("flags", "runtime", "filesystem"),
    [
        (["--file-access", "direct"], "fileAccess: proxy", "hostfs"),
        ([], "fileAccess: direct", "hostfs"),
        (["--file-access", "proxy"], "fileAccess: direct", "9p"),
        ([], "", "9p"),
        ([], "fileAccess: proxy", "9p"),
    ],
)
def test_cli_file_access_precedence(tmp_path: Path, flags: list[str], runtime: str, filesystem: str) -> None:
    path = _deployment(tmp_path, runtime)
    root = _root_row(_mounts([*flags, "mounts", "--deployment", str(path), "--format", "json"]))
    assert root["filesystem"] == filesystem
    assert root["source"] == str(tmp_path.resolve() / "rootfs")
    if filesystem == "hostfs":
        assert root["data"] == f"root={tmp_path.resolve() / 'rootfs'},dont_translate_ownership=true"
    else:
        assert root["data"].startswith("trans=fd,")


@pytest.mark.parametrize(
    ("flags", "runtime", "overlay"),
    [
        ([], "overlay: true", True),
        (["--no-overlay"], "overlay: true", False),
        (["--overlay"], "overlay: false", True),
        ([], "", False),
    ],
)
def test_cli_overlay_precedence(tmp_path: Path, flags: list[str], runtime: str, overlay: bool) -> None:
    path = _deployment(tmp_path, runtime)
    root = _root_row(_mounts([*flags, "mounts", "--deployment", str(path), "--format", "json"]))
    assert root["overlay"] is overlay


def test_console_script_flag_beats_the_yaml(tmp_path: Path) -> None:
    _deployment(tmp_path, "fileAccess: proxy")
    run = subprocess.run(
        [PYRUNSC, "--file-access", "direct", "mounts", "--deployment", "d.yaml", "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert (rows[0]["destination"], rows[0]["filesystem"]) == ("/", "hostfs")


@pytest.mark.parametrize(
    ("args", "runtime", "message"),
    [
        (["--network", "host"], "",
         "--network: network 'host' is not supported yet; only 'none' is (the sandbox has no network)"),
        (["--platform", "gpu"], "", "--platform: unknown platform 'gpu'; installed: kvm, ptrace"),
        ([], "network: host",
         "d.yaml:3:12: runtime.network: network \"host\" is not supported yet; only 'none' is"),
        ([], "platform: gpu",
         'd.yaml:3:13: runtime.platform: "gpu" is not one of kvm, ptrace'),
        ([], "fileAccess: Direct",
         "d.yaml:3:15: runtime.fileAccess: \"Direct\" is not one of direct, proxy; did you mean 'direct'?"),
    ],
)
def test_cli_bad_settings_exit_2_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], runtime: str, message: str
) -> None:
    _deployment(tmp_path, runtime)
    monkeypatch.chdir(tmp_path)
    result = _mounts([*args, "mounts", "--deployment", "d.yaml", "--format", "json"])
    assert result.exit_code == 2
    assert result.stderr == f"pyrunsc: error: {message}\n"
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_refuses_a_bad_file_access_flag(tmp_path: Path) -> None:
    result = _mounts(["--file-access", "shared", "mounts", "--bundle", str(tmp_path)])
    assert result.exit_code == 2
    assert "'shared' is not one of 'proxy', 'direct'" in result.stderr
    assert "Traceback" not in result.output


def test_state_config_checks_the_default_platform_only_when_one_is_needed(tmp_path: Path) -> None:
    from pyrunsc.core.plugins import Plugins

    without_ptrace = Plugins(disabled=["platform_ptrace"])
    # Showing mounts runs nothing: the default platform need not be installed...
    assert State(plugins=without_ptrace).config().platform == "ptrace"
    # ...but a command that runs something needs it,
    with pytest.raises(ConfigError, match=r"^--platform: unknown platform 'ptrace'; installed: kvm$"):
        State(plugins=without_ptrace).config(need_platform=True)
    # and one chosen explicitly is always checked.
    with pytest.raises(ConfigError, match="unknown platform 'ptrace'"):
        State(plugins=without_ptrace, flags={"platform": "ptrace"}).config()
    dep = load_deployment(_deployment(tmp_path, "platform: kvm"))
    assert State(plugins=without_ptrace).config(dep).platform == "kvm"


def test_cli_refuses_an_empty_root(tmp_path: Path) -> None:
    result = _mounts(["--root", "", "mounts", "--bundle", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == "pyrunsc: error: --root: must not be empty (leave --root out for the default)\n"
    path = _deployment(tmp_path)
    result = _mounts(["--root", str(tmp_path / "state"), "mounts", "--deployment", str(path)])
    assert result.exit_code == 0, result.output
