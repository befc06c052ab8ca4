"""The ``pyrunsc`` console script as a user meets it: output, logs and exit status."""

from __future__ import annotations

import json
import os
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
