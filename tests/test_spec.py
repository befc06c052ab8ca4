"""The OCI runtime spec loader (core/spec.py, core/document.py) and `pyrunsc spec`."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pyrunsc.core.abi import CAPABILITIES, RLIM_INFINITY
from pyrunsc.core.cli import State, cli
from pyrunsc.core.document import format_path
from pyrunsc.core.errors import ConfigError
from pyrunsc.core.spec import Capabilities, Mount, Spec, default_spec, load_bundle

FIXTURES = Path(__file__).parent / "fixtures"
RUNC_DEFAULT = FIXTURES / "runc-default-config.json"
PYRUNSC = Path(sys.executable).parent / "pyrunsc"


@pytest.fixture(autouse=True)
def pyrunsc_logger() -> Iterator[logging.Logger]:
    """The CLI's setup_logging makes the "pyrunsc" logger stop propagating (so
    caplog would miss its records) and points it at a stream CliRunner closes;
    put it back as it was around every test."""
    logger = logging.getLogger("pyrunsc")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = []
    logger.propagate = True
    yield logger
    logger.handlers[:], logger.propagate, logger.level = saved


def write_bundle(root: Path, spec: dict[str, Any] | str, name: str = "bundle") -> Path:
    """A bundle folder under ``root`` with ``spec`` as config.json and a rootfs."""
    bundle = root / name
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    text = spec if isinstance(spec, str) else json.dumps(spec, indent=2)
    (bundle / "config.json").write_text(text, encoding="utf-8")
    return bundle


def minimal() -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
    }


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# Typed objects.


def test_every_acted_field_is_typed(tmp_path: Path) -> None:
    spec = {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": True,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 27], "umask": 0o027},
            "args": ["/bin/sh", "-c", "echo hi"],
            "env": ["PATH=/bin", "EMPTY=", "EQ=a=b"],
            "cwd": "/home/user",
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_CHOWN"],
                "effective": ["CAP_KILL"],
                "inheritable": [],
                "permitted": ["CAP_KILL", "CAP_SYS_ADMIN"],
                "ambient": ["CAP_NET_RAW"],
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": RLIM_INFINITY, "soft": 0},
            ],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "size=1m"]},
        ],
        "annotations": {"org.example.key": "value", "b": ""},
    }
    bundle = write_bundle(tmp_path, spec)
    s = load_bundle(bundle)

    assert isinstance(s, Spec)
    assert s.oci_version == "1.1.0"
    assert s.bundle == bundle.resolve()
    assert s.file == str(bundle / "config.json")
    p = s.process
    assert p is not None
    assert p.terminal is True
    assert (p.user.uid, p.user.gid, p.user.additional_gids, p.user.umask) == (1000, 100, [5, 27], 0o027)
    assert p.args == ["/bin/sh", "-c", "echo hi"]
    assert p.env == ["PATH=/bin", "EMPTY=", "EQ=a=b"]
    assert p.cwd == "/home/user"
    assert p.capabilities == Capabilities(
        bounding=["CAP_KILL", "CAP_CHOWN"], effective=["CAP_KILL"], inheritable=[],
        permitted=["CAP_KILL", "CAP_SYS_ADMIN"], ambient=["CAP_NET_RAW"],
    )
    assert [(r.type, r.hard, r.soft, r.resource) for r in p.rlimits] == [
        ("RLIMIT_NOFILE", 4096, 1024, 7),
        ("RLIMIT_CORE", RLIM_INFINITY, 0, 4),
    ]
    assert p.no_new_privileges is True
    assert p.extra == {}
    assert s.root.path == str(bundle.resolve() / "rootfs")
    assert s.root.readonly is True
    assert s.hostname == "box"
    assert s.mounts == [
        Mount("/proc", "proc", "proc"),
        Mount("/tmp", "tmpfs", "tmpfs", ("nosuid", "size=1m")),
    ]
    assert s.mounts[1].origin == (str(bundle / "config.json"), "mounts[1]")
    assert s.mounts[1].position is None
    assert s.annotations == {"org.example.key": "value", "b": ""}
    assert s.linux == {}
    assert s.extra == {}


def test_optional_fields_take_their_defaults(tmp_path: Path) -> None:
    s = load_bundle(write_bundle(tmp_path, {"ociVersion": "1.0.0", "root": {"path": "/r"}}))
    assert s.process is None
    assert (s.root.path, s.root.readonly) == ("/r", False)
    assert (s.hostname, s.mounts, s.annotations, s.linux, s.extra) == ("", [], {}, {}, {})

    spec = minimal()
    spec["process"]["user"] = {"uid": 0, "gid": 0}
    p = load_bundle(write_bundle(tmp_path, spec, "b2")).process
    assert p is not None
    assert (p.terminal, p.env, p.capabilities, p.rlimits, p.no_new_privileges) == (False, [], None, [], False)
    assert (p.user.additional_gids, p.user.umask) == ([], None)


def test_capability_mask_and_bit_order() -> None:
    assert Capabilities.mask([]) == 0
    assert Capabilities.mask(["CAP_CHOWN"]) == 1
    assert Capabilities.mask(["CAP_KILL", "CAP_SYS_ADMIN"]) == (1 << 5) | (1 << 21)
    assert Capabilities.mask(list(CAPABILITIES)) == (1 << len(CAPABILITIES)) - 1


def test_digest_follows_content_not_formatting(tmp_path: Path) -> None:
    a = load_bundle(write_bundle(tmp_path, minimal(), "a"))
    b = load_bundle(write_bundle(tmp_path, json.dumps(minimal(), indent=None), "b"))
    changed = minimal()
    changed["hostname"] = "other"
    c = load_bundle(write_bundle(tmp_path, changed, "c"))
    assert len(a.digest) == 64
    assert a.digest == b.digest
    assert a.digest != c.digest


# The default configs: `runc spec`'s and ours.


def test_runc_default_config_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bundle = tmp_path / "runc"
    bundle.mkdir()
    (bundle / "config.json").write_bytes(RUNC_DEFAULT.read_bytes())
    raw = json.loads(RUNC_DEFAULT.read_text())

    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(bundle)

    assert s.oci_version == "1.2.1"
    assert s.hostname == "runc"
    assert (s.root.path, s.root.readonly) == (str(bundle.resolve() / "rootfs"), True)
    p = s.process
    assert p is not None
    assert p.terminal is True
    assert (p.user.uid, p.user.gid, p.user.additional_gids) == (0, 0, [])
    assert p.args == ["sh"]
    assert p.cwd == "/"
    assert p.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"]
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert p.capabilities == Capabilities(bounding=caps, effective=caps, permitted=caps)
    assert [(r.type, r.hard, r.soft) for r in p.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert p.no_new_privileges is True
    assert [(m.destination, m.type, m.source, list(m.options)) for m in s.mounts] == [
        (m["destination"], m["type"], m["source"], m.get("options", [])) for m in raw["mounts"]
    ]
    assert [m.destination for m in s.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    ]
    # linux is kept whole, and each of its fields is warned about exactly once.
    assert s.linux == raw["linux"]
    assert sorted(warnings_of(caplog)) == sorted(
        f"{bundle / 'config.json'}: linux.{key}: not acted on yet; kept"
        for key in ("resources", "namespaces", "maskedPaths", "readonlyPaths")
    )
    assert all(r.name.startswith("pyrunsc") for r in caplog.records)


def test_our_default_spec_loads_without_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(write_bundle(tmp_path, default_spec()))
    assert warnings_of(caplog) == []
    assert s.process is not None and s.process.args == ["sh"]
    assert s.root.readonly is True
    assert [m.destination for m in s.mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"]


def test_spec_command_writes_a_loadable_default(tmp_path: Path) -> None:
    bundle = tmp_path / "new" / "bundle"
    result = CliRunner().invoke(cli, ["spec", "--bundle", str(bundle)], obj=State())
    assert result.exit_code == 0, result.output
    written = bundle / "config.json"
    assert json.loads(written.read_text()) == default_spec()
    (bundle / "rootfs").mkdir()
    s = load_bundle(bundle)
    assert s.root.path == str(bundle.resolve() / "rootfs")
    assert s.hostname == "pyrunsc"


def test_spec_command_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("{}")
    result = CliRunner().invoke(cli, ["spec", "--bundle", str(tmp_path)], obj=State())
    assert result.exit_code == 2
    assert result.stderr == f"pyrunsc: error: {target}: already exists; remove it first\n"
    assert "Traceback" not in result.output
    assert target.read_text() == "{}"


def test_spec_console_script_refuses_to_overwrite(tmp_path: Path) -> None:
    first = subprocess.run([PYRUNSC, "spec", "-b", "b"], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([PYRUNSC, "spec", "-b", "b"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr == "pyrunsc: error: b/config.json: already exists; remove it first\n"
    assert again.stdout == ""


# Fields we keep but do not act on; fields the spec does not define.


def test_unacted_fields_are_kept_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = minimal()
    spec["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    spec["domainname"] = "example.org"
    spec["process"]["apparmorProfile"] = "docker-default"
    spec["process"]["oomScoreAdj"] = 100
    spec["process"]["user"] = {"uid": 0, "gid": 0, "username": "root"}
    spec["mounts"] = [{"destination": "/m", "type": "tmpfs", "uidMappings": [1]}]
    spec["linux"] = {"namespaces": [{"type": "pid"}]}
    bundle = write_bundle(tmp_path, spec)

    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(bundle)

    assert s.extra == {"hooks": {"prestart": [{"path": "/bin/true"}]}, "domainname": "example.org"}
    assert s.process is not None
    assert s.process.extra == {"apparmorProfile": "docker-default", "oomScoreAdj": 100}
    assert s.process.user.extra == {"username": "root"}
    assert dict(s.mounts[0].extra) == {"uidMappings": [1]}
    assert s.linux == {"namespaces": [{"type": "pid"}]}
    f = bundle / "config.json"
    assert sorted(warnings_of(caplog)) == sorted(
        f"{f}: {path}: not acted on yet; kept"
        for path in (
            "hooks", "domainname", "process.apparmorProfile", "process.oomScoreAdj",
            "process.user.username", "mounts[0].uidMappings", "linux.namespaces",
        )
    )


def test_undefined_fields_in_config_json_are_warned_not_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = minimal()
    spec["ociVerison"] = "typo"
    spec["process"]["argz"] = ["x"]
    bundle = write_bundle(tmp_path, spec)
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(bundle)
    assert s.process is not None and s.process.args == ["sh"]
    f = bundle / "config.json"
    assert sorted(warnings_of(caplog)) == [
        f"{f}: ociVerison: unknown field, ignored",
        f"{f}: process.argz: unknown field, ignored",
    ]


# Paths relative to the bundle.


def test_relative_root_and_bind_sources_are_relative_to_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = minimal()
    spec["root"]["path"] = "./images/../rootfs/"
    spec["mounts"] = [
        {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]},
        {"destination": "/abs", "type": "bind", "source": "/srv/abs"},
        # runc: a bind option makes a bind mount whatever the type says.
        {"destination": "/none", "type": "none", "source": "sub/dir", "options": ["rbind"]},
        {"destination": "/untyped", "source": "x", "options": ["bind"]},
        # Not a bind mount: the source is a label, left alone.
        {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
    ]
    write_bundle(tmp_path, spec)
    monkeypatch.chdir(tmp_path)
    s = load_bundle(Path("bundle"))
    here = (tmp_path / "bundle").resolve()
    assert s.bundle == here
    assert s.file == "bundle/config.json"
    assert s.root.path == str(here / "rootfs")
    assert [(m.type, m.source) for m in s.mounts] == [
        ("bind", str(here / "data")),
        ("bind", "/srv/abs"),
        ("bind", str(here / "sub/dir")),
        ("bind", str(here / "x")),
        ("tmpfs", "tmpfs"),
    ]


def test_absolute_root_path_is_kept_cleaned(tmp_path: Path) -> None:
    spec = minimal()
    spec["root"]["path"] = "//srv//root/./fs/"
    assert load_bundle(write_bundle(tmp_path, spec)).root.path == "/srv/root/fs"


# Errors: file, field path and value.


def test_relative_mount_destination_error_has_the_documented_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = default_spec()
    spec["mounts"][2]["destination"] = "tmp"
    monkeypatch.chdir(write_bundle(tmp_path, spec))
    with pytest.raises(ConfigError) as e:
        load_bundle(Path("."))
    assert str(e.value) == 'config.json: mounts[2].destination: must be an absolute path, got "tmp"'
    assert (e.value.file, e.value.field, e.value.line, e.value.exit_code) == (
        "config.json", "mounts[2].destination", None, 2,
    )


def test_error_names_the_file_as_given(tmp_path: Path) -> None:
    spec = minimal()
    spec["process"]["cwd"] = "work"
    bundle = write_bundle(tmp_path, spec)
    with pytest.raises(ConfigError) as e:
        load_bundle(bundle)
    assert str(e.value) == f'{bundle}/config.json: process.cwd: must be an absolute path, got "work"'


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the dotted/indexed ``path`` (``process.rlimits.0.soft``)."""

    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()

SPEC_ERRORS: list[tuple[str, Any, str]] = [
    # Required fields.
    ("ociVersion", _DELETE, "missing required field 'ociVersion'"),
    ("root", _DELETE, "missing required field 'root'"),
    ("root.path", _DELETE, "root: missing required field 'path'"),
    ("process.args", _DELETE, "process: missing required field 'args'"),
    ("process.cwd", _DELETE, "process: missing required field 'cwd'"),
    ("process.user.uid", _DELETE, "process.user: missing required field 'uid'"),
    ("process.rlimits.0.hard", _DELETE, "process.rlimits[0]: missing required field 'hard'"),
    ("mounts.1.destination", _DELETE, "mounts[1]: missing required field 'destination'"),
    ("mounts.1.type", _DELETE, "mounts[1]: missing required field 'type' (or a 'bind' option)"),
    # Wrong types.
    ("ociVersion", 1, "ociVersion: expected a string, got integer 1"),
    ("process", [], "process: expected a mapping, got list []"),
    ("process.args", "sh", 'process.args: expected a list, got string "sh"'),
    ("process.args", ["sh", 1], "process.args[1]: expected a string, got integer 1"),
    ("process.terminal", "yes", 'process.terminal: expected a boolean, got string "yes"'),
    ("process.noNewPrivileges", 1, "process.noNewPrivileges: expected a boolean, got integer 1"),
    ("process.user.uid", "0", 'process.user.uid: expected an integer, got string "0"'),
    ("process.user.gid", 1.5, "process.user.gid: expected an integer, got number 1.5"),
    ("process.user.uid", True, "process.user.uid: expected an integer, got boolean true"),
    ("process.user.uid", -1, "process.user.uid: must be at least 0, got -1"),
    ("process.user.uid", 2**32, "process.user.uid: must be at most 4294967295, got 4294967296"),
    ("process.user.additionalGids", [1, "x"],
     'process.user.additionalGids[1]: expected an integer, got string "x"'),
    ("root.readonly", "true", 'root.readonly: expected a boolean, got string "true"'),
    ("hostname", 7, "hostname: expected a string, got integer 7"),
    ("hostname", "h" * 65, f'hostname: must be at most 64 bytes with no NUL, got "{"h" * 65}"'),
    ("hostname", "a\0b", 'hostname: must be at most 64 bytes with no NUL, got "a\\u0000b"'),
    ("annotations", {"a": None}, "annotations.a: expected a string, got null"),
    ("annotations", {"org.x": 5}, 'annotations["org.x"]: expected a string, got integer 5'),
    ("mounts", {}, "mounts: expected a list, got mapping {}"),
    ("mounts.1.options", "ro", 'mounts[1].options: expected a list, got string "ro"'),
    ("linux", [], "linux: expected a mapping, got list []"),
    # Values.
    ("ociVersion", "2.0.0", 'ociVersion: unsupported version "2.0.0", expected 1.x'),
    ("ociVersion", "0.6.0", 'ociVersion: unsupported version "0.6.0", expected 1.x'),
    ("ociVersion", "1.0", 'ociVersion: must be a SemVer version such as "1.0.2", got "1.0"'),
    ("ociVersion", "v1.0.2", 'ociVersion: must be a SemVer version such as "1.0.2", got "v1.0.2"'),
    ("ociVersion", "1.0.2\n", 'ociVersion: must be a SemVer version such as "1.0.2", got "1.0.2\\n"'),
    ("process.args", [], "process.args: must name at least the program to run, got []"),
    ("process.cwd", "tmp", 'process.cwd: must be an absolute path, got "tmp"'),
    ("process.cwd", "", 'process.cwd: must be an absolute path, got ""'),
    ("process.cwd", "/a\0b", 'process.cwd: must not contain NUL, got "/a\\u0000b"'),
    ("process.env", ["A=1", "FOO"], 'process.env[1]: must be NAME=VALUE, got "FOO"'),
    ("process.env", ["=x"], 'process.env[0]: must be NAME=VALUE, got "=x"'),
    ("process.env", ["A=\0"], 'process.env[0]: must not contain NUL, got "A=\\u0000"'),
    ("process.capabilities.effective", ["CAP_KILL", "CAP_FOO"],
     'process.capabilities.effective[1]: unknown capability "CAP_FOO"'),
    ("process.capabilities.bounding", ["kill"], 'process.capabilities.bounding[0]: unknown capability "kill"'),
    ("process.rlimits.0.type", "RLIMIT_FOO", 'process.rlimits[0].type: unknown resource limit "RLIMIT_FOO"'),
    ("process.rlimits.0.soft", 2048,
     "process.rlimits[0].soft: soft limit 2048 is above the hard limit 1024"),
    ("process.rlimits.0.hard", -1, "process.rlimits[0].hard: must be at least 0, got -1"),
    ("process.rlimits.0.hard", 2**64,
     f"process.rlimits[0].hard: must be at most {RLIM_INFINITY}, got {2**64}"),
    ("process.rlimits", [{"type": "RLIMIT_CORE", "hard": 1, "soft": 1}] * 2,
     "process.rlimits[1]: RLIMIT_CORE is given twice"),
    ("process.user.umask", 0o1000, "process.user.umask: must be at most 511, got 512"),
    ("root.path", "", "root.path: must not be empty"),
    ("mounts.1.destination", "tmp", 'mounts[1].destination: must be an absolute path, got "tmp"'),
    ("mounts.1.type", "", "mounts[1].type: must not be empty"),
    ("mounts.1", {"destination": "/b", "type": "bind"}, "mounts[1]: a bind mount needs a 'source'"),
    ("mounts.1", {"destination": "/b", "options": ["rbind"], "source": ""},
     "mounts[1]: a bind mount needs a 'source'"),
]


@pytest.mark.parametrize(("path", "value", "expected"), SPEC_ERRORS, ids=[e[2][:60] for e in SPEC_ERRORS])
def test_spec_errors_name_file_field_and_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, value: Any, expected: str
) -> None:
    spec = copy.deepcopy(default_spec())
    spec["annotations"] = {}
    spec["linux"] = {}
    spec["process"]["user"] = {"uid": 0, "gid": 0}
    _set(path, value)(spec)
    monkeypatch.chdir(write_bundle(tmp_path, spec))
    with pytest.raises(ConfigError) as e:
        load_bundle(Path("."))
    assert str(e.value) == f"config.json: {expected}"
    assert e.value.exit_code == 2


def test_top_level_must_be_an_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(write_bundle(tmp_path, "[1, 2]"))
    with pytest.raises(ConfigError, match=r"^config\.json: expected a mapping, got list \[1, 2\]$"):
        load_bundle(Path("."))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{\n  "ociVersion": "1.0.2",\n  "root": {"path": "r"}\n  "x": 1\n}',
         "config.json:4:3: invalid JSON: Expecting ',' delimiter"),
        ("", "config.json:1:1: invalid JSON: Expecting value"),
        ('{"ociVersion": tru}', "config.json:1:16: invalid JSON: Expecting value"),
    ],
)
def test_invalid_json_gives_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.chdir(write_bundle(tmp_path, text))
    with pytest.raises(ConfigError) as e:
        load_bundle(Path("."))
    assert str(e.value) == expected


def test_missing_config_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}/config.json: no such file; a bundle needs a config.json (`pyrunsc spec` writes one)"
    )
    assert e.value.exit_code == 2


def test_missing_bundle_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "nope")
    assert str(e.value) == f"--bundle: bundle folder {str(tmp_path / 'nope')!r} does not exist"


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2", "1.2.1", "1.0.0-rc5", "1.0.2-dev", "1.1.0+dev.1"])
def test_any_1x_semver_is_accepted(tmp_path: Path, version: str) -> None:
    spec = minimal()
    spec["ociVersion"] = version
    assert load_bundle(write_bundle(tmp_path, spec)).oci_version == version


def test_mount_type_of_a_bind_mount_must_still_be_a_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = minimal()
    spec["mounts"] = [{"destination": "/d", "type": 5, "source": "d", "options": ["bind"]}]
    monkeypatch.chdir(write_bundle(tmp_path, spec))
    with pytest.raises(ConfigError) as e:
        load_bundle(Path("."))
    assert str(e.value) == "config.json: mounts[0].type: expected a string, got integer 5"


# Bad input through the CLI: exit status 2 and no traceback.


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "config.json: no such file; a bundle needs a config.json (`pyrunsc spec` writes one)"),
        ("{", "config.json:1:2: invalid JSON: Expecting property name enclosed in double quotes"),
        ('{"ociVersion": "3.0.0", "root": {"path": "r"}}',
         'config.json: ociVersion: unsupported version "3.0.0", expected 1.x'),
    ],
)
def test_cli_bad_bundle_exits_2_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str | None, message: str
) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["mounts", "--bundle", "."], obj=State())
    assert result.exit_code == 2
    assert result.stderr == f"pyrunsc: error: {message}\n"
    assert "Traceback" not in result.output
    assert result.stdout == ""


# Properties.


_ENV_NAMES = st.text(st.characters(blacklist_characters="=\0"), min_size=1, max_size=12)
_ENV_VALUES = st.text(st.characters(blacklist_characters="\0"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(env=st.lists(st.tuples(_ENV_NAMES, _ENV_VALUES).map("=".join), max_size=4))
def test_env_entries_with_a_name_load_as_written(tmp_path_factory: pytest.TempPathFactory, env: list[str]) -> None:
    spec = minimal()
    spec["process"]["env"] = env
    bundle = write_bundle(tmp_path_factory.mktemp("env"), spec)
    p = load_bundle(bundle).process
    assert p is not None and p.env == env


@settings(max_examples=40, deadline=None)
@given(entry=st.text(st.characters(blacklist_characters="=\0"), max_size=12))
def test_env_entries_without_equals_are_refused(tmp_path_factory: pytest.TempPathFactory, entry: str) -> None:
    spec = minimal()
    spec["process"]["env"] = ["OK=1", entry]
    bundle = write_bundle(tmp_path_factory.mktemp("env"), spec)
    with pytest.raises(ConfigError) as e:
        load_bundle(bundle)
    assert e.value.field == "process.env[1]"
    assert e.value.message == f"must be NAME=VALUE, got {json.dumps(entry, ensure_ascii=False)}"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("mounts", 2, "destination"), "mounts[2].destination"),
        (("process", "user", "additionalGids", 0), "process.user.additionalGids[0]"),
        (("annotations", "org.opencontainers.ref"), 'annotations["org.opencontainers.ref"]'),
        (("annotations", "a\n"), 'annotations["a\\n"]'),
        (("x-y_z",), "x-y_z"),
        ((), ""),
    ],
)
def test_field_paths(parts: tuple[str | int, ...], expected: str) -> None:
    assert format_path(parts) == expected


# Hostile or broken input: limits, and messages that name the file and field.


def _load_text(tmp_path: Path, text: str) -> ConfigError:
    bundle = write_bundle(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_bundle(bundle)
    assert e.value.exit_code == 2
    return e.value


@pytest.mark.parametrize("depth", [101, 900, 1000, 100_000])
def test_deeply_nested_json_is_refused(tmp_path: Path, depth: int) -> None:
    spec = json.dumps(minimal())
    text = spec[:-1] + ', "hooks": {"prestart": ' + "[" * depth + "]" * depth + "}}"
    e = _load_text(tmp_path, text)
    assert e.message == "nested too deeply (more than 100 levels)"
    assert e.file is not None and e.file.endswith("config.json")


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    spec = minimal()
    nest: Any = []
    for _ in range(96):  # the document, solaris, then 97 lists: 99 levels
        nest = [nest]
    spec["annotations"] = {}
    spec["solaris"] = {"anet": nest}
    assert load_bundle(write_bundle(tmp_path, spec)).extra["solaris"]["anet"] == nest


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_huge_integers_are_refused_naming_the_field(tmp_path: Path, digits: int) -> None:
    spec = json.dumps(minimal())
    text = spec[:-1] + ', "process": {"args": ["sh"], "cwd": "/", "oomScoreAdj": -' + "9" * digits + "}}"
    e = _load_text(tmp_path, text)
    assert str(e).endswith(f"config.json: process.oomScoreAdj: integer too large ({digits} digits)")


def test_large_integers_in_messages_are_cut(tmp_path: Path) -> None:
    spec = minimal()
    spec["process"]["user"] = {"uid": 10**4000, "gid": 0}
    e = _load_text(tmp_path, json.dumps(spec))
    assert e.field == "process.user.uid"
    assert e.message.startswith("must be at most 4294967295, got 1000000") and e.message.endswith("...")
    assert len(e.message) < 120


def test_duplicate_keys_in_config_json_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = '{"ociVersion": "1.0.2", "root": {"path": "a", "path": "rootfs"}, "hostname": "x", "hostname": "y"}'
    bundle = write_bundle(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(bundle)
    # The last value is used, as Go's encoding/json (and so runc) does.
    assert (s.hostname, s.root.path) == ("y", str(bundle.resolve() / "rootfs"))
    f = bundle / "config.json"
    assert sorted(warnings_of(caplog)) == [
        f"{f}: hostname: duplicate key; the last value is used (as runc does)",
        f"{f}: root.path: duplicate key; the last value is used (as runc does)",
    ]


@pytest.mark.parametrize("destination", ["/", "/..", "//", "/./", "/a/.."])
def test_a_mount_over_the_root_is_refused(tmp_path: Path, destination: str) -> None:
    spec = minimal()
    spec["mounts"] = [{"destination": "/proc", "type": "proc"}, {"destination": destination, "type": "tmpfs"}]
    e = _load_text(tmp_path, json.dumps(spec))
    assert e.field == "mounts[1].destination"
    assert e.message == (
        f"cannot mount over the root filesystem (that is root.path), got {json.dumps(destination)}"
    )


def test_unknown_keys_inside_kept_fields_are_warned_in_config_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = minimal()
    spec["process"]["consoleSize"] = {"heigth": 1, "width": 2}
    spec["hooks"] = {"prestrat": [], "poststop": [{"path": "/bin/true", "timout": 3}]}
    spec["linux"] = {
        "namepsaces": [],
        "namespaces": [{"type": "pid", "pth": "/proc/1/ns/pid"}],
        "uidMappings": [{"containerID": 0, "hostId": 1000, "size": 1}],
        "resources": {"memory": {"limt": 1}, "devices": [{"allow": False, "acess": "rwm"}]},
        "timeOffsets": {"monotonic": {"secs": 1, "nanosec": 2}},
    }
    spec["mounts"] = [{"destination": "/m", "type": "tmpfs",
                       "gidMappings": [{"containerID": 0, "hostID": 1, "sise": 1}]}]
    bundle = write_bundle(tmp_path, spec)
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        s = load_bundle(bundle)
    unknown = sorted(w.split(": ", 1)[1] for w in warnings_of(caplog) if w.endswith("unknown field, ignored"))
    assert unknown == sorted(f"{p}: unknown field, ignored" for p in (
        "process.consoleSize.heigth", "hooks.prestrat", "hooks.poststop[0].timout", "linux.namepsaces",
        "linux.namespaces[0].pth", "linux.uidMappings[0].hostId", "linux.resources.memory.limt",
        "linux.resources.devices[0].acess", 'linux.timeOffsets.monotonic.nanosec',
        "mounts[0].gidMappings[0].sise",
    ))
    # An unknown linux field is not kept; the rest is kept as written.
    assert "namepsaces" not in s.linux and s.linux["resources"]["memory"] == {"limt": 1}


def test_kept_fields_of_runc_and_the_spec_examples_have_no_unknown_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = minimal()
    spec["process"].update({
        "consoleSize": {"height": 24, "width": 80},
        "scheduler": {"policy": "SCHED_OTHER", "nice": 1},
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 4},
        "execCPUAffinity": {"initial": "7", "final": "0-3"},
    })
    spec["hooks"] = {name: [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}]
                     for name in ("prestart", "createRuntime", "createContainer", "startContainer",
                                  "poststart", "poststop")}
    spec["linux"] = {
        "namespaces": [{"type": "user", "path": "/proc/1/ns/user"}],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 32000}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 32000}],
        "timeOffsets": {"monotonic": {"secs": 1, "nanosecs": 2}},
        "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438,
                     "uid": 0, "gid": 0}],
        "netDevices": {"eth0": {"name": "ns0"}},
        "cgroupsPath": "/myRuntime/myContainer",
        "resources": {"pids": {"limit": 32}, "hugepageLimits": [{"pageSize": "2MB", "limit": 1}],
                      "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 500}]},
                      "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}}, "unified": {"io.max": "x"},
                      "blockIO": {"weight": 10, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}]}},
        "rootfsPropagation": "slave",
        "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
                    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"], "mountLabel": "x",
        "intelRdt": {"closID": "guaranteed_group", "l3CacheSchema": "L3:0=7f0"},
        "personality": {"domain": "LINUX32", "flags": []},
        "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "2-3", "flags": []},
    }
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        load_bundle(write_bundle(tmp_path, spec))
    assert [w for w in warnings_of(caplog) if "unknown" in w] == []
