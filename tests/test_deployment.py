"""YAML deployments (core/deployment.py): shape, paths, and FILE:LINE:COLUMN errors."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrunsc.core.cli import State, cli
from pyrunsc.core.deployment import Deployment, check_container_id, load_deployment
from pyrunsc.core.errors import ConfigError
from pyrunsc.core.spec import Mount

PLATFORMS = ("kvm", "ptrace")


@pytest.fixture(autouse=True)
def pyrunsc_logger() -> Iterator[logging.Logger]:
    """Undo the CLI's setup_logging (no propagation, a closed stream) after each test."""
    logger = logging.getLogger("pyrunsc")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:] = []
    logger.propagate = True
    yield logger
    logger.handlers[:], logger.propagate, logger.level = saved


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


#: A minimal inline spec, to append to a deployment (4 lines, at column 1).
SPEC = """\
spec:
  ociVersion: 1.0.2
  root: {path: rootfs}
  process: {args: [sh], cwd: /}
"""


def error_of(path: Path, platforms: tuple[str, ...] | None = PLATFORMS) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_deployment(path, platforms=platforms)
    assert e.value.exit_code == 2
    return e.value


# Loading.


def test_inline_spec_and_runtime(tmp_path: Path) -> None:
    path = write(tmp_path / "deploy" / "web.yaml", """
        name: web-1
        runtime:
          platform: kvm
          fileAccess: direct
          overlay: true
          network: none
          debug: false
          strace: true
        spec:
          ociVersion: 1.0.2
          hostname: web
          root:
            path: rootfs
            readonly: true
          process:
            args: [/bin/sh, -c, "echo hi"]
            cwd: /srv
            env: [A=1]
            user: {uid: 1000, gid: 1000, additionalGids: [10]}
            capabilities: {bounding: [CAP_KILL]}
            rlimits: [{type: RLIMIT_NOFILE, hard: 64, soft: 32}]
            noNewPrivileges: true
          mounts:
            - destination: /data
              type: bind
              source: ../shared/data
              options: [rbind, ro]
            - {destination: /tmp, type: tmpfs}
          annotations:
            org.example/role: frontend
    """)
    dep = load_deployment(path, platforms=PLATFORMS)
    assert isinstance(dep, Deployment)
    assert dep.file == path
    assert dep.name == "web-1"
    assert dep.runtime == {
        "platform": "kvm", "file_access": "direct", "overlay": True,
        "network": "none", "debug": False, "strace": True,
    }
    s = dep.spec
    folder = (tmp_path / "deploy").resolve()
    assert s.bundle == folder
    assert s.file == str(path)
    assert s.oci_version == "1.0.2"
    assert s.hostname == "web"
    assert (s.root.path, s.root.readonly) == (str(folder / "rootfs"), True)
    p = s.process
    assert p is not None
    assert (p.args, p.cwd, p.env) == (["/bin/sh", "-c", "echo hi"], "/srv", ["A=1"])
    assert (p.user.uid, p.user.gid, p.user.additional_gids) == (1000, 1000, [10])
    assert p.capabilities is not None and p.capabilities.bounding == ["CAP_KILL"]
    assert [(r.type, r.hard, r.soft) for r in p.rlimits] == [("RLIMIT_NOFILE", 64, 32)]
    assert p.no_new_privileges is True
    assert s.mounts == [
        Mount("/data", "bind", str(tmp_path.resolve() / "shared" / "data"), ("rbind", "ro")),
        Mount("/tmp", "tmpfs"),
    ]
    assert s.mounts[0].origin == (str(path), "spec.mounts[0]")
    assert [m.position for m in s.mounts] == [(24, 7), (28, 7)]
    assert s.annotations == {"org.example/role": "frontend"}
    # Plain data, not ruamel's commented containers and scalar types.
    assert type(p.args[0]) is str and type(p.args) is list


def test_name_and_runtime_are_optional(tmp_path: Path) -> None:
    dep = load_deployment(write(tmp_path / "d.yaml", SPEC))
    assert dep.name is None
    assert dep.runtime == {}


def test_null_runtime_values_mean_not_given(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "runtime:\n  platform:\n  overlay: ~\n" + SPEC)
    assert load_deployment(path).runtime == {}


def test_anchored_booleans_are_booleans(tmp_path: Path) -> None:
    # ruamel.yaml loads an anchored boolean as ScalarBoolean, an int subclass.
    path = write(tmp_path / "d.yaml", "runtime:\n  debug: &on true\n  strace: *on\n  overlay: false\n" + SPEC)
    assert load_deployment(path).runtime == {"debug": True, "strace": True, "overlay": False}


def test_bundle_is_relative_to_the_yaml_folder(tmp_path: Path) -> None:
    bundle = tmp_path / "bundles" / "app"
    (bundle / "rootfs").mkdir(parents=True)
    spec = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/d", "type": "bind", "source": "data"}],
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    path = write(tmp_path / "conf" / "d.yaml", "name: app\nbundle: ../bundles/app\n")
    dep = load_deployment(path)
    assert dep.name == "app"
    here = bundle.resolve()
    assert dep.spec.bundle == here
    assert dep.spec.root.path == str(here / "rootfs")
    assert dep.spec.mounts[0].source == str(here / "data")


def test_absolute_bundle_path(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "root": {"path": "/r"}}')
    path = write(tmp_path / "elsewhere" / "d.yaml", f"bundle: {bundle}\n")
    assert load_deployment(path).spec.root.path == "/r"


def test_errors_in_a_bundles_config_json_name_that_file(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "root": {"path": "/r"}, "hostname": 1}')
    path = write(tmp_path / "d.yaml", "bundle: b\n")
    assert str(error_of(path)) == f"{bundle}/config.json: hostname: expected a string, got integer 1"


def test_unacted_inline_spec_fields_are_kept_with_a_positioned_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "d.yaml", SPEC + "  hooks: {prestart: []}\n  linux: {namespaces: []}\n")
    with caplog.at_level(logging.WARNING, logger="pyrunsc"):
        dep = load_deployment(path)
    assert dep.spec.extra == {"hooks": {"prestart": []}}
    assert dep.spec.linux == {"namespaces": []}
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"{path}:5:10: spec.hooks: not acted on yet; kept",
        f"{path}:6:23: spec.linux.namespaces: not acted on yet; kept",
    ]


# Errors with exact positions.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Unknown top-level key: at the key, and no suggestion when none is close.
        ("name: web\nimage: busybox\n" + SPEC,
         "2:1: image: unknown field"),
        ("name: web\nbundel: ./b\n",
         "2:1: bundel: unknown field; did you mean 'bundle'?"),
        # Unknown key nested in runtime.
        ("runtime:\n  debug: true\n  platfrom: kvm\n" + SPEC,
         "3:3: runtime.platfrom: unknown field; did you mean 'platform'?"),
        ("runtime: {file_access: direct}\n" + SPEC,
         "1:11: runtime.file_access: unknown field; did you mean 'fileAccess'?"),
        # Unknown key in spec.process.
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  process:\n    args: [sh]\n    cwd: /\n"
         "    usr: {uid: 0, gid: 0}\n",
         "7:5: spec.process.usr: unknown field; did you mean 'user'?"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  rootfs: r\n",
         "4:3: spec.rootfs: unknown field; did you mean 'root'?"),
        # A bad value in spec.mounts[1].destination: at the value.
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  mounts:\n"
         "    - destination: /proc\n      type: proc\n    - destination: tmp\n      type: tmpfs\n",
         '7:20: spec.mounts[1].destination: must be an absolute path, got "tmp"'),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  mounts:\n"
         "    - {destination: /proc, type: proc}\n    - {type: tmpfs, destination: 'tmp'}\n",
         "6:34: spec.mounts[1].destination: must be an absolute path, got \"tmp\""),
        # YAML syntax errors.
        ("name: web\nspec:\n  ociVersion: 1.0.2\n  root: {path: rootfs\n",
         "5:1: invalid YAML: expected ',' or '}', but got '<stream end>'"),
        ("name: web\n\truntime: {}\n",
         "2:1: invalid YAML: found character '\\t' that cannot start any token"),
        ("name: [web\nruntime: {}\n",
         "2:8: invalid YAML: expected ',' or ']', but got ':'"),
        # Duplicate keys: at the second one, with the field path.
        ("name: web\nruntime:\n  debug: true\n  strace: true\n  debug: false\n" + SPEC,
         "5:3: runtime.debug: duplicate key (first given at line 3)"),
        ("name: a\n" + SPEC + "name: b\n",
         "6:1: name: duplicate key (first given at line 1)"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  mounts:\n"
         "    - {destination: /a, type: tmpfs, type: proc}\n",
         "5:38: spec.mounts[0].type: duplicate key (first given at line 5)"),
        # Wrong types and values.
        ("name: 12\n" + SPEC,
         "1:7: name: expected a string, got integer 12"),
        ("name: ../etc\n" + SPEC,
         "1:7: name: a container ID takes letters, digits, '_', '+', '-' and '.' (not '.' or '..'), "
         'got "../etc"'),
        ("name: ..\n" + SPEC,
         "1:7: name: a container ID takes letters, digits, '_', '+', '-' and '.' (not '.' or '..'), "
         'got ".."'),
        ("runtime: [ptrace]\n" + SPEC,
         '1:10: runtime: expected a mapping, got list ["ptrace"]'),
        ("runtime:\n  overlay: yes\n" + SPEC,
         '2:12: runtime.overlay: expected a boolean, got string "yes"'),
        ("runtime:\n  debug: 1\n" + SPEC,
         "2:10: runtime.debug: expected a boolean, got integer 1"),
        ("runtime:\n  platform: ptrce\n" + SPEC,
         "2:13: runtime.platform: \"ptrce\" is not one of kvm, ptrace; did you mean 'ptrace'?"),
        ("runtime:\n  fileAccess: host\n" + SPEC,
         '2:15: runtime.fileAccess: "host" is not one of direct, proxy'),
        ("runtime:\n  network: host\n" + SPEC,
         "2:12: runtime.network: network \"host\" is not supported yet; only 'none' is"),
        ("bundle: 5\n", "1:9: bundle: expected a string, got integer 5"),
        ("bundle: ''\n", "1:9: bundle: must not be empty"),
        ("- name: web\n", '1:1: expected a mapping, got list [{"name": "web"}]'),
        ("# a comment\n\n  just text\n", '3:3: expected a mapping, got string "just text"'),
        ("%YAML 1.2\n--- 12\n", "2:5: expected a mapping, got integer 12"),
        ("name: web\n", "1:1: a deployment needs 'bundle' (a folder) or 'spec' (an inline OCI spec)"),
        ("bundle: b\n" + SPEC,
         "2:1: spec: give either 'bundle' or 'spec', not both"),
        ("spec:\n  root: {path: r}\n",
         "1:1: spec: missing required field 'ociVersion'"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  process:\n    args: [sh]\n",
         "4:3: spec.process: missing required field 'cwd'"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  mounts:\n    - type: tmpfs\n",
         "5:7: spec.mounts[0]: missing required field 'destination'"),
        ("spec:\n  ociVersion: 1.0\n  root: {path: r}\n",
         "2:15: spec.ociVersion: expected a string, got number 1.0"),
        ("spec:\n  ociVersion: '1.0.2'\n  root: {path: r}\n  process:\n    args: []\n    cwd: /\n",
         "5:11: spec.process.args: must name at least the program to run, got []"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  process:\n    args: [sh]\n    cwd: /\n"
         "    rlimits:\n      - {type: RLIMIT_NOFILE, hard: 10, soft: 20}\n",
         "8:47: spec.process.rlimits[0].soft: soft limit 20 is above the hard limit 10"),
        ("spec:\n  ociVersion: 1.0.2\n  root: {path: r}\n  process:\n    args: [sh]\n    cwd: /\n"
         "    capabilities:\n      bounding:\n        - CAP_KILL\n        - CAP_NOPE\n",
         '10:11: spec.process.capabilities.bounding[1]: unknown capability "CAP_NOPE"'),
    ],
)
def test_errors_carry_file_line_column_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "d.yaml", text)
    assert str(error_of(path)) == f"{path}:{expected}"


def test_error_file_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "d.yaml", "runtime:\n  platfrom: kvm\n")
    monkeypatch.chdir(tmp_path)
    e = error_of(Path("conf/d.yaml"))
    assert str(e) == "conf/d.yaml:2:3: runtime.platfrom: unknown field; did you mean 'platform'?"
    assert (e.file, e.line, e.column, e.field) == ("conf/d.yaml", 2, 3, "runtime.platfrom")


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "# nothing here\n")
    assert str(error_of(path)) == f"{path}:1:1: the file is empty; a deployment needs 'bundle' or 'spec'"


def test_missing_file(tmp_path: Path) -> None:
    assert str(error_of(tmp_path / "nope.yaml")) == f"{tmp_path}/nope.yaml: no such file"


def test_missing_bundle_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "name: x\nbundle: ./missing\n")
    assert str(error_of(path)) == (
        f"{path}:2:9: bundle: '{tmp_path.resolve()}/missing' is not a bundle folder with a config.json"
    )


def test_platform_is_free_when_no_platform_list_is_given(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "runtime: {platform: gpu}\n" + SPEC)
    assert load_deployment(path, platforms=None).runtime == {"platform": "gpu"}
    assert str(error_of(path)) == f'{path}:1:21: runtime.platform: "gpu" is not one of kvm, ptrace'


@pytest.mark.parametrize("name", ["web", "a.b", "x_1+2-3", "..a", "a..", "A" * 100])
def test_valid_container_ids(name: str) -> None:
    assert check_container_id(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "wéb", "a\n", "-\0"])
def test_invalid_container_ids(name: str) -> None:
    assert check_container_id(name) is not None


# Through the CLI.


def test_cli_bad_deployment_exits_2_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "d.yaml", "runtime:\n  platfrom: kvm\n" + SPEC)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["mounts", "--deployment", "d.yaml"], obj=State())
    assert result.exit_code == 2
    assert result.stderr == (
        "pyrunsc: error: d.yaml:2:3: runtime.platfrom: unknown field; did you mean 'platform'?\n"
    )
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_inline_spec_mounts_are_relative_to_the_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "dep" / "d.yaml", SPEC + "  mounts:\n"
                 "    - {destination: /data, type: none, source: data, options: [rbind, ro]}\n")
    result = CliRunner().invoke(cli, ["mounts", "--deployment", str(path), "--format", "json"], obj=State())
    assert result.exit_code == 0, result.output
    rows = {r["destination"]: r for r in json.loads(result.stdout)}
    folder = (tmp_path / "dep").resolve()
    assert rows["/"]["source"] == str(folder / "rootfs")
    assert (rows["/data"]["type"], rows["/data"]["source"]) == ("bind", str(folder / "data"))
    assert rows["/data"]["device"] == "9pfs-/data"


# Hostile or broken input.


@pytest.mark.timeout(20)
def test_deeply_nested_inline_spec_is_refused(tmp_path: Path) -> None:
    # ruamel.yaml's work grows with the square of the depth: 100,000 brackets
    # would take hours to parse; they are refused as they are read.
    for depth in (101, 300, 1000, 100_000):
        path = write(tmp_path / f"d{depth}.yaml", SPEC + "  hooks: " + "[" * depth + "]" * depth + "\n")
        e = error_of(path)
        assert e.file == str(path) and e.message == "nested too deeply (more than 100 levels)"
    # Block nesting too.
    text = "spec:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(500)) + " " * 501 + "v\n"
    e = error_of(write(tmp_path / "block.yaml", text))
    assert e.message == "nested too deeply (more than 100 levels)" and e.line == 101
    # Up to the limit is fine.
    path = write(tmp_path / "ok.yaml", SPEC + "  solaris: {anet: " + "[" * 90 + "]" * 90 + "}\n")
    anet = load_deployment(path).spec.extra["solaris"]["anet"]
    for _ in range(89):
        (anet,) = anet
    assert anet == []


def test_huge_integer_is_refused_at_its_position(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", BLOCK_SPEC + "    oomScoreAdj: " + "9" * 5000 + "\n")
    assert str(error_of(path)) == f"{path}:7:18: spec.process.oomScoreAdj: integer too large (5000 digits)"


def _bomb(levels: int) -> str:
    """A "billion laughs": each level refers to the one before nine times."""
    lines = ["    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    prev = "a"
    for n in "bcdefghijklm"[:levels]:
        lines.append(f"    {n}: &{n} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("levels", [7, 9])
def test_alias_bomb_under_a_kept_field_is_refused_quickly(tmp_path: Path, levels: int) -> None:
    import time

    path = write(tmp_path / "d.yaml", SPEC + "  hooks:\n" + _bomb(levels))
    assert path.stat().st_size < 700
    started = time.monotonic()
    e = error_of(path)
    assert time.monotonic() - started < 5
    assert e.message == "expands to more than 1,000,000 values (YAML aliases repeated?); a spec is far smaller"
    assert e.field is not None and e.field.startswith("spec.hooks")
    assert e.line is not None


def test_anchors_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", """
        spec:
          ociVersion: 1.0.2
          root: {path: rootfs}
          process:
            args: &cmd [sh, -c, "echo hi"]
            cwd: /
          mounts:
            - &tmp {destination: /tmp, type: tmpfs, options: [nosuid, "mode=1777"]}
            - <<: *tmp
              destination: /run
          annotations:
            org.example/cmd: "x"
          hooks:
            poststop: [{path: /bin/sh, args: *cmd}]
        """)
    s = load_deployment(path).spec
    assert [(m.destination, m.type, m.options) for m in s.mounts] == [
        ("/tmp", "tmpfs", ("nosuid", "mode=1777")), ("/run", "tmpfs", ("nosuid", "mode=1777")),
    ]
    assert s.extra["hooks"] == {"poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hi"]}]}


#: SPEC with a block ``process`` mapping, to add fields to (6 lines).
BLOCK_SPEC = """\
spec:
  ociVersion: 1.0.2
  root: {path: rootfs}
  process:
    args: [sh]
    cwd: /
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  linux: {namepsaces: []}\n", "7:11: spec.linux.namepsaces: unknown field; did you mean 'namespaces'?"),
        ("  linux:\n    namespaces: [{type: pid, pth: /x}]\n",
         "8:30: spec.linux.namespaces[0].pth: unknown field; did you mean 'path'?"),
        ("  hooks: {prestrat: []}\n", "7:11: spec.hooks.prestrat: unknown field; did you mean 'prestart'?"),
        ("  hooks: {prestart: [{path: /x, timout: 1}]}\n",
         "7:33: spec.hooks.prestart[0].timout: unknown field; did you mean 'timeout'?"),
        ("    consoleSize: {heigth: 1}\n",
         "7:19: spec.process.consoleSize.heigth: unknown field; did you mean 'height'?"),
        ("    scheduler: {policy: SCHED_FIFO, nise: 1}\n",
         "7:37: spec.process.scheduler.nise: unknown field; did you mean 'nice'?"),
        ("  mounts:\n    - destination: /m\n      type: tmpfs\n"
         "      uidMappings: [{containerID: 0, hostId: 1, size: 1}]\n",
         "10:38: spec.mounts[0].uidMappings[0].hostId: unknown field; did you mean 'hostID'?"),
        ("  linux: {uidMappings: [{containerId: 0, hostID: 1, size: 1}]}\n",
         "7:26: spec.linux.uidMappings[0].containerId: unknown field; did you mean 'containerID'?"),
        ("  linux: {resources: {memory: {limt: 1}}}\n",
         "7:32: spec.linux.resources.memory.limt: unknown field; did you mean 'limit'?"),
        ("  linux: {seccomp: {syscalls: [{names: [x], action: y, arg: []}]}}\n",
         "7:56: spec.linux.seccomp.syscalls[0].arg: unknown field; did you mean 'args'?"),
        # The containers must have the spec's shape too.
        ("  hooks: [prestart]\n", '7:10: spec.hooks: expected a mapping, got list ["prestart"]'),
        ("  hooks: {prestart: {path: /x}}\n",
         '7:21: spec.hooks.prestart: expected a list, got mapping {"path": "/x"}'),
        ("  linux: {uidMappings: [1]}\n", "7:25: spec.linux.uidMappings[0]: expected a mapping, got integer 1"),
    ],
)
def test_unknown_keys_inside_kept_fields_are_errors(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path / "d.yaml", BLOCK_SPEC + extra)
    assert str(error_of(path)) == f"{path}:{expected}"


def test_a_mount_over_the_root_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", SPEC + "  mounts: [{destination: /.., type: tmpfs}]\n")
    assert str(error_of(path)) == (
        f'{path}:5:26: spec.mounts[0].destination: cannot mount over the root filesystem (that is root.path), got "/.."'
    )


def test_empty_spec_or_bundle(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "name: web\nspec:\n")
    assert str(error_of(path)) == f"{path}:2:1: spec: is empty; give an inline OCI spec (ociVersion, root, process)"
    path = write(tmp_path / "e.yaml", "name: web\nbundle:\n")
    assert str(error_of(path)) == f"{path}:2:1: bundle: is empty; give a folder"


def test_a_second_document_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "name: web\n" + SPEC + "---\nname: other\n")
    assert str(error_of(path)) == (
        f"{path}:6:1: a deployment is one YAML document; found a second at line 6"
    )


def test_non_regular_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert str(error_of(fifo)) == f"{fifo}: is not a regular file but a FIFO"
    assert str(error_of(Path("/dev/zero"))) == "/dev/zero: is not a regular file but a character device"
    assert str(error_of(tmp_path)) == f"{tmp_path}: is a directory, not a file"
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(16 * 2**20 + 1)
    assert str(error_of(big)) == f"{big}: is larger than 16 MiB; a spec or deployment is far smaller"
    bad = write(tmp_path / "latin1.yaml", "")
    bad.write_bytes(b"name: caf\xe9\n")
    assert str(error_of(bad)) == f"{bad}: not UTF-8 text: invalid continuation byte at byte 9"


def test_bundle_path_too_long(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "bundle: " + "b" * 5000 + "\n")
    e = error_of(path)
    assert (e.line, e.column, e.field) == (1, 9, "bundle")
    assert e.message.startswith(f"cannot use '{tmp_path.resolve()}/bbbb") and e.message.endswith(
        "...': File name too long"
    )


def test_file_name_is_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf" / "d.yaml", "runtime:\n  platfrom: kvm\n")
    monkeypatch.chdir(tmp_path)
    assert error_of(Path("./conf/../conf//d.yaml")).file == "conf/d.yaml"
