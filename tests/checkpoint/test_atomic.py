"""An image folder appears complete or not at all: failures, interrupts,
kills and a full disk leave nothing at the target and no temporary folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.core.checkpoint import CHECKPOINT_FILE, ImageError, Progress, open_image, write_image
from pyrunsc.core.checkpoint.folder import StagedFolder, sweep_partials
from pyrunsc.core.errors import PyrunscError
from pyrunsc.core.mm.memfile import MemoryFile

from .conftest import pattern, siblings

KERNEL = b"kernel blob" * 100


class FailAfter(Progress):
    """Raises ``error`` at the n-th advance: a failure in the middle of the write."""

    def __init__(self, n: int, error: BaseException) -> None:
        self.n, self.error = n, error

    def advance(self, n: int) -> None:
        self.n -= 1
        if self.n <= 0:
            raise self.error


def dirty(mf: MemoryFile, mib: int) -> None:
    mf.write(mf.allocate(mib << 20), os.urandom(mib << 20))


@pytest.mark.parametrize("error", [RuntimeError("progress failed"), KeyboardInterrupt()])
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_failure_mid_write_leaves_nothing(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any],
                                          error: BaseException, compression: str) -> None:
    dirty(memfile, 24)
    target = tmp_path / "images" / "img"
    with pytest.raises(type(error)):
        write_image(target, header, KERNEL, memfile, key=key, compression=compression, progress=FailAfter(2, error))
    assert not os.path.lexists(target)
    assert siblings(target) == []


def test_failure_while_publishing_leaves_nothing(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                                 header: dict[str, Any]) -> None:
    """The target appears while the image is written: the newcomer is kept,
    the image is refused, the temporary folder removed."""

    class MakeTarget(Progress):
        def advance(self, n: int) -> None:
            (tmp_path / "img").mkdir(exist_ok=True)

    dirty(memfile, 1)
    with pytest.raises(ImageError, match="appeared while writing") as info:
        write_image(tmp_path / "img", header, KERNEL, memfile, key=key, progress=MakeTarget())
    assert info.value.exit_code == 2
    assert list((tmp_path / "img").iterdir()) == []
    assert siblings(tmp_path / "img") == ["img"]


def test_existing_target_is_refused(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any]) -> None:
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key)
    with pytest.raises(ImageError, match="already exists") as info:
        write_image(tmp_path / "img", header, b"other", memfile, key=key)
    assert info.value.exit_code == 2 and str(info.value).startswith(os.fspath(tmp_path / "img"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="already exists"):
        write_image(tmp_path / "empty", header, KERNEL, memfile, key=key)
    assert open_image(tmp_path / "img", key=key).load(MemoryFile(size=1 << 30)) == KERNEL


def test_overwrite_replaces_only_images(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                        header: dict[str, Any]) -> None:
    write_image(tmp_path / "img", header, KERNEL, memfile, key=key)
    write_image(tmp_path / "img", header, b"second", memfile, key=key, overwrite=True)
    target = MemoryFile(size=1 << 30)
    try:
        assert open_image(tmp_path / "img", key=key).load(target) == b"second"
    finally:
        target.close()
    assert siblings(tmp_path / "img") == ["img"]
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "empty", header, KERNEL, memfile, key=key, overwrite=True)
    assert (tmp_path / "empty" / CHECKPOINT_FILE).is_file()

    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    with pytest.raises(ImageError, match="not an image folder"):
        write_image(home, header, KERNEL, memfile, key=key, overwrite=True)
    (tmp_path / "file").write_text("keep me too")
    with pytest.raises(ImageError, match="not a folder"):
        write_image(tmp_path / "file", header, KERNEL, memfile, key=key, overwrite=True)
    assert (home / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "file").read_text() == "keep me too"


CHILD = textwrap.dedent("""
    import os, sys, time
    from pyrunsc.core.checkpoint import Progress, new_header, write_image
    from pyrunsc.core.mm.memfile import MemoryFile

    class Stall(Progress):
        def advance(self, n):
            print("writing", flush=True)
            time.sleep(60)

    mf = MemoryFile(size=1 << 30)
    mf.write(mf.allocate(32 << 20), os.urandom(32 << 20))
    header = new_header(container_id="c", platform="ptrace", spec_digest="", mounts=[], tasks=[])
    write_image(sys.argv[1], header, b"kernel", mf, key=b"k" * 32, progress=Stall())
""")


def test_killed_writer_leaves_nothing(tmp_path: Path) -> None:
    """SIGKILL mid-write: the files had no names yet, so the kernel frees them."""
    try:
        os.close(os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600))
    except OSError as e:
        pytest.skip(f"no O_TMPFILE on {tmp_path}'s filesystem ({e.strerror}): see the fallback's test below")
    target = tmp_path / "img"
    child = subprocess.Popen([sys.executable, "-c", CHILD, os.fspath(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        assert siblings(target) == []  # even while writing, nothing has a name
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert not os.path.lexists(target)
    assert siblings(target) == []


FALLBACK_CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from pyrunsc.core.checkpoint.folder import StagedFolder

    with StagedFolder(Path(sys.argv[1]), use_tmpfile=False) as staged:
        os.write(staged.create("pages.img"), b"x" * 4096)
        print("writing", flush=True)
        time.sleep(60)
""")


def test_killed_writer_without_tmpfile_is_swept(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                                header: dict[str, Any]) -> None:
    """Where O_TMPFILE is missing, a killed writer leaves its temporary
    folder, which the next write to the same target removes."""
    target = tmp_path / "img"
    child = subprocess.Popen([sys.executable, "-c", FALLBACK_CHILD, os.fspath(target)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    (left,) = siblings(target)
    assert left.startswith(".img.partial-")
    write_image(target, header, KERNEL, memfile, key=key)
    assert siblings(target) == ["img"]


def test_fallback_commit_and_failure(tmp_path: Path) -> None:
    target = tmp_path / "img"
    with pytest.raises(RuntimeError), StagedFolder(target, use_tmpfile=False) as staged:
        os.write(staged.create("a"), b"a")
        raise RuntimeError("boom")
    assert siblings(target) == []
    with StagedFolder(target, use_tmpfile=False) as staged:
        os.write(staged.create("a"), b"a")
        staged.commit()
    assert (target / "a").read_bytes() == b"a" and siblings(target) == ["img"]
    assert sweep_partials(target) == []


FULL_DISK_CHILD = textwrap.dedent("""
    import os, resource, signal, sys
    from pyrunsc.core.checkpoint import new_header, write_image
    from pyrunsc.core.errors import PyrunscError
    from pyrunsc.core.mm.memfile import MemoryFile

    mf = MemoryFile(size=1 << 30)
    mf.write(mf.allocate(16 << 20), os.urandom(16 << 20))
    if sys.argv[2] == "rlimit":  # files may not grow past 4 MiB: EFBIG mid-write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    header = new_header(container_id="c", platform="ptrace", spec_digest="", mounts=[], tasks=[])
    try:
        write_image(sys.argv[1], header, b"kernel", mf, key=b"k" * 32)
    except PyrunscError as e:
        print(e.exit_code, e)
""")


def test_file_size_limit_mid_write(tmp_path: Path) -> None:
    target = tmp_path / "img"
    r = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, os.fspath(target), "rlimit"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"1 cannot write the image {target}: File too large"), r.stdout
    assert not os.path.lexists(target)
    assert siblings(target) == []


def test_disk_full(tmp_path: Path) -> None:
    """A real ENOSPC: the image goes to a 4 MiB tmpfs, mounted in a private
    mount namespace of the child only."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK_CHILD)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=4m tmpfs "$1" && "$2" "$3" "$1/img" enospc && ls -A "$1"',
         "sh", os.fspath(small), sys.executable, os.fspath(script)],
        capture_output=True, text=True, timeout=120,
    )
    if r.returncode != 0 and "mount" in r.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    first, *rest = r.stdout.splitlines()
    assert first == f"1 cannot write the image {small}/img: No space left on device"
    assert rest == []  # `ls -A` of the full tmpfs: no image, no temporary folder


def test_partial_pattern_leaves_other_names(tmp_path: Path) -> None:
    """The sweep removes only temporary folders of dead writers for this target."""
    target = tmp_path / "img"
    keep = [".img.partial-x-1", ".other.partial-999999-ab", f".img.partial-{os.getpid()}-ab", "img.partial-1-ab"]
    for name in keep:
        (tmp_path / name).mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".img.partial-{int(dead.stdout)}-{pattern(4, 1).hex()[:8]}"
    stale.mkdir()
    assert sweep_partials(target) == [stale]
    assert siblings(target) == sorted(keep)


def test_pyrunsc_error_for_unwritable_parent(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                             header: dict[str, Any]) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PyrunscError, match="cannot write the image") as info:
        write_image(tmp_path / "file" / "img", header, KERNEL, memfile, key=key)
    assert info.value.exit_code == 1
