"""The OCI runtime spec (``config.json``, runtime-spec 1.x) as typed objects.

Follows github.com/opencontainers/runtime-spec ``config.md`` and
``config-linux.md``. What pyrunsc acts on is typed: ``ociVersion``, ``process``
(terminal, user, args, env, cwd, capabilities, rlimits, noNewPrivileges),
``root``, ``hostname``, ``mounts`` and ``annotations``. Every other field the
spec defines is kept in ``extra`` (``linux`` in :attr:`Spec.linux`) with one
warning each, because we do not act on it yet. Fields the spec does not define,
at the top or inside the objects we keep (``linux``, ``hooks``, ...), are warned
about in ``config.json`` (runc ignores them) and are errors in a YAML
deployment, which is ours to define. Mounts at ``/`` are refused (the root is
``root.path``).

Relative ``root.path`` and bind-mount sources are relative to the bundle. As in
runc (``libcontainer/specconv``) and Linux ``mount(2)``, a mount with a ``bind``
or ``rbind`` option is a bind mount whatever its ``type`` (``"none"`` is usual).
Every error names the file, the field path and the value, e.g.
``config.json: mounts[2].destination: must be an absolute path, got "tmp"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .abi import CAPABILITIES, RLIM_INFINITY, RLIMITS
from .document import Document, Node, describe, quote
from .errors import ConfigError

#: Field names of each object, as the runtime spec defines them.
SPEC_FIELDS = (
    "ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks",
    "annotations", "linux", "solaris", "windows", "vm", "zos", "freebsd",
)
PROCESS_FIELDS = (
    "terminal", "consoleSize", "user", "args", "commandLine", "env", "cwd", "capabilities",
    "rlimits", "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "scheduler",
    "selinuxLabel", "ioPriority", "execCPUAffinity",
)
USER_FIELDS = ("uid", "gid", "umask", "additionalGids", "username")
ROOT_FIELDS = ("path", "readonly")
MOUNT_FIELDS = ("destination", "source", "options", "type", "uidMappings", "gidMappings")
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
RLIMIT_FIELDS = ("type", "hard", "soft")


# The objects we keep but do not act on yet, as runtime-spec 1.x defines them
# (``specs-go/config.go``; ``config.md``, ``config-linux.md``), so that a key
# misspelt inside them is found: an error in a YAML deployment, a warning in
# config.json, as for the fields we act on.


@dataclass(frozen=True)
class Obj:
    """An object with these fields; a field's shape, when given, is checked too."""

    fields: Mapping[str, Shape | None]


@dataclass(frozen=True)
class ListOf:
    """A list whose items have this shape."""

    item: Shape


@dataclass(frozen=True)
class MapOf:
    """An object with keys of the user's choosing, whose values have this shape."""

    item: Shape


Shape = Obj | ListOf | MapOf


def _obj(*names: str, **shapes: Shape) -> Obj:
    return Obj({**dict.fromkeys(names), **shapes})


HOOK = _obj("path", "args", "env", "timeout")
#: ``hooks``: each a list of hooks.
HOOKS = _obj(**{
    name: ListOf(HOOK)
    for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
})
#: ``linux.uidMappings``/``gidMappings`` and ``mounts[].uidMappings``/``gidMappings``.
ID_MAPPING = _obj("containerID", "hostID", "size")
_THROTTLE = ListOf(_obj("major", "minor", "rate"))
RESOURCES = _obj(
    "unified",
    devices=ListOf(_obj("allow", "type", "major", "minor", "access")),
    memory=_obj(
        "limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller",
        "useHierarchy", "checkBeforeUpdate",
    ),
    cpu=_obj(
        "shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle",
    ),
    pids=_obj("limit"),
    blockIO=_obj(
        "weight", "leafWeight",
        weightDevice=ListOf(_obj("major", "minor", "weight", "leafWeight")),
        throttleReadBpsDevice=_THROTTLE, throttleWriteBpsDevice=_THROTTLE,
        throttleReadIOPSDevice=_THROTTLE, throttleWriteIOPSDevice=_THROTTLE,
    ),
    hugepageLimits=ListOf(_obj("pageSize", "limit")),
    network=_obj("classID", priorities=ListOf(_obj("name", "priority"))),
    rdma=MapOf(_obj("hcaHandles", "hcaObjects")),
)
SECCOMP = _obj(
    "defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata",
    syscalls=ListOf(_obj(
        "names", "action", "errnoRet", args=ListOf(_obj("index", "value", "valueTwo", "op")),
    )),
)
#: ``linux``.
LINUX = _obj(
    "cgroupsPath", "sysctl", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel",
    namespaces=ListOf(_obj("type", "path")),
    uidMappings=ListOf(ID_MAPPING),
    gidMappings=ListOf(ID_MAPPING),
    timeOffsets=MapOf(_obj("secs", "nanosecs")),
    devices=ListOf(_obj("path", "type", "major", "minor", "fileMode", "uid", "gid")),
    netDevices=MapOf(_obj("name")),
    resources=RESOURCES,
    seccomp=SECCOMP,
    # enableCMT and enableMBM: runtime-spec 1.1 and 1.2 (enableMonitoring since).
    intelRdt=_obj(
        "closID", "schemata", "l3CacheSchema", "memBwSchema", "enableMonitoring", "enableCMT", "enableMBM",
    ),
    personality=_obj("domain", "flags"),
    memoryPolicy=_obj("mode", "nodes", "flags"),
)
#: The ``process`` fields we keep, with a shape to check.
PROCESS_KEPT: dict[str, Shape] = {
    "consoleSize": _obj("height", "width"),
    "scheduler": _obj("policy", "nice", "priority", "flags", "runtime", "deadline", "period"),
    "ioPriority": _obj("class", "priority"),
    "execCPUAffinity": _obj("initial", "final"),
}
#: The top-level fields we keep, with a shape to check (other platforms' are not).
SPEC_KEPT: dict[str, Shape] = {"hooks": HOOKS}
MOUNT_KEPT: dict[str, Shape] = {"uidMappings": ListOf(ID_MAPPING), "gidMappings": ListOf(ID_MAPPING)}

_ACTED = {
    (): ("ociVersion", "process", "root", "hostname", "mounts", "annotations"),
    ("process",): ("terminal", "user", "args", "env", "cwd", "capabilities", "rlimits", "noNewPrivileges"),
    ("user",): ("uid", "gid", "umask", "additionalGids"),
    ("mount",): ("destination", "source", "options", "type"),
}

_UINT32_MAX = 2**32 - 1

#: SemVer 2.0.0 (https://semver.org), which ``ociVersion`` MUST follow.
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


@dataclass
class User:
    """``process.user``: the credentials of the container's first process."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    #: The file mode creation mask, or None for the runtime default (0o022).
    umask: int | None = None
    #: Spec fields we keep but do not act on yet (``username``).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Capabilities:
    """``process.capabilities``: capability names (``CAP_*``) per set."""

    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)

    @staticmethod
    def mask(names: list[str]) -> int:
        """The capability bit mask for ``names`` (bit n is capability n)."""
        bits = 0
        for name in names:
            bits |= 1 << CAPABILITIES.index(name)
        return bits


@dataclass
class Rlimit:
    """One ``process.rlimits`` entry; values are in the resource's unit."""

    type: str
    hard: int
    soft: int

    @property
    def resource(self) -> int:
        """The Linux resource number (``RLIMIT_NOFILE`` is 7)."""
        return RLIMITS.index(self.type)


@dataclass
class Process:
    """``process``: what runs first in the container, and how."""

    args: list[str]
    cwd: str
    env: list[str] = field(default_factory=list)
    terminal: bool = False
    user: User = field(default_factory=User)
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] = field(default_factory=list)
    no_new_privileges: bool = False
    #: Spec fields we keep but do not act on yet (``apparmorProfile``, ...).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Root:
    """``root``: the container's root filesystem (an absolute host path)."""

    path: str
    readonly: bool = False


@dataclass(frozen=True)
class Mount:
    """One ``mounts`` entry, or a mount the runtime adds (``/proc``, ``/dev``...).

    ``destination`` is as written (compare with :attr:`clean_destination`);
    ``type`` is ``bind`` for any mount with a ``bind``/``rbind`` option;
    ``source`` is an absolute host path for a bind mount from a loaded spec.
    """

    destination: str
    type: str
    source: str = ""
    options: tuple[str, ...] = ()
    #: Where the mount was written (file, field path), for error messages;
    #: None for the mounts the runtime adds.
    origin: tuple[str, str] | None = field(default=None, compare=False)
    #: Spec fields we keep but do not act on yet (``uidMappings``, ...).
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: 1-based (line, column) of the entry in a YAML deployment, for messages
    #: (``FILE:LINE:COL``); None for config.json and the runtime's own mounts.
    position: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def clean_destination(self) -> str:
        """The destination after lexical cleaning (Go ``filepath.Clean``)."""
        return clean_path(self.destination)


@dataclass
class Spec:
    """A loaded OCI runtime spec. ``bundle`` is the bundle folder, when known."""

    oci_version: str
    root: Root
    process: Process | None = None
    hostname: str = ""
    mounts: list[Mount] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    #: The ``linux`` object, kept whole; not acted on yet.
    linux: dict[str, Any] = field(default_factory=dict)
    #: Other spec fields we keep but do not act on yet (``hooks``, ...).
    extra: dict[str, Any] = field(default_factory=dict)
    bundle: Path | None = None
    #: Where the spec was read from, for messages.
    file: str = "config.json"
    #: SHA-256 of the spec's canonical JSON, to recognise it in an image.
    digest: str = ""


def clean_path(path: str) -> str:
    """Lexical path cleaning like Go's ``filepath.Clean`` ("" -> ".")."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    # normpath keeps a leading "//" (POSIX allows it); Clean does not.
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


# Reading.


def show_path(path: str | os.PathLike[str]) -> str:
    """A path for a message: normalised (``a//b/./c`` -> ``a/b/c``), quoted,
    and cut if it is absurdly long."""
    return quote(os.path.normpath(os.fspath(path)), limit=256)


def display_path(path: str | os.PathLike[str]) -> str:
    """A file's name for messages (``FILE: ...``): the path as given,
    normalised, with the middle of an absurdly long one (beyond what the
    system accepts) left out."""
    text = os.path.normpath(os.fspath(path))
    if len(text) > 256:
        text = text[:120] + "..." + text[-120:]
    return text


def bundle_problem(bundle: Path) -> str | None:
    """Why ``bundle`` cannot be a bundle folder (missing, not a folder, a path
    the system refuses), or None."""
    try:
        st = os.stat(bundle)
    except (FileNotFoundError, NotADirectoryError):
        return f"bundle folder {show_path(bundle)} does not exist"
    except OSError as e:
        return f"cannot use bundle folder {show_path(bundle)}: {e.strerror or e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{show_path(bundle)} is not a folder; a bundle is a folder holding config.json"
    return None


def load_bundle(bundle: Path) -> Spec:
    """Read ``bundle/config.json`` into a :class:`Spec` whose ``bundle`` is the
    resolved folder; relative paths in it are relative to that folder.

    Messages name the file as the path given, normalised
    (``os.path.normpath(bundle / "config.json")``). ConfigError (exit 2) when
    the folder or file is missing or is not a folder or a regular file, the
    JSON is invalid (with line and column) or a field is bad (see
    :func:`parse_spec`). Fields runc ignores (unknown ones) and those we keep
    but do not act on yet are logged as one warning each on the
    ``pyrunsc.config`` logger.
    """
    bundle = Path(bundle)
    if (why := bundle_problem(bundle)) is not None:
        raise ConfigError(why, field="--bundle")
    path = bundle / "config.json"
    display = display_path(path)
    if not os.path.lexists(path):
        raise ConfigError(
            "no such file; a bundle needs a config.json (`pyrunsc spec` writes one)", file=display
        )
    doc = Document.load_json(path, display=display)
    return parse_spec(doc.root(), bundle=bundle.resolve(), strict=False)


def parse_spec(node: Node, *, bundle: Path | None, strict: bool) -> Spec:
    """Build a :class:`Spec` from the mapping at ``node``.

    ``strict`` makes fields the runtime spec does not define an error (YAML
    deployments); otherwise each is warned about and ignored (``config.json``).
    Raises ConfigError naming the field path and value: wrong types, missing
    required fields (``ociVersion``, ``root.path``, ``process.args``/``cwd``,
    ``user.uid``/``gid``, rlimit fields, mount ``destination``), a version
    other than SemVer 1.x, an unknown capability or rlimit, a soft rlimit above
    the hard one, env without ``NAME=``, a relative ``cwd`` or mount destination,
    empty ``args``, a bind mount without a source.
    """
    node.check_keys(SPEC_FIELDS, strict=strict)
    oci_node = node.require("ociVersion")
    oci = oci_node.str()
    version = _SEMVER.fullmatch(oci)
    if version is None:
        raise oci_node.error(f"must be a SemVer version such as \"1.0.2\", got {describe(oci)}")
    if version.group(1) != "1":
        raise oci_node.error(f"unsupported version {describe(oci)}, expected 1.x")
    extra = _warn_unacted(node, SPEC_FIELDS, (*_ACTED[()], "linux"))
    _check_kept_fields(node, SPEC_KEPT, strict)

    root_node = node.require("root")
    root = _parse_root(root_node, bundle, strict)
    process = None
    if (p := node.get("process")) is not None:
        process = _parse_process(p, strict)
    hostname = ""
    if (h := node.get("hostname")) is not None:
        hostname = h.str()
        if len(hostname.encode()) > 64 or "\0" in hostname:
            raise h.error(f"must be at most 64 bytes with no NUL, got {describe(hostname)}")
    mounts: list[Mount] = []
    if (ms := node.get("mounts")) is not None:
        mounts = [_parse_mount(m, bundle, strict) for m in ms.list()]
    annotations: dict[str, str] = {}
    if (a := node.get("annotations")) is not None:
        annotations = {k: v.str() for k, v in a.items()}
    linux: dict[str, Any] = {}
    if (lx := node.get("linux")) is not None:
        unknown = _check_shape(lx, LINUX, strict)
        for key, _ in lx.items():
            if key not in unknown:
                lx.child(key, None).warn("not acted on yet; kept")
        linux = {k: _plain(v) for k, v in lx.mapping().items() if k not in unknown}
    spec = Spec(
        oci_version=oci,
        root=root,
        process=process,
        hostname=hostname,
        mounts=mounts,
        annotations=annotations,
        linux=linux,
        extra=extra,
        bundle=bundle,
        file=node.doc.file,
    )
    spec.digest = hashlib.sha256(
        json.dumps(_plain(node.value), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return spec


def _warn_unacted(node: Node, known: tuple[str, ...], acted: tuple[str, ...]) -> dict[str, Any]:
    """Warn once for each spec field present that we keep but do not act on;
    returns those fields as plain data."""
    kept = {}
    for key, child in node.items():
        if key in known and key not in acted and child.value is not None:
            child.warn("not acted on yet; kept")
            kept[key] = _plain(child.value)
    return kept


def _check_kept_fields(node: Node, shapes: Mapping[str, Shape], strict: bool) -> None:
    """Check the kept fields of the mapping at ``node`` that have a shape."""
    for key, shape in shapes.items():
        if (child := node.get(key)) is not None:
            _check_shape(child, shape, strict)


def _check_shape(node: Node, shape: Shape, strict: bool) -> list[str]:
    """Check a field we keep but do not act on against the runtime spec's
    ``shape``: unknown keys are errors when ``strict`` (a YAML deployment, with
    a "did you mean"), else a warning each (config.json, as runc ignores
    them). A container of the wrong kind (a list for an object...) is an error
    when ``strict``; config.json keeps it as written. Returns the unknown keys
    of ``node`` itself."""
    if node.value is None:
        return []
    if isinstance(shape, ListOf):
        if strict or isinstance(node.value, list):
            for item in node.list():
                _check_shape(item, shape.item, strict)
        return []
    if not strict and not isinstance(node.value, Mapping):
        return []
    if isinstance(shape, MapOf):
        for _, child in node.items():
            _check_shape(child, shape.item, strict)
        return []
    unknown = node.check_keys(tuple(shape.fields), strict=strict)
    for key, child in node.items():
        sub = shape.fields.get(key)
        if sub is not None:
            _check_shape(child, sub, strict)
    return unknown


def _plain(value: Any) -> Any:
    """ruamel's commented containers -> plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _host_path(node: Node, bundle: Path | None) -> str:
    text = node.str()
    if not text:
        raise node.error("must not be empty")
    if "\0" in text:
        raise node.error(f"must not contain NUL, got {describe(text)}")
    path = Path(text)
    if not path.is_absolute():
        if bundle is None:
            raise node.error(f"must be an absolute path (no bundle to resolve it in), got {describe(text)}")
        path = bundle / path
    return clean_path(str(path))


def _parse_root(node: Node, bundle: Path | None, strict: bool) -> Root:
    node.check_keys(ROOT_FIELDS, strict=strict)
    path = _host_path(node.require("path"), bundle)
    readonly = False
    if (ro := node.get("readonly")) is not None:
        readonly = ro.bool()
    return Root(path=path, readonly=readonly)


def _parse_process(node: Node, strict: bool) -> Process:
    node.check_keys(PROCESS_FIELDS, strict=strict)
    extra = _warn_unacted(node, PROCESS_FIELDS, _ACTED[("process",)])
    _check_kept_fields(node, PROCESS_KEPT, strict)
    args_node = node.require("args")
    args = args_node.str_list()
    if not args:
        raise args_node.error("must name at least the program to run, got []")
    cwd_node = node.require("cwd")
    cwd = cwd_node.str()
    if not cwd.startswith("/"):
        raise cwd_node.error(f"must be an absolute path, got {describe(cwd)}")
    if "\0" in cwd:
        raise cwd_node.error(f"must not contain NUL, got {describe(cwd)}")
    env: list[str] = []
    if (e := node.get("env")) is not None:
        for item in e.list():
            s = item.str()
            # runc's prepareEnv: a name, then '='; no NUL anywhere (execve).
            if "=" not in s or s.startswith("="):
                raise item.error(f"must be NAME=VALUE, got {describe(s)}")
            if "\0" in s:
                raise item.error(f"must not contain NUL, got {describe(s)}")
            env.append(s)
    terminal = False
    if (t := node.get("terminal")) is not None:
        terminal = t.bool()
    user = User()
    if (u := node.get("user")) is not None:
        user = _parse_user(u, strict)
    caps = None
    if (c := node.get("capabilities")) is not None:
        caps = _parse_capabilities(c, strict)
    rlimits: list[Rlimit] = []
    if (r := node.get("rlimits")) is not None:
        seen: set[str] = set()
        for item in r.list():
            rl = _parse_rlimit(item, strict)
            if rl.type in seen:
                raise item.error(f"{rl.type} is given twice")
            seen.add(rl.type)
            rlimits.append(rl)
    nnp = False
    if (n := node.get("noNewPrivileges")) is not None:
        nnp = n.bool()
    return Process(
        args=args, cwd=cwd, env=env, terminal=terminal, user=user, capabilities=caps,
        rlimits=rlimits, no_new_privileges=nnp, extra=extra,
    )


def _parse_user(node: Node, strict: bool) -> User:
    node.check_keys(USER_FIELDS, strict=strict)
    extra = _warn_unacted(node, USER_FIELDS, _ACTED[("user",)])
    uid = node.require("uid").int(minimum=0, maximum=_UINT32_MAX)
    gid = node.require("gid").int(minimum=0, maximum=_UINT32_MAX)
    extra_gids = []
    if (g := node.get("additionalGids")) is not None:
        extra_gids = [i.int(minimum=0, maximum=_UINT32_MAX) for i in g.list()]
    umask = None
    if (m := node.get("umask")) is not None:
        umask = m.int(minimum=0, maximum=0o777)
    return User(uid=uid, gid=gid, additional_gids=extra_gids, umask=umask, extra=extra)


def _parse_capabilities(node: Node, strict: bool) -> Capabilities:
    node.check_keys(CAPABILITY_SETS, strict=strict)
    sets: dict[str, list[str]] = {}
    for name in CAPABILITY_SETS:
        names: list[str] = []
        if (s := node.get(name)) is not None:
            for item in s.list():
                cap = item.str()
                if cap not in CAPABILITIES:
                    raise item.error(f"unknown capability {describe(cap)}")
                names.append(cap)
        sets[name] = names
    return Capabilities(**sets)


def _parse_rlimit(node: Node, strict: bool) -> Rlimit:
    node.check_keys(RLIMIT_FIELDS, strict=strict)
    t = node.require("type")
    name = t.str()
    if name not in RLIMITS:
        raise t.error(f"unknown resource limit {describe(name)}")
    hard = node.require("hard").int(minimum=0, maximum=RLIM_INFINITY)
    soft_node = node.require("soft")
    soft = soft_node.int(minimum=0, maximum=RLIM_INFINITY)
    if soft > hard:
        raise soft_node.error(f"soft limit {soft} is above the hard limit {hard}")
    return Rlimit(type=name, hard=hard, soft=soft)


def _parse_mount(node: Node, bundle: Path | None, strict: bool) -> Mount:
    node.check_keys(MOUNT_FIELDS, strict=strict)
    extra = _warn_unacted(node, MOUNT_FIELDS, _ACTED[("mount",)])
    _check_kept_fields(node, MOUNT_KEPT, strict)
    dest_node = node.require("destination")
    dest = dest_node.str()
    if not dest.startswith("/"):
        raise dest_node.error(f"must be an absolute path, got {describe(dest)}")
    if "\0" in dest:
        raise dest_node.error(f"must not contain NUL, got {describe(dest)}")
    if clean_path(dest) == "/":
        # runc refuses it too: a mount there would cover the root filesystem.
        raise dest_node.error(
            f"cannot mount over the root filesystem (that is root.path), got {describe(dest)}"
        )
    options: tuple[str, ...] = ()
    if (o := node.get("options")) is not None:
        options = tuple(o.str_list())
    if "bind" in options or "rbind" in options:
        # runc (specconv createLibcontainerMount): with MS_BIND the type "is
        # meaningless (and ignored)"; configs often say "none".
        if (t := node.get("type")) is not None:
            t.str()
        mtype = "bind"
    elif (t := node.get("type")) is not None:
        mtype = t.str()
        if not mtype:
            raise t.error("must not be empty")
    else:
        raise node.error("missing required field 'type' (or a 'bind' option)")
    source = ""
    if (s := node.get("source")) is not None:
        source = s.str()
    if mtype == "bind":
        if s is None or not source:
            raise node.error("a bind mount needs a 'source'")
        source = _host_path(s, bundle)
    return Mount(
        destination=dest, type=mtype, source=source, options=options,
        origin=(node.doc.file, node.path), extra=extra, position=node.doc.position(node.parts),
    )


def default_spec() -> dict[str, Any]:
    """The ``config.json`` that ``pyrunsc spec`` writes, in the spirit of ``runc spec``
    (runc ``libcontainer/specconv/example.go``): ``sh`` as root in a read-only
    ``rootfs``, with the mounts the sentry serves itself and no ``linux``
    section, since the sentry, not the host kernel, provides the isolation."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyrunsc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
    }
