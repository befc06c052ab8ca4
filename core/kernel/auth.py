"""Credentials of a task (gVisor ``pkg/sentry/kernel/auth``; Linux ``include/linux/cred.h``).

There is one user namespace, the root one; ids are the sandbox's own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..abi import CAPABILITIES

CAP_CHOWN = CAPABILITIES.index("CAP_CHOWN")
CAP_DAC_OVERRIDE = CAPABILITIES.index("CAP_DAC_OVERRIDE")
CAP_DAC_READ_SEARCH = CAPABILITIES.index("CAP_DAC_READ_SEARCH")
CAP_FOWNER = CAPABILITIES.index("CAP_FOWNER")
CAP_FSETID = CAPABILITIES.index("CAP_FSETID")
CAP_MKNOD = CAPABILITIES.index("CAP_MKNOD")
CAP_SYS_ADMIN = CAPABILITIES.index("CAP_SYS_ADMIN")

#: Every capability bit.
ALL_CAPS = (1 << len(CAPABILITIES)) - 1

#: The "no id" value (``(uid_t)-1``), e.g. for chown arguments left unchanged.
NO_ID = 2**32 - 1


@dataclass(frozen=True)
class Credentials:
    """A task's ids, supplementary groups and capability sets (bit masks).

    Filesystem access uses ``fsuid``/``fsgid`` (equal to the effective ids
    unless ``setfsuid`` changed them) and ``effective`` capabilities.
    """

    uid: int = 0
    gid: int = 0
    euid: int = 0
    egid: int = 0
    suid: int = 0
    sgid: int = 0
    fsuid: int = 0
    fsgid: int = 0
    groups: tuple[int, ...] = ()
    effective: int = ALL_CAPS
    permitted: int = ALL_CAPS
    inheritable: int = 0
    bounding: int = ALL_CAPS
    ambient: int = 0

    @classmethod
    def for_user(
        cls, uid: int, gid: int, groups: tuple[int, ...] = (), caps: int | None = None
    ) -> Credentials:
        """Credentials of a process started as ``uid:gid``; root gets every
        capability unless ``caps`` says otherwise, others none (Linux
        ``execve`` without file capabilities)."""
        if caps is None:
            caps = ALL_CAPS if uid == 0 else 0
        return cls(
            uid=uid, gid=gid, euid=uid, egid=gid, suid=uid, sgid=gid, fsuid=uid, fsgid=gid,
            groups=tuple(groups), effective=caps, permitted=caps, bounding=ALL_CAPS,
        )

    def has_cap(self, cap: int) -> bool:
        return bool(self.effective >> cap & 1)

    def in_group(self, gid: int) -> bool:
        """True when ``gid`` is the filesystem gid or a supplementary group."""
        return gid == self.fsgid or gid in self.groups

    def with_ids(self, **ids: int) -> Credentials:
        return replace(self, **ids)  # type: ignore[arg-type]
