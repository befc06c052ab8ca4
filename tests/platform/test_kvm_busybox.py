"""End to end: ``pyrunsc --platform kvm run`` of Debian's static busybox gives
the same stdout, stderr and exit status as ``--platform ptrace``.

Skips when /dev/kvm is unusable, when ptrace is not allowed, or without
``/bin/busybox`` (busybox-static).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyrunsc.plugins.platform_kvm import KVMPlatform
from pyrunsc.plugins.platform_ptrace import PtracePlatform

BUSYBOX = Path("/bin/busybox")
PYRUNSC = Path(sys.executable).parent / "pyrunsc"
ENV = ["PATH=/bin", "HOME=/root", "TERM=dumb"]
APPLETS = ("sh", "echo", "ls", "cat", "md5sum", "seq", "wc", "sort", "head", "false")

pytestmark = [
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static (/bin/busybox)"),
    pytest.mark.skipif(bool(KVMPlatform.probe()), reason=f"KVM platform unavailable: {KVMPlatform.probe()}"),
    pytest.mark.skipif(bool(PtracePlatform.probe()), reason=f"ptrace platform unavailable: {PtracePlatform.probe()}"),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = tmp_path_factory.mktemp("kvm-busybox")
    root = b / "rootfs"
    for d in ("bin", "etc", "root", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return b


def run(bundle: Path, platform: str, args: list[str]) -> tuple[bytes, bytes, int]:
    spec = {
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": args, "env": ENV, "cwd": "/"},
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "sandbox",
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    r = subprocess.run(
        [str(PYRUNSC), "--root", str(bundle.parent / f"{bundle.name}-state"), "--platform", platform, "run",
         "--bundle", str(bundle), f"kvm{os.getpid()}"],
        capture_output=True, timeout=120,
    )
    return r.stdout, r.stderr, r.returncode


@pytest.mark.parametrize(
    "args",
    [
        ["echo", "hello", "world"],
        ["ls", "-l", "/"],
        ["cat", "/etc/passwd"],
        ["md5sum", "/bin/busybox"],
        ["seq", "1", "1000"],
        ["cat", "/nonexistent"],
        ["false"],
        ["sh", "-c", "seq 1 20000 | md5sum; (echo sub; exit 3); echo status $?; sort -r /etc/passwd | head -n 1"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_kvm_same_as_ptrace(bundle: Path, args: list[str]) -> None:
    got = run(bundle, "kvm", args)
    want = run(bundle, "ptrace", args)
    assert got == want, f"kvm    {got!r}\nptrace {want!r}"
    assert got[0] or got[1] or got[2]  # something happened
