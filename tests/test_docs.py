"""The plugin docs (datasette's test_docs.py, for pyrunsc's hooks).

Every hookspec in core/hookspecs.py must be documented in docs/plugins.md with
its arguments, return value, firstresult and call order, must have a docstring
saying the same, and must be implemented by at least one test plugin in
tests/fixtures/. The minimal example in the docs must load and work.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pyrunsc.core import hookspecs
from pyrunsc.core.config import Config
from pyrunsc.core.errors import ConfigError
from pyrunsc.core.mounts import FdDispenser, resolve_mount
from pyrunsc.core.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Plugins
from pyrunsc.core.spec import Mount

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
FIXTURES = ROOT / "tests" / "fixtures"

HOOKS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    name: (fn, getattr(fn, f"{hookspecs.PROJECT}_spec"))
    for name, fn in vars(hookspecs).items()
    if hasattr(fn, f"{hookspecs.PROJECT}_spec")
}


def args_of(hook: str) -> list[str]:
    return list(inspect.signature(HOOKS[hook][0]).parameters)


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text(encoding="utf-8")


def section(docs: str, heading: str) -> str:
    """The text under ``heading`` (a whole line) up to the next heading of any level."""
    lines = docs.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)


def test_there_are_hooks() -> None:
    assert set(HOOKS) >= {
        "register_types", "add_commands", "compile_mounts", "mount_device", "add_restore_mount",
        "platform_create", "before_checkpoint", "after_restore",
    }


# -------------------------------------------------------------------------
# (a) Every hook is in docs/plugins.md, with its arguments.
# -------------------------------------------------------------------------


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_arguments(docs: str, hook: str) -> None:
    heading = f"### {hook}({', '.join(args_of(hook))})"
    assert heading in docs.splitlines(), f"docs/plugins.md has no heading {heading!r}"


def test_every_documented_hook_exists(docs: str) -> None:
    hooks_part = docs.split("\n## Hooks\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^### (\w+)\(", hooks_part, flags=re.M)
    assert sorted(documented) == sorted(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_section_gives_arguments_return_firstresult_and_call_order(
    docs: str, hook: str
) -> None:
    text = section(docs, f"### {hook}({', '.join(args_of(hook))})")
    fields = re.findall(r"^- \*\*(\w+):\*\*", text, flags=re.M)
    assert fields == ["Arguments", "Returns", "firstresult", "Called"]
    arguments = text.split("**Arguments:**", 1)[1].split("- **Returns:**", 1)[0]
    for arg in args_of(hook):
        assert f"`{arg}`:" in arguments, f"{hook}: argument {arg!r} is not described"
    firstresult = "yes" if HOOKS[hook][1]["firstresult"] else "no"
    assert f"- **firstresult:** {firstresult}\n" in text + "\n"


# -------------------------------------------------------------------------
# Every hook's docstring gives the same.
# -------------------------------------------------------------------------


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hookspec_docstring(hook: str) -> None:
    fn, opts = HOOKS[hook]
    doc = inspect.getdoc(fn) or ""
    for arg in args_of(hook):
        assert f":param {arg}:" in doc, f"{hook}: no :param {arg}:"
    assert ":return:" in doc
    assert "Called " in doc, f"{hook}: the docstring does not say when it is called"
    flat = " ".join(doc.split())
    assert ("Stops at first non-None result." in flat) == bool(opts["firstresult"])
    assert ("Not firstresult" in flat) == (not opts["firstresult"])


# -------------------------------------------------------------------------
# (b) Every hook is implemented by a test plugin in tests/fixtures/.
# -------------------------------------------------------------------------


def fixture_entry_points() -> list[tuple[str, str, str]]:
    """(distribution folder, entry-point name, value) of each fixture plugin."""
    out = []
    for pyproject in sorted(FIXTURES.glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for name, value in project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}).items():
            out.append((pyproject.parent.name, name, value))
    return out


def load_fixture_plugin(dist: str, value: str) -> object:
    module_name, _, attr = value.partition(":")
    spec = importlib.util.spec_from_file_location(module_name, FIXTURES / dist / f"{module_name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attr) if attr else module


@pytest.fixture(scope="module")
def implemented() -> set[str]:
    """The hooks that the fixture plugins implement, as loaded by pyrunsc itself."""
    inline = []
    for dist, name, value in fixture_entry_points():
        try:
            inline.append((name, load_fixture_plugin(dist, value)))
        except ImportError:
            continue  # the plugin that fails to import on purpose
    plugins = Plugins(inline=inline)
    return {hook for i in plugins.loaded if i.distribution == "(inline)" for hook in i.hooks}


def test_there_are_fixture_plugins() -> None:
    dists = {dist for dist, _, _ in fixture_entry_points()}
    assert dists >= {"pyrunsc-example-plugin", "pyrunsc-broken-plugin"}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_implemented_by_a_test_plugin(implemented: set[str], hook: str) -> None:
    assert hook in implemented, f"no plugin in tests/fixtures/ implements {hook}"


# -------------------------------------------------------------------------
# The rest of the guide.
# -------------------------------------------------------------------------


def minimal_example(docs: str) -> ModuleType:
    blocks = code_blocks(section(docs, "## A minimal plugin"), "python")
    assert len(blocks) == 1
    module = ModuleType("pyrunsc_hellofs")
    exec(compile(blocks[0], str(DOCS), "exec"), module.__dict__)
    return module


def test_minimal_example_loads_and_serves_its_mounts(docs: str, tmp_path: Path) -> None:
    module = minimal_example(docs)
    plugins = Plugins(inline=[("hellofs", module)])
    info = plugins.infos[-1]
    assert (info.name, info.status, info.error) == ("hellofs", "loaded", "")
    assert info.hooks == ["mount_device", "register_types"]
    assert info.filesystems == ["hellofs"]
    config = Config(root_dir=tmp_path)
    resolved = resolve_mount(
        plugins, Mount("/hello", "hello", "none", ("greeting=hi", "ro")), config, FdDispenser()
    )
    assert resolved is not None
    assert (resolved.fs_name, resolved.data, resolved.device, resolved.flags.names()) == (
        "hellofs", ("greeting=hi",), "hello-/hello", ["ro"]
    )
    with pytest.raises(ConfigError, match="greeting must be letters only"):
        resolve_mount(plugins, Mount("/hello", "hello", options=("greeting=h1!",)), config,
                      FdDispenser())
    # The JSON the guide shows for it is what the listing gives.
    assert '"hooks": ["mount_device", "register_types"]' in section(
        docs, "## Listing plugins: pyrunsc plugins"
    )


def test_minimal_example_pyproject_declares_the_entry_point(docs: str) -> None:
    blocks = code_blocks(section(docs, "## How pyrunsc finds plugins"), "toml")
    assert len(blocks) == 1
    pyproject = tomllib.loads(blocks[0])
    assert pyproject["project"]["entry-points"][ENTRY_POINT_GROUP] == {
        "hellofs": "pyrunsc_hellofs"
    }


def test_guide_covers_import_registration_disabling_and_listing(docs: str) -> None:
    for text in (
        f"[project.entry-points.{ENTRY_POINT_GROUP}]",
        "from pyrunsc.core.hookspecs import hookimpl",
        "register.add_filesystem(cls)",
        "register.add_platform(cls)",
        "@hookimpl(wrapper=True)",
        f"## Disabling plugins: {DISABLE_ENV}",
        "## Listing plugins: pyrunsc plugins",
        "pyrunsc plugins --format json",
        "check_pending()",
    ):
        assert text in " ".join(docs.split()), f"docs/plugins.md does not mention {text!r}"
