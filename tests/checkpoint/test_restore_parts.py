"""The parts of a restore that can be checked alone: comparing mounts,
the memory file's allocator, the clocks, stdio re-binding, registers."""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

import pytest

from pyrunsc.core.arch import Registers
from pyrunsc.core.checkpoint.restore import mount_changes
from pyrunsc.core.kernel.time import CLOCK_MONOTONIC, Timekeeper
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile
from pyrunsc.core.vfs.host import HostFiles, HostInode, rebind_stdio

from .conftest import MOUNTS


def rows(**changes: dict[str, Any]) -> list[dict[str, Any]]:
    """MOUNTS with the fields of the mount at each destination (as key) changed."""
    out = [dict(m) for m in MOUNTS]
    for m in out:
        m.update(changes.get(m["destination"], {}))
    return out


def test_same_mounts_match() -> None:
    assert mount_changes(MOUNTS, rows()) == []


def test_a_moved_source_and_new_gofer_data_are_allowed() -> None:
    moved = rows(**{"/": {"source": "/elsewhere/rootfs", "data": "trans=fd,rfdno=7,wfdno=7"}})
    assert mount_changes(MOUNTS, moved) == []


def test_a_flipped_read_only_flag_names_the_mount() -> None:
    [problem] = mount_changes(MOUNTS, rows(**{"/": {"flags": []}}))
    assert problem.startswith("mount at /: read-only in the image only")
    [problem] = mount_changes(MOUNTS, rows(**{"/tmp": {"flags": ["ro"]}}))
    assert problem.startswith("mount at /tmp: read-only in the new spec only")


def test_other_differences_name_the_mount_and_field() -> None:
    [problem] = mount_changes(MOUNTS, rows(**{"/tmp": {"type": "bind"}}))
    assert problem == "mount at /tmp: type differs ('tmpfs' in the image, 'bind' now)"
    [problem] = mount_changes(MOUNTS, rows(**{"/tmp": {"overlay": True}}))
    assert "mount at /tmp: overlay differs" in problem


def test_added_and_removed_mounts() -> None:
    added = [*rows(), {**MOUNTS[1], "destination": "/data/"}]
    assert mount_changes(MOUNTS, added) == ["mount at /data: in the new spec, not in the image (added)"]
    assert mount_changes(MOUNTS, rows()[:1]) == ["mount at /tmp: in the image, not in the new spec (removed)"]
    assert mount_changes(MOUNTS, list(reversed(rows()))) == ["the mounts are in another order than in the image"]


def test_allocator_state_round_trip() -> None:
    a, b = MemoryFile(size=1 << 24), MemoryFile(size=1 << 24)
    try:
        x = a.allocate(3 * PAGE_SIZE)
        a.allocate(PAGE_SIZE)
        a.free(x, 3 * PAGE_SIZE)
        b.set_allocator_state(a.allocator_state())
        assert b.allocated == a.allocated == PAGE_SIZE
        assert b.allocate(PAGE_SIZE) == a.allocate(PAGE_SIZE)  # the same first fit
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("state, message", [
    ({"size": 1 << 20, "starts": [0], "ends": [1 << 20], "allocated": 0}, "saved memory file has"),
    ({"size": 1 << 24, "starts": [8192, 0], "ends": [12288, 4096], "allocated": 0}, "bad free range"),
    ({"size": 1 << 24, "starts": [0], "ends": [1 << 25], "allocated": 0}, "bad free range"),
])
def test_a_bad_allocator_state_is_refused(state: dict[str, object], message: str) -> None:
    mf = MemoryFile(size=1 << 24)
    try:
        with pytest.raises(ValueError, match=message):
            mf.set_allocator_state(state)
    finally:
        mf.close()


def test_clocks_go_on_from_the_checkpoint_never_back() -> None:
    tk = Timekeeper()
    tk._mono_offset = 10**12  # a sandbox that has been up a while
    tk.app_ns = 5 * 10**9
    before_mono, before_cpu = tk.monotonic(), tk.cpu_time()
    saved = pickle.dumps(tk)
    time.sleep(0.05)  # stopped: not counted
    back = pickle.loads(saved)
    mono, cpu = back.now(CLOCK_MONOTONIC), back.cpu_time()
    assert before_mono <= mono < before_mono + 40_000_000
    assert before_cpu <= cpu < before_cpu + 40_000_000


def test_stdio_is_rebound_to_the_new_callers_fds(tmp_path: Any) -> None:
    r1, w1 = os.pipe()
    f = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT)
    try:
        host = HostFiles()
        stdin, _ = host.wrap_stdio((r1, w1))
        stdin2 = pickle.loads(pickle.dumps(stdin))
        assert isinstance(stdin2.inode, HostInode) and stdin2.inode.stdio == 0
        os.write(f, b"abc")
        assert rebind_stdio([stdin2, stdin2], (f, w1)) == 1
        assert stdin2.inode.host_fd == f and stdin2.ops.seekable and stdin2.offset == 3
    finally:
        for fd in (r1, w1, f):
            os.close(fd)


def test_a_terminals_settings_follow_it_to_the_restoring_terminal() -> None:
    """A shell's line editor had put the terminal in raw mode; after a restore
    on a new terminal (still cooked) each typed line was echoed twice."""
    import termios

    m1, s1 = os.openpty()
    m2, s2 = os.openpty()
    try:
        attrs = termios.tcgetattr(s1)
        attrs[3] &= ~(termios.ECHO | termios.ICANON)
        termios.tcsetattr(s1, termios.TCSANOW, attrs)
        (stdin,) = HostFiles().wrap_stdio((s1,))
        stdin2 = pickle.loads(pickle.dumps(stdin))
        assert termios.tcgetattr(s2)[3] & termios.ECHO
        assert rebind_stdio([stdin2], (s2,)) == 1
        assert not termios.tcgetattr(s2)[3] & (termios.ECHO | termios.ICANON)
        assert "saved_termios" not in vars(stdin2.inode)
    finally:
        for fd in (m1, s1, m2, s2):
            os.close(fd)


def test_registers_pickle_as_the_core_class() -> None:
    class PlatformRegisters(Registers):
        __slots__ = ()

    regs = PlatformRegisters()
    regs.rip, regs.rax = 0x401000, 7
    regs.fpstate[0:4] = b"\x7f\x03\0\0"
    back = pickle.loads(pickle.dumps(regs))
    assert type(back) is Registers
    assert (back.rip, back.rax, bytes(back.fpstate)) == (0x401000, 7, bytes(regs.fpstate))


def test_a_changed_filesystem_hints_at_file_access() -> None:
    direct = rows(**{"/": {"filesystem": "hostfs"}})
    assert mount_changes(MOUNTS, direct) == [
        "mount at /: filesystem differs ('9p' in the image, 'hostfs' now)"
        " (another --file-access than at the checkpoint?)"
    ]
