"""``pyrunsc image inspect DIR``: the header as a table or JSON, the MAC
verdict with the key of --root or --image-key, exit status 2 on a bad image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyrunsc.core.checkpoint import CHECKPOINT_FILE, PAGES_FILE, root_key, write_image
from pyrunsc.core.mm.memfile import PAGE_SIZE, MemoryFile

from .conftest import flip, pattern

PYRUNSC = Path(sys.executable).parent / "pyrunsc"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PYRUNSC), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture(params=["none", "zstd"])
def image(request: pytest.FixtureRequest, tmp_path: Path, root: Path, memfile: MemoryFile,
          header: dict[str, Any]) -> Path:
    key = root_key(root)
    assert key is not None
    memfile.write(memfile.allocate(5 * PAGE_SIZE), pattern(5 * PAGE_SIZE, 1))
    memfile.write(memfile.allocate(3 * PAGE_SIZE), bytes(3 * PAGE_SIZE))
    write_image(tmp_path / "img", header, b"kernel blob", memfile, key=key, compression=request.param)
    return tmp_path / "img"


def test_inspect_table(image: Path, root: Path) -> None:
    r = run("--root", str(root), "image", "inspect", str(image))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert "verified" in out.splitlines()[0]
    for text in ("counter", "ptrace", "9pfs-/", "/tmp", "sh -c loop", "20.0 KiB (20480 bytes) in 1 extents",
                 "zero pages skipped", "12.0 KiB", CHECKPOINT_FILE, PAGES_FILE, "on disk", "MAC", "ok",
                 "compiled mounts", "tasks (2)", "tmpfs (1)", "8.0 KiB (8192 bytes)"):
        assert text in out, text


def test_inspect_json(image: Path, root: Path) -> None:
    r = run("--root", str(root), "image", "inspect", "--format", "json", str(image))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["verified"] is True and data["mac"] == "ok" and data["problems"] == []
    assert data["format"] == 1
    h = data["header"]
    assert h["container_id"] == "counter" and h["platform"] == "ptrace"
    assert [m["device"] for m in h["mounts"]] == ["9pfs-/", "none"]
    assert h["tasks"][1]["command"] == "seq"
    assert h["memory"]["saved"] == 5 * PAGE_SIZE and h["memory"]["committed"] >= 8 * PAGE_SIZE
    assert data["files"][PAGES_FILE]["size"] == h["parts"]["pages"]["size"]
    assert set(data["files"][CHECKPOINT_FILE]) == {"size", "allocated"}


def test_inspect_with_image_key(image: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "root" / "image.key"
    r = run("--root", str(tmp_path / "elsewhere"), "image", "inspect", "--image-key", str(key_file),
            "--format", "json", str(image))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mac"] == "ok"
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    r = run("image", "inspect", "--image-key", str(other), str(image))
    assert r.returncode == 2
    assert "NOT VERIFIED" in r.stdout and "counter" in r.stdout  # still shown, flagged
    assert f"pyrunsc: error: {image}: {CHECKPOINT_FILE}: the MAC does not verify: the image was made with " \
           "another key" in r.stderr
    assert "Traceback" not in r.stderr


def test_inspect_without_a_key(image: Path, tmp_path: Path) -> None:
    r = run("--root", str(tmp_path / "keyless"), "image", "inspect", "--format", "json", str(image))
    assert r.returncode == 0
    assert json.loads(r.stdout)["mac"] == "unchecked"
    assert "the MAC was not checked" in r.stderr
    assert not (tmp_path / "keyless").exists()  # inspect makes no key


@pytest.mark.parametrize("damage", ["flip-pages", "flip-kernel", "truncate-pages"])
def test_inspect_damaged_image(image: Path, root: Path, damage: str) -> None:
    if damage == "flip-pages":
        flip(image / PAGES_FILE, 10)
    elif damage == "flip-kernel":
        flip(image / CHECKPOINT_FILE, -1)
    else:
        os.truncate(image / PAGES_FILE, os.path.getsize(image / PAGES_FILE) - 1)
    r = run("--root", str(root), "image", "inspect", "--format", "json", str(image))
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["verified"] is False and data["mac"] == "ok"
    name = CHECKPOINT_FILE if damage == "flip-kernel" else PAGES_FILE
    assert r.stderr.startswith(f"pyrunsc: error: {image}: {name}: ")
    assert "SHA-256 mismatch" in r.stderr or "truncated" in r.stderr


def test_inspect_unreadable_image(image: Path, root: Path, tmp_path: Path) -> None:
    os.truncate(image / CHECKPOINT_FILE, 30)
    r = run("--root", str(root), "image", "inspect", str(image))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == f"pyrunsc: error: {image / CHECKPOINT_FILE}: truncated: 30 bytes, but the header and its " \
                       f"MAC end at byte {r.stderr.split('end at byte ')[1].strip()}\n"
    r = run("--root", str(root), "image", "inspect", str(tmp_path / "nothing"))
    assert r.returncode == 2
    assert r.stderr == f"pyrunsc: error: {tmp_path / 'nothing'}: no image folder here\n"
