"""Compiled mounts and the restore environment, against gVisor commit 80bdf8a4.

The TestRestoreEnvironment cases are the seed's ``runsc/boot/loader_test.go``
cases, with the expected maps written out as our JSON form.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pyrunsc.core.config import Config
from pyrunsc.core.errors import ConfigError, PyrunscError
from pyrunsc.core.mounts import (
    FdDispenser,
    MountFlags,
    create_restore_environment,
    default_compile_mounts,
    is_sentry_dev_mount,
    resolve_all,
    subtargets,
)
from pyrunsc.core.plugins import Plugins
from pyrunsc.core.spec import Mount, Root, Spec

NONE = {"dev": "none", "flags": [], "data": ""}
ROOT_9P_RO = {"dev": "9pfs-/", "flags": ["ro"], "data": "trans=fd,rfdno=0,wfdno=0,privateunixsocket=true"}


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    return Plugins()


def make_spec(tmp: str, *mounts: Mount, readonly: bool = True) -> Spec:
    return Spec(oci_version="1.0.2", root=Root(path=tmp, readonly=readonly), mounts=list(mounts))


def proxy() -> Config:
    return Config(file_access="proxy", network="none")


def renv_json(plugins: Plugins, spec: Spec, config: Config, fds: list[int]) -> dict[str, object]:
    return create_restore_environment(plugins, spec, config, FdDispenser(fds)).to_json()


# The seed's TestRestoreEnvironment, case by case.


def test_restore_env_basic_spec(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(
        str(tmp_path),
        Mount("/some/very/very/deep/path", "tmpfs"),
        Mount("/proc", "tmpfs"),
    )
    got = renv_json(plugins, spec, proxy(), [0])
    assert got == {
        "9p": [ROOT_9P_RO],
        "tmpfs": [NONE, NONE, NONE],
        "devtmpfs": [NONE],
        "devpts": [NONE],
        "sysfs": [NONE],
    }
    # A tmpfs at /proc counts as /proc: no proc filesystem is added.
    assert "proc" not in got


def test_restore_env_bind_type(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/dev/fd-foo", "bind", str(tmp_path)))
    got = renv_json(plugins, spec, proxy(), [0, 1])
    assert got == {
        "9p": [
            ROOT_9P_RO,
            {"dev": "9pfs-/dev/fd-foo", "flags": [], "data": "trans=fd,rfdno=1,wfdno=1,privateunixsocket=true"},
        ],
        "tmpfs": [NONE],
        "devtmpfs": [NONE],
        "devpts": [NONE],
        "proc": [NONE],
        "sysfs": [NONE],
    }


def test_restore_env_options(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/dev/fd-foo", "tmpfs", options=("uid=1022", "noatime")))
    got = renv_json(plugins, spec, proxy(), [0])
    assert got == {
        "9p": [ROOT_9P_RO],
        "tmpfs": [{"dev": "none", "flags": ["noatime"], "data": "uid=1022"}, NONE],
        "devtmpfs": [NONE],
        "devpts": [NONE],
        "proc": [NONE],
        "sysfs": [NONE],
    }


def test_restore_env_direct_file_access(plugins: Plugins, tmp_path: Path) -> None:
    """The seed refused direct file access ("whitelist error test"); we record
    its mounts under ``hostfs`` with their host paths and no gofer fds."""
    src = tmp_path / "src"
    src.mkdir()
    spec = make_spec(str(tmp_path), Mount("/dev/fd-foo", "bind", str(src)))
    config = Config(file_access="direct")
    # No gofer fds: direct access takes none, so an empty dispenser must do.
    got = create_restore_environment(plugins, spec, config, FdDispenser([])).to_json()
    assert got == {
        "hostfs": [
            {"dev": "9pfs-/", "flags": ["ro"], "data": f"root={tmp_path},dont_translate_ownership=true"},
            {"dev": "9pfs-/dev/fd-foo", "flags": [], "data": f"root={src},dont_translate_ownership=true"},
        ],
        "tmpfs": [NONE],
        "devtmpfs": [NONE],
        "devpts": [NONE],
        "proc": [NONE],
        "sysfs": [NONE],
    }


@pytest.mark.parametrize("access", ["proxy", "direct"])
def test_restore_env_bad_options(plugins: Plugins, tmp_path: Path, access: str) -> None:
    spec = make_spec(str(tmp_path), Mount("/dev/fd-foo", "tmpfs", options=("invalid_option=true",)))
    with pytest.raises(ConfigError) as e:
        create_restore_environment(plugins, spec, Config(file_access=access), FdDispenser([0]))
    assert "invalid_option=true" in str(e.value)
    assert "/dev/fd-foo" in str(e.value)
    assert e.value.exit_code == 2


def test_restore_env_order_is_mount_order(plugins: Plugins, tmp_path: Path) -> None:
    """Filesystem names appear in the order of their first mount, root first."""
    spec = make_spec(str(tmp_path), Mount("/data", "bind", str(tmp_path)), Mount("/run", "tmpfs"))
    got = renv_json(plugins, spec, proxy(), [7, 8])
    assert list(got) == ["9p", "devtmpfs", "devpts", "tmpfs", "proc", "sysfs"]
    assert [a["data"] for a in got["9p"]] == [  # type: ignore[index]
        "trans=fd,rfdno=7,wfdno=7,privateunixsocket=true",
        "trans=fd,rfdno=8,wfdno=8,privateunixsocket=true",
    ]


def test_restore_env_root_writable(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), readonly=False)
    got = renv_json(plugins, spec, proxy(), [0])
    assert got["9p"] == [{**ROOT_9P_RO, "flags": []}]


def test_fd_dispenser_runs_out(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/a", "bind", str(tmp_path)))
    with pytest.raises(PyrunscError, match="gofer"):
        create_restore_environment(plugins, spec, proxy(), FdDispenser([0]))


# compileMounts.


def dests(mounts: list[Mount]) -> list[str]:
    return [m.destination for m in mounts]


def test_compile_adds_dev_proc_sys_tmp_in_order(tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/data", "bind", "/x"))
    assert [(m.destination, m.type) for m in default_compile_mounts(spec)] == [
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/data", "bind"),
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/tmp", "tmpfs"),
    ]


@pytest.mark.parametrize("dest", ["/proc", "/proc/", "//proc", "/proc/../proc", "/./proc"])
def test_compile_matches_cleaned_destinations(tmp_path: Path, dest: str) -> None:
    spec = make_spec(str(tmp_path), Mount(dest, "tmpfs"))
    got = default_compile_mounts(spec)
    assert [m.type for m in got if m.clean_destination == "/proc"] == ["tmpfs"]


def test_compile_nested_mounts(tmp_path: Path) -> None:
    """The seed's "nested mounts" case: every mount kept, in spec order."""
    names = ["/proc", "/foo", "/foo/qux", "/foo/qux-quz", "/foo/bar", "/foo/bar/baz",
             "/foo/some/very/very/deep/path"]
    mounts = [Mount(d, "bind", "/x") if d == "/foo/qux" else Mount(d, "tmpfs") for d in names]
    got = default_compile_mounts(make_spec(str(tmp_path), *mounts))
    assert dests(got) == ["/dev", "/dev/pts", *names, "/sys", "/tmp"]
    assert subtargets("/foo", got) == ["qux", "qux-quz", "bar", "bar/baz", "some/very/very/deep/path"]
    assert subtargets("/foo/bar", got) == ["baz"]
    assert subtargets("/foo/qux", got) == []


def test_compile_mount_inside_dev(tmp_path: Path) -> None:
    """The seed's "mount inside /dev" case: /dev and /dev/fd give way to the
    sentry; /dev/fd-foo, /dev/mqueue, /dev/foo and /dev/bar stay."""
    spec = make_spec(
        str(tmp_path),
        Mount("/proc", "tmpfs"),
        Mount("/dev", "tmpfs"),
        Mount("/dev/fd", "tmpfs"),
        Mount("/dev/fd-foo", "bind", "/x"),
        Mount("/dev/mqueue", "mqueue"),
        Mount("/dev/foo", "tmpfs"),
        Mount("/dev/bar", "bind", "/x"),
    )
    got = default_compile_mounts(spec)
    assert dests(got) == ["/dev", "/dev/pts", "/proc", "/dev/fd-foo", "/dev/mqueue", "/dev/foo",
                          "/dev/bar", "/sys", "/tmp"]
    assert [m.type for m in got[:2]] == ["devtmpfs", "devpts"]


@pytest.mark.parametrize(
    ("dest", "sentry"),
    [
        ("/dev", True), ("/dev/", True), ("/dev/shm", True), ("/dev/shm/x", True), ("/dev/pts", True),
        ("/dev/ptmx", True), ("/dev/fd/3", True), ("/dev/urandom", True), ("/dev/fd-foo", False),
        ("/dev/mqueue", False), ("/devices", False), ("/dev/shmem", False), ("/proc", False),
    ],
)
def test_sentry_dev_mounts(dest: str, sentry: bool) -> None:
    assert is_sentry_dev_mount(Mount(dest, "tmpfs")) is sentry


# Resolution: filesystem names, data, flags and devices.


def test_resolve_flags_and_data(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(
        str(tmp_path),
        Mount("/t", "tmpfs", options=("nosuid", "nodev", "noexec", "mode=1777", "size=64m", "nr_inodes=4k",
                                      "uid=1", "gid=2", "strictatime", "rw")),
        Mount("/s", "none", options=("ro", "rbind", "rprivate")),
    )
    got = {r.mount.destination: r for r in resolve_all(plugins, spec, proxy())}
    t = got["/t"]
    assert t.fs_name == "tmpfs"
    assert t.data == ("mode=1777", "size=64m", "nr_inodes=4k", "uid=1", "gid=2")
    assert t.flags == MountFlags(no_suid=True, no_dev=True, no_exec=True, strict_atime=True)
    assert t.flags.names() == ["noexec", "nosuid", "nodev"]
    assert got["/s"].fs_name == "sysfs"  # type none is sysfs, as in runsc
    assert got["/s"].flags.names() == ["ro"]
    assert got["/"].device == "9pfs-/"
    assert got["/t"].device == "none"


def test_resolve_later_option_wins(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/t", "tmpfs", options=("ro", "rw", "noatime", "atime", "noexec")))
    (t,) = [r for r in resolve_all(plugins, spec, proxy()) if r.mount.destination == "/t"]
    assert t.flags.names() == ["noexec"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("mode=999", "octal"),
        ("mode=17777", "07777"),
        ("uid=abc", "decimal"),
        ("size=lots", "size"),
        ("nr_inodes=10%", "size"),
        ("huge=always", "does not take"),
    ],
)
def test_tmpfs_bad_option_values(plugins: Plugins, tmp_path: Path, option: str, message: str) -> None:
    spec = make_spec(str(tmp_path), Mount("/t", "tmpfs", options=(option,), origin=("config.json", "mounts[0]")))
    with pytest.raises(ConfigError) as e:
        resolve_all(plugins, spec, proxy())
    text = str(e.value)
    assert text.startswith("config.json: mounts[0].options: ")
    assert option in text and message in text and "/t" in text


def test_key_value_option_on_other_types_is_an_error(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/proc", "proc", options=("hidepid=2",)))
    with pytest.raises(ConfigError, match="proc does not take option 'hidepid=2'"):
        resolve_all(plugins, spec, proxy())


def test_unknown_type_and_option_are_warned(plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec(
        str(tmp_path),
        Mount("/q", "mqueue", origin=("config.json", "mounts[0]")),
        Mount("/c", "cgroup", origin=("config.json", "mounts[1]")),
        Mount("/t", "tmpfs", options=("frobnicate",), origin=("config.json", "mounts[2]")),
    )
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        got = resolve_all(plugins, spec, proxy())
    assert "/q" not in dests([r.mount for r in got]) and "/c" not in dests([r.mount for r in got])
    text = caplog.text
    assert "config.json: mounts[0]: ignoring mount at '/q': no filesystem plugin serves type 'mqueue'" in text
    assert "type 'cgroup'" in text
    assert "ignoring unknown mount option 'frobnicate'" in text


def test_overlay_marks_writable_bind_mounts(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path), Mount("/rw", "bind", "/x"), Mount("/ro", "bind", "/x", ("ro",)),
                     readonly=False)
    got = {r.mount.destination: r.overlay for r in resolve_all(plugins, spec, Config(overlay=True))}
    assert got["/rw"] is True and got["/ro"] is False and got["/tmp"] is False


def test_runc_default_spec_compiles(plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """runc's default config.json: /dev, /dev/pts and /dev/shm give way to the
    sentry's own; mqueue and cgroup are skipped with a warning naming them."""
    from pyrunsc.core.spec import load_bundle

    (tmp_path / "rootfs").mkdir()
    fixture = Path(__file__).parent / "fixtures" / "runc-default-config.json"
    (tmp_path / "config.json").write_text(fixture.read_text())
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        spec = load_bundle(tmp_path)
        got = resolve_all(plugins, spec, proxy())
    assert [(r.mount.destination, r.fs_name) for r in got] == [
        ("/", "9p"),
        ("/dev", "devtmpfs"),
        ("/dev/pts", "devpts"),
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/tmp", "tmpfs"),
    ]
    assert "type 'mqueue'" in caplog.text and "type 'cgroup'" in caplog.text
    renv = create_restore_environment(plugins, spec, proxy())
    assert json.loads(json.dumps(renv.to_json()))["9p"] == [ROOT_9P_RO]


# The root needs a filesystem; warnings name where a mount was written.


def test_root_without_a_filesystem_plugin_is_an_error(plugins: Plugins, tmp_path: Path) -> None:
    spec = make_spec(str(tmp_path))
    spec.file = "b/config.json"
    without_9p = Plugins(disabled=["fs_9p"])
    for build in (resolve_all, create_restore_environment):
        with pytest.raises(ConfigError) as e:
            build(without_9p, spec, proxy())
        assert str(e.value) == (
            "b/config.json: root: no filesystem plugin serves 'bind' mounts, which the root filesystem "
            "needs; fs_9p, which serves them, is disabled by PYRUNSC_DISABLE_PLUGINS"
        )
    with pytest.raises(ConfigError, match="fs_9p plugin serves them: is it installed"):
        resolve_all(Plugins(entry_points=False), spec, proxy())
    # Other mounts of a type no plugin serves are still only left out.
    spec.mounts = [Mount("/q", "mqueue", origin=("b/config.json", "mounts[0]"))]
    assert "/q" not in [r.mount.destination for r in resolve_all(plugins, spec, proxy())]


def test_warnings_name_the_file_and_position(
    plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = make_spec(
        str(tmp_path),
        Mount("/t", "tmpfs", options=("bogus",), origin=("d.yaml", "spec.mounts[0]"), position=(7, 7)),
        Mount("/u", "tmpfs", options=("bogus2",), origin=("config.json", "mounts[1]")),
        Mount("/dev", "tmpfs", origin=("config.json", "mounts[2]")),
        Mount("/q", "mqueue", origin=("d.yaml", "spec.mounts[3]"), position=(12, 7)),
    )
    with caplog.at_level(logging.INFO, logger="pyrunsc"):
        resolve_all(plugins, spec, proxy())
    messages = [r.getMessage() for r in caplog.records]
    assert "d.yaml:7:7: spec.mounts[0].options: ignoring unknown mount option 'bogus'" in messages
    assert "config.json: mounts[1].options: ignoring unknown mount option 'bogus2'" in messages
    assert "config.json: mounts[2]: dev mount at '/dev' gives way to the sentry's own" in messages
    assert (
        "d.yaml:12:7: spec.mounts[3]: ignoring mount at '/q': no filesystem plugin serves type 'mqueue'"
        in messages
    )


def test_long_option_values_are_cut_in_messages(
    plugins: Plugins, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long = "x" * 5000
    spec = make_spec(str(tmp_path), Mount("/t", "tmpfs", options=(long,), origin=("config.json", "mounts[0]")))
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        resolve_all(plugins, spec, proxy())
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == f"config.json: mounts[0].options: ignoring unknown mount option '{'x' * 77}...'"
    spec = make_spec(str(tmp_path), Mount("/p", "proc", options=("hidepid=" + long,)))
    with pytest.raises(ConfigError) as e:
        resolve_all(plugins, spec, proxy())
    assert len(str(e.value)) < 200 and "proc does not take option 'hidepid=xxx" in str(e.value)
