"""A small read-only sysfs (Linux ``fs/sysfs``, ``drivers/base/cpu.c``,
``mm/huge_memory.c``; gVisor ``fsimpl/sys``).

The tree (directories 0755, the root 0555 as on Linux, files 0444)::

    block/  bus/  class/power_supply/  dev/{block,char}/  firmware/  module/  power/
    devices/system/cpu/{online,possible,present}          "0-N\\n" (N+1 CPUs)
    devices/system/cpu/cpuI/topology/{core_cpus,thread_siblings}   CPU I's mask
    devices/system/cpu/cpuI/topology/{core_siblings,package_cpus}  every CPU's mask
    devices/system/cpu/cpuI/topology/{core_id,physical_package_id} "I\\n", "0\\n"
    fs/cgroup/                                             empty (the cgroup mount point)
    kernel/mm/transparent_hugepage/enabled                 "always [madvise] never\\n"
    kernel/mm/transparent_hugepage/hpage_pmd_size          "2097152\\n"

The CPU count is the sandbox's (gVisor: the application cores): the
kernel's ``application_cores`` when the mount context has a kernel that
says, else the CPUs the sentry may run on (``os.sched_getaffinity``). glibc's
``get_nprocs`` reads ``online``, ``get_nprocs_conf`` reads ``possible`` (older
ones count the ``cpuI`` directories); like gVisor, each CPU is its own core
of one package.

Files report ``st_size`` 4096 as on Linux. They cannot be written: opening one
for writing is EACCES for anyone, root included (Linux ``kernfs_fop_open``
for an attribute without ``store``; Linux's THP ``enabled`` takes writes from
root, ours is read-only with mode 0444). Names cannot be created or removed
(EPERM; EACCES for open(O_CREAT)).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from typing import Any

from pyrunsc.core.vfs.synthetic import Node, SyntheticSuperblock

SYSFS_MAGIC = 0x62656572
THP_ENABLED = "always [madvise] never\n"
HPAGE_PMD_SIZE = 2 << 20


def sandbox_cpus(kernel: Any = None) -> int:
    """How many CPUs the sandbox has: ``kernel.application_cores`` if set,
    else the host CPUs this process may run on (at least 1)."""
    n = getattr(kernel, "application_cores", None)
    if isinstance(n, int) and n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_list(n: int) -> str:
    """Linux's list format of CPUs 0..n-1 (``cpumap_print_to_pagebuf`` with a
    list): ``"0\\n"`` for one CPU, ``"0-3\\n"`` for four."""
    return "0\n" if n == 1 else f"0-{n - 1}\n"


def cpu_mask(cpus: Collection[int], n: int) -> str:
    """Linux's mask format (``%*pb``) of ``cpus`` among ``n``: 32-bit hex words,
    most significant first, joined by commas; the first word has only the
    digits its bits need (``"3"`` for CPUs 0-1 of 2, ``"ff,ffffffff"`` for 40)."""
    words = (n + 31) // 32
    out = []
    for w in reversed(range(words)):
        value = sum(1 << (c - 32 * w) for c in cpus if 32 * w <= c < 32 * w + 32)
        width = 8 if w < words - 1 or n % 32 == 0 else (n % 32 + 3) // 4
        out.append(f"{value:0{width}x}")
    return ",".join(out)


def sysfs_tree(ncpus: int) -> dict[str, Node]:
    """The tree of the module docstring for ``ncpus`` CPUs."""
    everyone = cpu_mask(range(ncpus), ncpus) + "\n"
    cpu: dict[str, Node] = {"online": cpu_list(ncpus), "possible": cpu_list(ncpus), "present": cpu_list(ncpus)}
    for i in range(ncpus):
        one = cpu_mask((i,), ncpus) + "\n"
        cpu[f"cpu{i}"] = {
            "topology": {
                "core_cpus": one, "core_id": f"{i}\n", "core_siblings": everyone, "package_cpus": everyone,
                "physical_package_id": "0\n", "thread_siblings": one,
            },
        }
    return {
        "block": {},
        "bus": {},
        "class": {"power_supply": {}},
        "dev": {"block": {}, "char": {}},
        "devices": {"system": {"cpu": cpu}},
        "firmware": {},
        "fs": {"cgroup": {}},
        "kernel": {"mm": {"transparent_hugepage": {"enabled": THP_ENABLED, "hpage_pmd_size": f"{HPAGE_PMD_SIZE}\n"}}},
        "module": {},
        "power": {},
    }


class SysfsSuperblock(SyntheticSuperblock):
    """One sysfs instance for ``ncpus`` CPUs (see the module docstring)."""

    def __init__(self, ncpus: int, *, clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__("sysfs", SYSFS_MAGIC, file_size=4096, refuse_write_open=True, clock=clock)
        self.ncpus = ncpus
        self.build(sysfs_tree(ncpus), mode=0o555)
