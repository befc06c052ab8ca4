"""Runtime settings (gVisor ``runsc/boot/config.go``'s ``Config``).

Each setting comes from, in order of precedence: a CLI flag, the YAML
deployment's ``runtime:`` mapping, then the default here (see
:meth:`Config.resolve`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

FILE_ACCESS = ("proxy", "direct")
NETWORKS = ("none",)

#: YAML ``runtime:`` keys (camelCase) -> Config attribute names.
RUNTIME_KEYS = {
    "platform": "platform",
    "fileAccess": "file_access",
    "overlay": "overlay",
    "network": "network",
    "debug": "debug",
    "strace": "strace",
}


def default_root_dir() -> Path:
    """``/run/pyrunsc`` for root, else ``$XDG_RUNTIME_DIR/pyrunsc`` (as runsc does)."""
    if os.geteuid() == 0:
        return Path("/run/pyrunsc")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "pyrunsc"
    return Path(f"/tmp/pyrunsc-{os.geteuid()}")


@dataclass
class Config:
    """How to run a sandbox.

    ``platform``: the platform plugin's name (``ptrace`` or ``kvm``).
    ``file_access``: ``proxy`` (a gofer serves host files over 9P) or
    ``direct`` (the sentry opens host files itself).
    ``overlay``: put a tmpfs overlay over the root and writable bind mounts.
    ``network``: only ``none`` for now.
    ``root_dir``: where container state lives (``--root``).
    """

    platform: str = "ptrace"
    file_access: str = "proxy"
    overlay: bool = False
    network: str = "none"
    debug: bool = False
    strace: bool = False
    root_dir: Path = field(default_factory=default_root_dir)

    def __post_init__(self) -> None:
        for f in fields(self):
            check_setting(f.name, getattr(self, f.name))
        # ``--root`` and API callers may hand a string.
        self.root_dir = Path(self.root_dir)

    @classmethod
    def resolve(
        cls,
        flags: Mapping[str, Any] | None = None,
        runtime: Mapping[str, Any] | None = None,
    ) -> Config:
        """Merge CLI ``flags`` over a deployment's ``runtime`` over the defaults.

        Both map Config attribute names (``file_access``, ``root_dir``...) to
        values; a value of None means "not given", so the next source decides.
        Raises ConfigError for an unknown name or a bad value (see
        :func:`check_setting`).
        """
        values: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for source in (runtime or {}, flags or {}):
            for key, value in source.items():
                if key not in names:
                    raise ConfigError(f"unknown setting {key!r}")
                if value is not None:
                    values[key] = value
        return cls(**values)


#: Settings that are on/off switches.
_SWITCHES = ("overlay", "debug", "strace")


def check_setting(name: str, value: Any) -> None:
    """ConfigError, naming the flag (``--file-access``), if ``value`` is not
    allowed for setting ``name``: ``file_access`` one of :data:`FILE_ACCESS`,
    ``network`` only ``none``, ``platform`` a non-empty string (which platform
    plugins exist is checked where they are loaded), switches booleans,
    ``root_dir`` a path. Other names are not checked."""
    flag = "--" + ("root" if name == "root_dir" else name.replace("_", "-"))
    if name == "file_access" and value not in FILE_ACCESS:
        raise ConfigError(
            f"file access {value!r} is not one of {', '.join(FILE_ACCESS)}", field=flag
        )
    if name == "network" and value not in NETWORKS:
        raise ConfigError(
            f"network {value!r} is not supported yet; only 'none' is (the sandbox has no network)",
            field=flag,
        )
    if name == "platform" and (not isinstance(value, str) or not value):
        raise ConfigError(f"expected a platform name, got {value!r}", field=flag)
    if name in _SWITCHES and not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", field=flag)
    if name == "root_dir" and (not isinstance(value, str | os.PathLike) or not str(value)):
        raise ConfigError(f"expected a folder path, got {value!r}", field=flag)
