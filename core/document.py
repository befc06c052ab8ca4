"""Typed reading of JSON and YAML documents with errors that point at the input.

A :class:`Node` is one value of a loaded document together with its field path
(``mounts[2].destination``) and, for YAML loaded by ruamel.yaml, its line and
column. Every getter either returns a value of the asked type or raises
:class:`~.errors.ConfigError` naming the file, the position, the field path and
the offending value. Nothing here knows the OCI spec; ``spec.py`` and
``deployment.py`` describe their fields with it.
"""

from __future__ import annotations

import builtins
import difflib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

log = logging.getLogger("pyrunsc.config")

PathPart = str | int

#: Keys written bare in a field path; any other key is quoted, as in
#: ``annotations["org.opencontainers.image.ref.name"]``.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(parts: tuple[PathPart, ...]) -> str:
    """``("mounts", 2, "destination")`` -> ``mounts[2].destination``.

    A key that is not a plain name (it holds a dot, a space, ...) is written
    as a quoted index, ``annotations["a.b"]``, so the path stays unambiguous.
    """
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not _PLAIN_KEY.fullmatch(p):
            out += f"[{json.dumps(p, ensure_ascii=False)}]"
        else:
            out += f".{p}" if out else p
    return out


def describe(value: Any) -> str:
    """A short rendering of a bad value for an error message, JSON-style
    (``"tmp"``, ``12``, ``null``, ``["a"]``); cut to 80 characters."""
    if is_bool(value):
        value = bool(value)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_bool(value: Any) -> bool:
    """True for a boolean, including ruamel.yaml's ``ScalarBoolean`` (an ``int``
    subclass that round-trip loading makes of an anchored ``&a true``)."""
    return isinstance(value, bool) or type(value).__name__ == "ScalarBoolean"


def type_name(value: Any) -> str:
    """The JSON/YAML name of a value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if is_bool(value):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def did_you_mean(name: str, known: list[str] | tuple[str, ...] | set[str]) -> str:
    """``"; did you mean 'platform'?"`` when a known name is close, else ``""``."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class Document:
    """A loaded file: its display name, its data, and (YAML) node positions."""

    def __init__(
        self,
        file: builtins.str,
        data: Any,
        *,
        positions: bool = False,
        start: tuple[int, int] = (1, 1),
    ) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        #: Where the content starts (YAML), for a value with no position of its own.
        self.start = start

    @classmethod
    def load_json(cls, path: Path, display: str | None = None) -> Document:
        """Read a JSON file, named ``display`` (default ``str(path)``) in messages.

        ConfigError ``FILE: no such file`` when it is missing, and
        ``FILE:LINE:COL: invalid JSON: ...`` on a syntax error. Values carry no
        positions (errors name the field path only).
        """
        name = display or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("no such file", file=name) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read: {e}", file=name) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON: {e.msg}", file=name, line=e.lineno, column=e.colno) from None
        return cls(name, data)

    @classmethod
    def load_yaml(cls, path: Path, display: str | None = None) -> Document:
        """Read a YAML 1.2 file with ruamel.yaml (round-trip, so nodes keep positions).

        ConfigError ``FILE: no such file`` when it is missing,
        ``FILE:LINE:COL: invalid YAML: ...`` on a syntax error, and
        ``FILE:LINE:COL: FIELD: duplicate key ...`` for a key given twice in
        one mapping (at the second one).
        """
        from ruamel.yaml import YAML
        from ruamel.yaml.constructor import DuplicateKeyError
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        name = display or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("no such file", file=name) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read: {e}", file=name) from None
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        try:
            data = yaml.load(text)
        except MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            problem = e.problem or e.context or "invalid YAML"
            if isinstance(e, DuplicateKeyError) and e.problem_mark is not None:
                dup = _find_duplicate(yaml, text, e.problem_mark.index)
                if dup is not None:
                    parts, first_line = dup
                    raise ConfigError(
                        f"duplicate key (first given at line {first_line})",
                        file=name,
                        field=format_path(parts),
                        line=mark.line + 1,
                        column=mark.column + 1,
                    ) from None
            raise ConfigError(
                f"invalid YAML: {problem}",
                file=name,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ) from None
        except YAMLError as e:
            raise ConfigError(f"invalid YAML: {e}", file=name) from None
        return cls(name, data, positions=True, start=_content_start(text))

    def root(self, prefix: tuple[PathPart, ...] = ()) -> Node:
        """The whole document as a :class:`Node`; ``prefix`` is shown before
        every field path in messages."""
        return Node(self, (), self.data, prefix)

    def position(self, parts: tuple[PathPart, ...]) -> tuple[int, int] | None:
        """1-based (line, column) of the value at ``parts``, or of its nearest parent."""
        if not self.positions:
            return None
        node: Any = self.data
        best: tuple[int, int] | None = None
        for part in parts:
            lc = getattr(node, "lc", None)
            if lc is None:
                break
            try:
                if isinstance(part, int):
                    line, col = lc.item(part)
                    node = node[part]
                else:
                    if part not in node:
                        break
                    line, col = lc.value(part)
                    node = node[part]
            except (KeyError, IndexError, TypeError, AttributeError):
                break
            best = (line + 1, col + 1)
        if best is None:
            lc = getattr(self.data, "lc", None)
            best = (lc.line + 1, lc.col + 1) if lc is not None else self.start
        return best

    def key_position(self, parts: tuple[PathPart, ...], key: str) -> tuple[int, int] | None:
        """1-based position of the *key* ``key`` inside the mapping at ``parts``."""
        if not self.positions:
            return None
        node: Any = self.data
        for part in parts:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return self.position(parts)
        lc = getattr(node, "lc", None)
        try:
            line, col = lc.key(key)  # type: ignore[union-attr]
        except (KeyError, AttributeError, TypeError):
            return self.position(parts)
        return (line + 1, col + 1)

    def error(
        self,
        parts: tuple[PathPart, ...],
        message: str,
        *,
        at: tuple[int, int] | None = None,
        display: tuple[PathPart, ...] = (),
    ) -> ConfigError:
        """A ConfigError for the value at ``parts``: this file, ``display +
        parts`` as the field path and, for YAML, the value's position (or
        ``at``)."""
        pos = at or self.position(parts)
        return ConfigError(
            message,
            file=self.file,
            field=format_path(display + parts) or None,
            line=pos[0] if pos else None,
            column=pos[1] if pos else None,
        )


class Node:
    """One value in a :class:`Document`, with typed getters that raise ConfigError.

    ``prefix`` is prepended to field paths in messages but not used to find
    positions; it names where an embedded document sits (``spec.`` in a YAML
    deployment).
    """

    __slots__ = ("doc", "parts", "prefix", "value")

    def __init__(
        self,
        doc: Document,
        parts: tuple[PathPart, ...],
        value: Any,
        prefix: tuple[PathPart, ...] = (),
    ) -> None:
        self.doc = doc
        self.parts = parts
        self.value = value
        self.prefix = prefix

    @property
    def path(self) -> builtins.str:
        """The field path, ``mounts[2].destination``."""
        return format_path(self.prefix + self.parts)

    def error(self, message: builtins.str) -> ConfigError:
        """A ConfigError naming this value's file, position and field path."""
        return self.doc.error(self.parts, message, display=self.prefix)

    def warn(self, message: builtins.str) -> None:
        """Log ``FILE[:LINE:COL]: FIELD: message`` as a warning (logger
        ``pyrunsc.config``)."""
        pos = self.doc.position(self.parts)
        where = self.doc.file + (f":{pos[0]}:{pos[1]}" if pos else "")
        log.warning("%s: %s: %s", where, self.path, message)

    def child(self, key: PathPart, value: Any) -> Node:
        """The node for ``value`` found at ``key`` (a field name or list index)
        of this one."""
        return Node(self.doc, (*self.parts, key), value, self.prefix)

    def _expect(self, kind: builtins.str) -> ConfigError:
        got = type_name(self.value)
        if self.value is not None:
            got += f" {describe(self.value)}"
        return self.error(f"expected {kind}, got {got}")

    # Scalars.
    def str(self) -> builtins.str:
        """The value as a string; ConfigError ``expected a string, got ...``."""
        if not isinstance(self.value, builtins.str):
            raise self._expect("a string")
        return builtins.str(self.value)

    def bool(self) -> builtins.bool:
        """The value as a boolean (not 0/1, not "true"); ConfigError otherwise."""
        if not is_bool(self.value):
            raise self._expect("a boolean")
        return builtins.bool(self.value)

    def int(
        self, *, minimum: builtins.int | None = None, maximum: builtins.int | None = None
    ) -> builtins.int:
        """The value as an integer within ``[minimum, maximum]`` (booleans and
        floats are refused); ConfigError naming the bound otherwise."""
        if is_bool(self.value) or not isinstance(self.value, builtins.int):
            raise self._expect("an integer")
        v = builtins.int(self.value)
        if minimum is not None and v < minimum:
            raise self.error(f"must be at least {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise self.error(f"must be at most {maximum}, got {v}")
        return v

    # Containers.
    def list(self) -> builtins.list[Node]:
        """The items of a list, as nodes ``path[i]``; ConfigError otherwise."""
        if not isinstance(self.value, builtins.list):
            raise self._expect("a list")
        return [self.child(i, v) for i, v in enumerate(self.value)]

    def str_list(self) -> builtins.list[builtins.str]:
        """A list of strings; ConfigError naming the first bad item."""
        return [n.str() for n in self.list()]

    def mapping(self) -> Mapping[builtins.str, Any]:
        """The value as a mapping with string keys; ConfigError otherwise."""
        if not isinstance(self.value, Mapping):
            raise self._expect("a mapping")
        for k in self.value:
            if not isinstance(k, builtins.str):
                raise self.error(f"keys must be strings, got {describe(k)}")
        return self.value

    def items(self) -> Iterator[tuple[builtins.str, Node]]:
        """``(key, node)`` for each field of this mapping, in document order."""
        for k, v in self.mapping().items():
            yield k, self.child(k, v)

    def get(self, key: builtins.str) -> Node | None:
        """The field ``key`` of this mapping, or None when absent (or null)."""
        m = self.mapping()
        if key not in m or m[key] is None:
            return None
        return self.child(key, m[key])

    def require(self, key: builtins.str) -> Node:
        """The field ``key``; ConfigError ``missing required field 'key'`` when
        it is absent or null, at the key that introduces this mapping."""
        node = self.get(key)
        if node is None:
            raise self.error_at_key(f"missing required field {key!r}")
        return node

    def error_at_key(self, message: builtins.str) -> ConfigError:
        """Like :meth:`error`, but placed (YAML) at the key that introduces this
        value (``spec:``) rather than at the value, which for a block mapping
        is its first field; list items and the document use their own place."""
        at = None
        if self.parts and isinstance(self.parts[-1], builtins.str):
            at = self.doc.key_position(self.parts[:-1], self.parts[-1])
        return self.doc.error(self.parts, message, at=at, display=self.prefix)

    def check_keys(
        self,
        known: tuple[builtins.str, ...] | builtins.list[builtins.str],
        *,
        strict: builtins.bool,
    ) -> builtins.list[builtins.str]:
        """Unknown keys of this mapping: an error at the key when ``strict``
        (``unknown field; did you mean 'platform'?`` when one is close), else a
        warning each; returns the unknown keys."""
        unknown = [k for k in self.mapping() if k not in known]
        for k in unknown:
            field = format_path((*self.prefix, *self.parts, k))
            if strict:
                raise ConfigError(
                    f"unknown field{did_you_mean(k, known)}",
                    file=self.doc.file,
                    field=field,
                    **_pos(self.doc.key_position(self.parts, k)),
                )
            self.child(k, None).warn("unknown field, ignored")
        return unknown


def _pos(pos: tuple[int, int] | None) -> dict[str, int | None]:
    return {"line": pos[0] if pos else None, "column": pos[1] if pos else None}


def _content_start(text: str) -> tuple[int, int]:
    """1-based position of the first character of YAML content in ``text``,
    past blank and comment lines, directives and a ``---`` marker."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" \t")
        if stripped.startswith("---"):
            stripped = stripped[3:].lstrip(" \t")
            if not stripped or stripped.startswith("#"):
                continue
            return number, len(line) - len(stripped) + 1
        if not stripped or stripped.startswith(("#", "%")):
            continue
        return number, len(line) - len(stripped) + 1
    return 1, 1


def _find_duplicate(yaml: Any, text: str, index: int) -> tuple[tuple[PathPart, ...], int] | None:
    """For a duplicate key starting at character ``index`` of ``text``: its field
    path and the 1-based line of the key's first occurrence, found on the
    composed node graph (composing does not check keys); None if not found."""
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    try:
        top = yaml.compose(text)
    except YAMLError:
        return None
    seen: set[int] = set()

    def walk(node: Any, parts: tuple[PathPart, ...]) -> tuple[tuple[PathPart, ...], int] | None:
        if id(node) in seen:  # an alias: its anchor was walked already
            return None
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else None
                if key.start_mark.index == index and name is not None and name in first:
                    return (*parts, name), first[name]
                if name is not None:
                    first.setdefault(name, key.start_mark.line + 1)
                found = walk(value, (*parts, name) if name is not None else parts)
                if found is not None:
                    return found
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                found = walk(item, (*parts, i))
                if found is not None:
                    return found
        return None

    return walk(top, ())
