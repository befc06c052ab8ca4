"""The wheel installs only under ``pyrunsc``, with every package and built-in plugin."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_PLUGINS = {"fs_9p", "fs_tmpfs", "fs_proc", "fs_sys", "fs_dev", "platform_ptrace", "platform_kvm"}


def source_packages() -> set[str]:
    """Every folder under core/ and plugins/ with an __init__.py, as a dotted name."""
    out = set()
    for top in ("core", "plugins"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            out.add("pyrunsc." + ".".join(rel.parts))
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("pyrunsc-*.whl")
    return zipfile.ZipFile(whl)


@pytest.mark.slow
def test_wheel_has_nothing_outside_pyrunsc(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {"pyrunsc", next(t for t in tops if t.endswith(".dist-info"))}
    assert not any(n.startswith(("core/", "plugins/", "tests/")) for n in wheel.namelist())


@pytest.mark.slow
def test_wheel_has_every_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for pkg in source_packages():
        assert pkg.replace(".", "/") + "/__init__.py" in names, f"{pkg} is missing from pyproject's packages"
    assert "pyrunsc/core/py.typed" in names


@pytest.mark.slow
def test_wheel_registers_builtin_plugins_as_entry_points(wheel: zipfile.ZipFile) -> None:
    (ep_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(ep_file).decode())
    assert set(parser["pyrunsc"]) == BUILTIN_PLUGINS
    assert all(v == f"pyrunsc.plugins.{k}" for k, v in parser["pyrunsc"].items())
    assert parser["console_scripts"]["pyrunsc"] == "pyrunsc.core.cli:main"


def test_plugin_folders_hold_only_their_plugin() -> None:
    """Each plugins/<name>/ is a built-in plugin; the core never imports one."""
    folders = {p.name for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == BUILTIN_PLUGINS
    for py in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                # core/ is one level below the package root: `..plugins` from
                # core/x.py (or deeper with more dots) leaves core.
                depth = len(py.relative_to(ROOT / "core").parts)
                if node.level > depth:
                    names = [f"pyrunsc.{node.module or ''}"]
                else:
                    names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(n.startswith("pyrunsc.plugins") for n in names), f"{py} imports a plugin"
