"""The image key: made once under the runtime root, mode 0600, atomically;
unsafe or short key files are refused."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyrunsc.core.checkpoint import KEY_FILE, read_key, resolve_key, root_key
from pyrunsc.core.errors import ConfigError


def test_root_key_is_made_once_mode_0600(tmp_path: Path) -> None:
    root = tmp_path / "run" / "pyrunsc"
    assert root_key(root, create=False) is None
    old = os.umask(0)  # the key's mode does not depend on the umask
    try:
        key = root_key(root)
    finally:
        os.umask(old)
    assert key is not None and len(key) == 32
    st = (root / KEY_FILE).stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert root_key(root) == root_key(root, create=False) == key
    assert sorted(p.name for p in root.iterdir()) == [KEY_FILE]  # no temporary file left


def test_concurrent_creators_agree(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from pyrunsc.core.checkpoint import root_key; "
            "print(root_key(Path(sys.argv[1])).hex())")
    procs = [subprocess.Popen([sys.executable, "-c", code, os.fspath(tmp_path / "root")], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    keys = {p.communicate(timeout=60)[0] for p in procs}
    assert len(keys) == 1
    assert bytes.fromhex(keys.pop()) == (tmp_path / "root" / KEY_FILE).read_bytes()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(os.urandom(32))
    path.chmod(mode)
    with pytest.raises(ConfigError, match="open to group or others") as info:
        root_key(tmp_path)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(os.fspath(path))


def test_image_key_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    path.chmod(0o400)
    assert resolve_key(tmp_path / "root", path) == b"0123456789abcdef0123456789abcdef\n"
    assert not (tmp_path / "root").exists()  # --image-key makes no root key


def test_bad_key_files(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"tiny")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="has 4 bytes; it needs at least 16") as info:
        read_key(short, field="--image-key")
    assert "--image-key" in str(info.value)
    with pytest.raises(ConfigError, match="No such file"):
        read_key(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_key(tmp_path)
