"""Permission checks (Linux ``fs/namei.c`` ``generic_permission``,
``fs/attr.c`` ``setattr_prepare``; gVisor ``vfs/permissions.go``).

Mode bits are checked against the caller's fsuid, fsgid and groups. Root's
CAP_DAC_OVERRIDE grants read and write on anything and execute where at least
one x bit is set (or on a directory); CAP_DAC_READ_SEARCH grants read on
files and read and search on directories.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..errors import SyscallError
from ..kernel.auth import (
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CAP_FOWNER,
    CAP_FSETID,
    Credentials,
)

if TYPE_CHECKING:
    from .inode import Inode

MAY_EXEC, MAY_WRITE, MAY_READ = 1, 2, 4


def check_permission(creds: Credentials, inode: Inode, mask: int) -> None:
    """EACCES unless ``creds`` may access ``inode`` for every bit in ``mask``."""
    if not may_access(creds, inode, mask):
        raise SyscallError(errno.EACCES)


def may_access(creds: Credentials, inode: Inode, mask: int) -> bool:
    mode = inode.mode
    if creds.fsuid == inode.uid:
        perms = (mode >> 6) & 7
    elif creds.in_group(inode.gid):
        perms = (mode >> 3) & 7
    else:
        perms = mode & 7
    if perms & mask == mask:
        return True
    is_dir = inode.is_dir()
    if creds.has_cap(CAP_DAC_OVERRIDE):
        if not mask & MAY_EXEC or is_dir or mode & 0o111:
            return True
    if creds.has_cap(CAP_DAC_READ_SEARCH):
        if mask == MAY_READ or (is_dir and not mask & MAY_WRITE):
            return True
    return False


def is_owner(creds: Credentials, inode: Inode) -> bool:
    """Owner or CAP_FOWNER (Linux ``inode_owner_or_capable``)."""
    return creds.fsuid == inode.uid or creds.has_cap(CAP_FOWNER)


def check_sticky(creds: Credentials, dir_inode: Inode, child: Inode) -> None:
    """EPERM when a sticky directory forbids removing or renaming ``child``:
    only the file's owner, the directory's owner or CAP_FOWNER may."""
    if not dir_inode.mode & 0o1000:
        return
    if creds.fsuid in (child.uid, dir_inode.uid) or creds.has_cap(CAP_FOWNER):
        return
    raise SyscallError(errno.EPERM)


def should_clear_sgid(creds: Credentials, mode: int, gid: int) -> bool:
    """chmod by a caller outside the file's group without CAP_FSETID clears S_ISGID."""
    return bool(mode & 0o2000) and not creds.in_group(gid) and not creds.has_cap(CAP_FSETID)
