"""The ``pyrunsc`` console script as a user meets it: output, logs and exit status."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PYRUNSC), *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A copy of the example bundle's config.json, with its data folder and a rootfs."""
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copy(ROOT / "examples" / "busybox" / "config.json", b / "config.json")
    (b / "rootfs").mkdir()
    (b / "data").mkdir()
    return b


def test_mounts_table(bundle: Path) -> None:
    r = run("mounts", "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "destination" in line)
    for col in ("destination", "type", "filesystem", "device", "flags", "data", "source"):
        assert col in header
    assert "9pfs-/data" in r.stdout
    assert r.stderr == ""


def test_mounts_json(bundle: Path) -> None:
    r = run("mounts", "--bundle", str(bundle), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["destination"] for row in rows] == ["/", "/dev", "/dev/pts", "/proc", "/data", "/run", "/sys", "/tmp"]
    data = rows[4]
    assert data == {
        "destination": "/data",
        "type": "bind",
        "filesystem": "9p",
        "device": "9pfs-/data",
        "flags": ["ro"],
        "data": "trans=fd,rfdno=1,wfdno=1,privateunixsocket=true",
        "source": str(bundle / "data"),
        "overlay": False,
    }


def test_restore_env_json_is_one_object(bundle: Path) -> None:
    r = run("mounts", "--bundle", str(bundle), "--restore-env", "--format", "json")
    assert r.returncode == 0, r.stderr
    renv = json.loads(r.stdout)  # the whole of stdout is exactly one JSON value
    assert isinstance(renv, dict)
    assert list(renv) == ["9p", "devtmpfs", "devpts", "proc", "tmpfs", "sysfs"]
    for args in renv.values():
        for a in args:
            assert set(a) == {"dev", "flags", "data"}
            assert set(a["flags"]) <= {"ro", "noatime", "noexec", "nosuid", "nodev"}
    assert renv["tmpfs"][0] == {"dev": "none", "flags": ["nosuid", "nodev"], "data": "mode=755,size=16m"}


def test_restore_env_table(bundle: Path) -> None:
    r = run("mounts", "--bundle", str(bundle), "--restore-env")
    assert r.returncode == 0, r.stderr
    assert "restore environment" in r.stdout and "9pfs-/data" in r.stdout


def test_bundle_defaults_to_current_folder(bundle: Path) -> None:
    r = run("mounts", "--format", "json", cwd=bundle)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["source"] == str(bundle / "rootfs")


def test_bad_spec_exits_2_without_traceback(bundle: Path) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    spec["mounts"].append({"destination": "tmp", "type": "tmpfs"})
    (bundle / "config.json").write_text(json.dumps(spec))
    r = run("mounts", "--bundle", str(bundle))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip() == (
        f'pyrunsc: error: {bundle}/config.json: mounts[3].destination: must be an absolute path, got "tmp"'
    )
    # --debug does not turn bad input into a traceback either.
    r = run("--debug", "mounts", "--bundle", str(bundle))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mounts", "--bundle", "/nonexistent"], "bundle folder '/nonexistent' does not exist"),
        (["--platform", "bochs", "mounts"], "unknown platform 'bochs'; installed: kvm, ptrace"),
        (["--network", "host", "mounts"], "network 'host' is not supported yet; only 'none'"),
        (["--file-access", "shared", "mounts"], "'shared' is not one of 'proxy', 'direct'"),
        (["mounts", "--bundle", ".", "--deployment", "d.yaml"], "give --bundle or --deployment, not both"),
        (["mounts", "--format", "xml"], "'xml' is not one of 'table', 'json'"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_bad_usage_exits_2(bundle: Path, args: list[str], message: str) -> None:
    r = run(*args, cwd=bundle)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_runtime_failure_exits_1_and_debug_shows_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run("spec", "--bundle", str(blocker / "sub"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"pyrunsc: error: cannot write {blocker}/sub/config.json: Not a directory"
    r = run("--debug", "spec", "--bundle", str(blocker / "sub"))
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "NotADirectoryError" in r.stderr


def test_warnings_go_to_stderr_and_log_file_as_json(tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "runc-default-config.json", b / "config.json")
    r = run("--log-format", "json", "mounts", "--bundle", str(b), "--format", "json")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # data alone on stdout
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert {tuple(sorted(e)) for e in lines} == {("level", "msg", "time")}
    assert any("type 'mqueue'" in e["msg"] and e["level"] == "warning" for e in lines)

    log = tmp_path / "pyrunsc.log"
    r = run("--log", str(log), "--log-format", "json", "mounts", "--bundle", str(b), "--format", "json")
    assert r.returncode == 0 and r.stderr == ""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("linux.namespaces: not acted on yet" in e["msg"] for e in entries)


def test_text_warnings(tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "runc-default-config.json", b / "config.json")
    r = run("mounts", "--bundle", str(b))
    assert r.returncode == 0
    assert f"pyrunsc: warning: {b}/config.json: mounts[4]: ignoring mount at '/dev/mqueue'" in r.stderr


def test_spec_then_mounts(tmp_path: Path) -> None:
    r = run("spec", "--bundle", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "config.json").read_text())["root"] == {"path": "rootfs", "readonly": True}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind
    r = run("mounts", "--bundle", str(tmp_path), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # our own default spec loads without a warning
    r = run("spec", "--bundle", str(tmp_path))
    assert r.returncode == 2 and "already exists" in r.stderr


def test_version_and_help() -> None:
    r = run("--version")
    assert r.returncode == 0 and "pyrunsc" in r.stdout
    r = run("--help")
    assert r.returncode == 0
    for word in ("mounts", "plugins", "spec", "--platform", "--file-access", "--log-format"):
        assert word in r.stdout


# Logging flags and the final error (findings of the fresh-eyes review).


def _fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("{tmp}/no/such/dir/x.log", "No such file or directory"),
        ("{tmp}", "Is a directory"),
        ("", "the path is empty"),
        ("/proc/version", "Invalid argument|Permission denied"),  # root may open it, not seek in it
        ("{tmp}/fifo", "No such device or address"),  # a FIFO nobody reads: refused, not waited on
    ],
)
def test_bad_log_path_is_bad_usage(tmp_path: Path, log: str, reason: str) -> None:
    _fifo(tmp_path)
    path = log.format(tmp=tmp_path)
    expected = f"pyrunsc: error: --log: cannot open {re.escape(repr(path))}: ({reason})\n"
    r = run("--log", path, "plugins")
    assert r.returncode == 2, r.stderr
    assert re.fullmatch(expected, r.stderr), r.stderr
    assert r.stdout == ""
    # The same past other global flags, and with --log=PATH.
    r = run("--platform", "ptrace", f"--log={path}", "plugins")
    assert r.returncode == 2 and re.fullmatch(expected, r.stderr), r.stderr


def test_unwritable_log_file_is_bad_usage(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    log = tmp_path / "ro.log"
    log.write_text("")
    log.chmod(0o444)
    r = run("--log", str(log), "plugins")
    assert (r.returncode, r.stderr) == (2, f"pyrunsc: error: --log: cannot open '{log}': Permission denied\n")


def test_final_error_goes_to_the_log_file_too(tmp_path: Path) -> None:
    log = tmp_path / "l.log"
    r = run("--log", str(log), "--log-format", "json", "mounts", "-b", "/nonexistent")
    assert r.returncode == 2
    # stderr keeps the one-line human message...
    assert r.stderr == "pyrunsc: error: --bundle: bundle folder '/nonexistent' does not exist\n"
    # ...and the log file has it as runc logs fatal errors.
    last = json.loads(log.read_text().splitlines()[-1])
    assert (last["level"], last["msg"]) == ("error", "--bundle: bundle folder '/nonexistent' does not exist")
    assert set(last) == {"level", "msg", "time"}
    r = run("--log", str(log), "mounts", "-b", "/nonexistent")
    assert log.read_text().splitlines()[-1].endswith(" error --bundle: bundle folder '/nonexistent' does not exist")


def test_final_error_on_stderr_is_json_with_log_format_json() -> None:
    r = run("--log-format", "json", "mounts", "-b", "/nonexistent")
    assert r.returncode == 2
    (line,) = r.stderr.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["msg"]) == ("error", "--bundle: bundle folder '/nonexistent' does not exist")


def test_runtime_failure_with_debug_and_a_log_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = tmp_path / "l.log"
    r = run("--debug", "--log", str(log), "--log-format", "json", "spec", "--bundle", str(blocker / "sub"))
    assert r.returncode == 1
    assert "Traceback" in r.stderr
    assert r.stderr.endswith(f"pyrunsc: error: cannot write {blocker}/sub/config.json: Not a directory\n")
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "NotADirectoryError" in entry["error"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--root", "{tmp}/state", "--log", "{tmp}/o.log"],
        ["--platform", "ptrace", "--log={tmp}/o.log"],
        ["--file-access", "direct", "--network", "none", "--log", "{tmp}/o.log", "--debug"],
    ],
)
def test_early_log_flags_are_found_past_other_global_flags(tmp_path: Path, flags: list[str]) -> None:
    # Loading plugins warns before click parses the flags: the warning must
    # already go where --log says.
    args = [f.format(tmp=tmp_path) for f in flags]
    r = run(*args, "plugins", "--format", "json", env={"PYRUNSC_DISABLE_PLUGINS": "nosuchplugin"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "'nosuchplugin', which is not an installed plugin" in (tmp_path / "o.log").read_text()


def test_early_log_format_is_found_past_other_global_flags() -> None:
    r = run("--platform", "ptrace", "--log-format", "json", "plugins", "--format", "json",
            env={"PYRUNSC_DISABLE_PLUGINS": "nosuchplugin"})
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stderr.splitlines()[0])
    assert entry["level"] == "warning" and "nosuchplugin" in entry["msg"]


# Plugins missing at mount time.


def test_root_without_a_filesystem_is_an_error(bundle: Path) -> None:
    r = run("mounts", "-b", str(bundle), env={"PYRUNSC_DISABLE_PLUGINS": "fs_9p"})
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == (
        f"pyrunsc: error: {bundle}/config.json: root: no filesystem plugin serves 'bind' mounts, "
        "which the root filesystem needs; fs_9p, which serves them, is disabled by PYRUNSC_DISABLE_PLUGINS\n"
    )


def test_mounts_does_not_need_the_default_platform(bundle: Path) -> None:
    env = {"PYRUNSC_DISABLE_PLUGINS": "platform_ptrace"}
    r = run("mounts", "-b", str(bundle), "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["destination"] == "/"
    # A platform asked for explicitly must still be installed.
    r = run("--platform", "ptrace", "mounts", "-b", str(bundle), env=env)
    assert r.returncode == 2
    assert "--platform: unknown platform 'ptrace'; installed: kvm" in r.stderr


# Paths and files that are not what they should be.


def test_over_long_paths_are_bad_input(tmp_path: Path) -> None:
    long = "a" * 5000
    for args in (["mounts", "-b", long], ["spec", "-b", long], ["mounts", "-d", long]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "File name too long" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr) < 400, r.stderr  # the path is cut, not printed whole


def test_bundle_that_is_a_file_and_config_json_that_is_a_folder(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("{}")
    r = run("mounts", "-b", str(f))
    assert (r.returncode, r.stderr) == (
        2, f"pyrunsc: error: --bundle: '{f}' is not a folder; a bundle is a folder holding config.json\n",
    )
    (tmp_path / "b" / "config.json").mkdir(parents=True)
    r = run("mounts", "-b", str(tmp_path / "b"))
    assert (r.returncode, r.stderr) == (2, f"pyrunsc: error: {tmp_path}/b/config.json: is a directory, not a file\n")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "fifo"])
def test_non_regular_deployment_files_are_refused_without_reading(tmp_path: Path, device: str) -> None:
    _fifo(tmp_path)
    r = run("mounts", "-d", device, cwd=tmp_path)  # would hang or eat memory if read
    kind = "a FIFO" if device == "fifo" else "a character device"
    assert (r.returncode, r.stderr) == (2, f"pyrunsc: error: {device}: is not a regular file but {kind}\n")


def test_huge_config_json_is_refused(bundle: Path) -> None:
    with open(bundle / "config.json", "r+b") as f:
        f.truncate(17 * 2**20)
    r = run("mounts", "-b", str(bundle))
    assert r.returncode == 2
    assert r.stderr == (
        f"pyrunsc: error: {bundle}/config.json: is larger than 16 MiB; a spec or deployment is far smaller\n"
    )


def test_paths_in_messages_are_normalised(bundle: Path) -> None:
    (bundle / "config.json").write_text("{")
    r = run("mounts", "-b", f"{bundle}/../{bundle.name}//./")
    assert r.stderr.startswith(f"pyrunsc: error: {bundle}/config.json:1:2: invalid JSON")


def test_deeply_nested_config_json_is_bad_input(bundle: Path) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    text = json.dumps(spec)[:-1] + ', "hooks": {"prestart": ' + "[" * 1000 + "]" * 1000 + "}}"
    (bundle / "config.json").write_text(text)
    r = run("mounts", "-b", str(bundle))
    assert (r.returncode, r.stderr) == (
        2, f"pyrunsc: error: {bundle}/config.json: nested too deeply (more than 100 levels)\n",
    )


# What reaches the terminal.


def test_control_characters_in_values_are_shown_escaped(bundle: Path) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    spec["mounts"].append({"destination": "/a\u001b[31mRED", "type": "tmpfs", "options": ["bogus\u001b[2J"]})
    (bundle / "config.json").write_text(json.dumps(spec))
    r = run("mounts", "-b", str(bundle))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr
    assert "/a\\x1b[31mRED" in r.stdout
    assert "ignoring unknown mount option 'bogus\\x1b[2J'" in r.stderr
    spec["hostname"] = "h\u009b2J" * 30
    (bundle / "config.json").write_text(json.dumps(spec))
    r = run("mounts", "-b", str(bundle))
    assert r.returncode == 2 and "\x9b" not in r.stderr and "\\x9b" in r.stderr


def test_empty_root_flag_is_refused() -> None:
    r = run("--root", "", "plugins")
    assert (r.returncode, r.stderr) == (
        2, "pyrunsc: error: --root: must not be empty (leave --root out for the default)\n",
    )


def _help(*args: str) -> str:
    """The help text of ``pyrunsc ARGS --help`` as one line, without rich's box."""
    r = run(*args, "--help")
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.replace("\u2502", " ").split())


def test_help_texts() -> None:
    text = _help("mounts")
    assert "]." not in text
    assert "Bundle folder with config.json (default: the current folder)." in text
    assert "Output format: a table to read, or JSON for programs." in text
    assert "Output format: a table to read, or JSON for programs." in _help("plugins")
    assert "else /tmp/pyrunsc-UID)." in _help()


def test_readme_points_only_at_what_the_repository_has() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "shared design notes" not in readme
    for target in ("docs/plugins.md", "examples/busybox", "scripts/setup.sh"):
        assert target in readme and (ROOT / target).exists()


def test_bad_log_path_seen_by_the_group_callback(tmp_path: Path) -> None:
    # Without main()'s early scan (an embedding caller), click's callback opens the log.
    from click.testing import CliRunner

    from pyrunsc.core.cli import State, cli

    logger = logging.getLogger("pyrunsc")
    saved = (logger.handlers[:], logger.level)
    try:
        result = CliRunner().invoke(cli, ["--log-format", "json", "--log", str(tmp_path), "plugins"], obj=State())
    finally:
        logger.handlers[:], logger.level = saved
    assert result.exit_code == 2
    entry = json.loads(result.stderr)
    assert (entry["level"], entry["msg"]) == ("error", f"--log: cannot open '{tmp_path}': Is a directory")
