"""Container state under ``--root`` (the OCI runtime spec's ``state``; runc's
``libcontainer`` state folder).

Each container has ``<root>/<id>/state.json``, written atomically: the OCI
state (ociVersion, id, status, pid, bundle, annotations) plus what pyrunsc
needs to manage it (platform, created, exit status, the gofer's pid). A
container whose sandbox process is gone is reported ``stopped``. While the
sandbox runs, the folder also holds its control socket (:mod:`.control`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from .deployment import check_container_id
from .errors import ConfigError, PyrunscError

OCI_VERSION = "1.0.2"
STATUSES = ("creating", "created", "running", "stopped")


@dataclass
class ContainerState:
    """One container's state. ``pid`` is the sandbox process (the host pid
    that stands for the container's init); ``start_time`` its psutil create
    time, so a recycled pid is not mistaken for it."""

    id: str
    bundle: str
    status: str = "creating"
    pid: int = 0
    start_time: float = 0.0
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    annotations: dict[str, str] = field(default_factory=dict)
    platform: str = ""
    exit_status: int | None = None
    #: The gofer serving the container's files (0: none), and its psutil
    #: create time: ``pyrunsc ps`` counts its resource use.
    gofer_pid: int = 0
    gofer_start_time: float = 0.0

    def oci(self) -> dict[str, Any]:
        """The OCI state object (``runc state`` output)."""
        out: dict[str, Any] = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": self.status,
            "pid": self.pid if self.status in ("created", "running") else 0,
            "bundle": self.bundle,
        }
        if self.annotations:
            out["annotations"] = self.annotations
        out["created"] = self.created
        out["platform"] = self.platform
        if self.exit_status is not None:
            out["exitStatus"] = self.exit_status
        return out

    def alive(self) -> bool:
        """True while the sandbox process still runs (and is the same process)."""
        if not self.pid:
            return False
        try:
            p = psutil.Process(self.pid)
            return abs(p.create_time() - self.start_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


class StateStore:
    """The ``--root`` folder: one subfolder per container."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, cid: str) -> Path:
        why = check_container_id(cid)
        if why is not None:
            raise ConfigError(f"{why}, got {cid!r}", field="id")
        return self.root / cid

    def create(self, state: ContainerState) -> None:
        """Claim the ID; ConfigError (exit 2) if a container has it already."""
        d = self._dir(state.id)
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
            d.mkdir(mode=0o700)
        except FileExistsError:
            raise ConfigError(f"container {state.id!r} already exists (see `pyrunsc list`)", field="id") from None
        except OSError as e:
            raise PyrunscError(f"cannot create container state in {self.root}: {e.strerror}") from None
        self.save(state)

    def save(self, state: ContainerState) -> None:
        d = self._dir(state.id)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(state), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / "state.json")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def load(self, cid: str) -> ContainerState:
        """The state, with ``status`` brought up to date; PyrunscError if unknown."""
        path = self._dir(cid) / "state.json"
        try:
            data = json.loads(path.read_text())
            state = ContainerState(**data)
        except FileNotFoundError:
            raise PyrunscError(f"container {cid!r} does not exist") from None
        except (OSError, ValueError, TypeError) as e:
            raise PyrunscError(f"container {cid!r}: unreadable state {path}: {e}") from None
        if state.status in ("creating", "created", "running") and not state.alive():
            state.status = "stopped"
        return state

    def list(self) -> list[ContainerState]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if (d / "state.json").is_file():
                    try:
                        out.append(self.load(d.name))
                    except (PyrunscError, ConfigError):
                        continue
        return out

    def delete(self, cid: str) -> None:
        shutil.rmtree(self._dir(cid), ignore_errors=True)

    def path(self, cid: str) -> Path:
        return self._dir(cid)
