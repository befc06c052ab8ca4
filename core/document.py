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
import errno
import json
import logging
import os
import re
import stat
import unicodedata
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


#: Limits on what a spec or a deployment may be. A real one is a few KiB and a
#: handful of levels deep; these turn hostile or broken input (a deep nest, YAML
#: aliases that expand a few hundred bytes into gigabytes, a huge number, an
#: endless device) into a ConfigError instead of a crash or a stuck machine.
MAX_FILE_BYTES = 16 * 2**20
MAX_DEPTH = 100
MAX_VALUES = 1_000_000
#: Characters in all the strings (and keys) of a document, aliases expanded.
MAX_TEXT = 64 * 2**20
#: Digits in one integer (CPython's default int/str conversion limit).
MAX_INT_DIGITS = 4300

#: Characters that would let text printed on a terminal reorder what is shown
#: (bidirectional overrides and isolates).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """``text`` with its control characters (C0, DEL, C1, line separators) and
    bidirectional overrides written as escapes (``\\x1b``, ``\\n``,
    ``\\u202e``), so that printing it can neither move the cursor, colour the
    terminal nor reorder what is shown; other text is unchanged."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message as Python does (``'ro'``, control
    characters escaped), cut to about ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


class _Token(str):
    """Literal text in :func:`_tokens`' output (not a value to render)."""


def _pairs(value: Mapping[Any, Any]) -> Iterator[Any]:
    for i, (k, v) in enumerate(value.items()):
        yield _Token((", " if i else "") + _scalar_text(str(k)) + ": ")
        yield v
    yield _Token("}")


def _items(value: list[Any] | tuple[Any, ...]) -> Iterator[Any]:
    for i, v in enumerate(value):
        if i:
            yield _Token(", ")
        yield v
    yield _Token("]")


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if is_bool(value):
        return "true" if value else "false"
    if isinstance(value, str):
        # Cut first: only the beginning is ever shown.
        return json.dumps(str(value[:200]), ensure_ascii=False)
    if isinstance(value, int):
        try:
            return str(int(value))
        except ValueError:  # more digits than int -> str converts
            return f"<an integer of {int(value).bit_length()} bits>"
    if isinstance(value, float):
        return json.dumps(float(value))
    return json.dumps(str(value)[:200], ensure_ascii=False)


def _tokens(value: Any) -> Iterator[str]:
    """``value`` rendered as JSON, piece by piece, without recursion (so any
    depth, any size and shared or cyclic containers are fine: the caller stops
    reading when it has enough)."""
    stack: list[Iterator[Any]] = [iter([value])]
    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, _Token):
            yield str(item)
        elif isinstance(item, Mapping):
            yield "{"
            stack.append(_pairs(item))
        elif isinstance(item, list | tuple):
            yield "["
            stack.append(_items(item))
        else:
            yield _scalar_text(item)


def describe(value: Any, limit: int = 80) -> str:
    """A short rendering of a bad value for an error message, JSON-style
    (``"tmp"``, ``12``, ``null``, ``["a"]``); cut to ``limit`` (80) characters.
    Reads only as much of ``value`` as it shows. (The CLI passes every message
    through :func:`visible` when it prints it.)"""
    text = ""
    for piece in _tokens(value):
        text += piece
        if len(text) > limit:
            break
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

        ConfigError ``FILE: no such file`` when it is missing (see
        :func:`read_file` for the other ways a file cannot be read),
        ``FILE:LINE:COL: invalid JSON: ...`` on a syntax error, and ``FILE:
        FIELD: ...`` for data too deep, too large or with a huge integer (see
        :meth:`check_size`). A key given twice in one object is a warning (the
        last value is used, as Go's encoding/json, and so runc, does). Values
        carry no positions (errors name the field path only).
        """
        name = display or str(path)
        text = read_file(Path(path), name)
        duplicates: dict[int, list[str]] = {}

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            obj: dict[str, Any] = {}
            for key, value in items:
                if key in obj:
                    duplicates.setdefault(id(obj), []).append(key)
                obj[key] = value
            return obj

        try:
            data = json.loads(text, parse_int=_parse_int, object_pairs_hook=pairs)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON: {e.msg}", file=name, line=e.lineno, column=e.colno) from None
        except RecursionError:
            raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels)", file=name) from None
        except ValueError as e:
            raise ConfigError(f"invalid JSON: {e}", file=name) from None
        doc = cls(name, data)
        doc.check_size(duplicates)
        return doc

    @classmethod
    def load_yaml(cls, path: Path, display: str | None = None) -> Document:
        """Read a YAML 1.2 deployment with ruamel.yaml (round-trip, so nodes keep
        positions).

        ConfigError ``FILE: no such file`` when it is missing (see
        :func:`read_file`), ``FILE:LINE:COL: invalid YAML: ...`` on a syntax
        error, ``FILE:LINE:COL: FIELD: duplicate key ...`` for a key given twice
        in one mapping (at the second one), ``FILE:LINE:COL: FIELD: integer too
        large ...``, an error at the second document when the file holds more
        than one, and errors for data too deep or expanding (through aliases)
        beyond the limits (see :meth:`check_size`). Anchors, aliases and merge
        keys (``<<: *base``) work as usual.
        """
        from ruamel.yaml import YAML
        from ruamel.yaml.composer import ComposerError
        from ruamel.yaml.constructor import DuplicateKeyError
        from ruamel.yaml.error import MarkedYAMLError, YAMLError

        name = display or str(path)
        text = read_file(Path(path), name)
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = False
        yaml.Constructor = _yaml_constructor()
        yaml.Scanner = _yaml_scanner()
        try:
            data = yaml.load(text)
        except RecursionError:
            raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels)", file=name) from None
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
            if isinstance(e, ComposerError) and e.problem_mark is not None and "another document" in problem:
                second = e.problem_mark.line + 1
                raise ConfigError(
                    f"a deployment is one YAML document; found a second at line {second}",
                    file=name,
                    line=second,
                    column=e.problem_mark.column + 1,
                ) from None
            if isinstance(e, yaml.Scanner.too_deep):
                raise ConfigError(
                    problem, file=name, line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                ) from None
            if isinstance(e, yaml.Constructor.too_large) and e.problem_mark is not None:
                found = _find_value(yaml, text, e.problem_mark.index)
                raise ConfigError(
                    problem,
                    file=name,
                    field=format_path(found) if found else None,
                    line=mark.line + 1,
                    column=mark.column + 1,
                ) from None
            raise ConfigError(
                f"invalid YAML: {problem}",
                file=name,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ) from None
        except (YAMLError, ValueError) as e:
            raise ConfigError(f"invalid YAML: {e}", file=name) from None
        doc = cls(name, data, positions=True, start=_content_start(text))
        doc.check_size()
        return doc

    def check_size(self, duplicates: Mapping[int, list[str]] | None = None) -> None:
        """Refuse data nested deeper than :data:`MAX_DEPTH`, or that expands
        (YAML aliases repeat what they refer to) to more than :data:`MAX_VALUES`
        values or :data:`MAX_TEXT` characters, or that holds an integer of more
        than :data:`MAX_INT_DIGITS` digits: ConfigError naming the field.

        The walk is iterative and measures each shared container once, so it
        takes time in proportion to the file, not to what its aliases expand
        to; everything done with the data afterwards (copying kept fields,
        hashing the spec) is then bounded too. ``duplicates`` maps ``id()`` of
        a mapping to its keys that were given more than once: a warning each.
        """
        memo: dict[int, tuple[int, int, int]] = {}  # id -> (values, characters, height)
        on_path: set[int] = set()
        # Frames: [container, parts, iterator of (key, value), values, characters, height].
        stack: list[list[Any]] = []

        def too_deep(parts: tuple[PathPart, ...]) -> ConfigError:
            # Named by its first levels: the whole path would be 100 levels long.
            return self.error(parts[:3], f"nested too deeply (more than {MAX_DEPTH} levels)")

        def visit(value: Any, parts: tuple[PathPart, ...]) -> tuple[int, int, int] | None:
            """The sizes of a scalar or an already measured container, or None
            after starting to measure a new container."""
            if isinstance(value, Mapping | builtins.list):
                key = id(value)
                if key in on_path:
                    raise self.error(parts, "refers to itself (a recursive YAML alias)")
                if key in memo:
                    if len(parts) + memo[key][2] > MAX_DEPTH:
                        raise too_deep(parts)
                    return memo[key]
                if len(parts) + 1 > MAX_DEPTH:
                    raise too_deep(parts)
                if duplicates and key in duplicates:
                    for k in dict.fromkeys(duplicates[key]):
                        Node(self, (*parts, k), None).warn(
                            "duplicate key; the last value is used (as runc does)"
                        )
                on_path.add(key)
                items = iter(value.items()) if isinstance(value, Mapping) else iter(enumerate(value))
                stack.append([value, parts, items, 1, 0, 1])
                return None
            if isinstance(value, _LongInt):
                raise self.error(parts, f"integer too large ({value.digits} digits)")
            return (1, len(value) if isinstance(value, str) else 0, 0)

        def add(sizes: tuple[int, int, int]) -> None:
            frame = stack[-1]
            frame[3] += sizes[0]
            frame[4] += sizes[1]
            frame[5] = max(frame[5], sizes[2] + 1)
            if frame[3] > MAX_VALUES:
                raise self.error(
                    frame[1],
                    f"expands to more than {MAX_VALUES:,} values (YAML aliases repeated?); "
                    "a spec is far smaller",
                )
            if frame[4] > MAX_TEXT:
                raise self.error(
                    frame[1],
                    f"expands to more than {MAX_TEXT // 2**20} MiB of text (YAML aliases repeated?); "
                    "a spec is far smaller",
                )

        visit(self.data, ())
        while stack:
            frame = stack[-1]
            try:
                key, value = next(frame[2])
            except StopIteration:
                stack.pop()
                on_path.discard(id(frame[0]))
                memo[id(frame[0])] = (frame[3], frame[4], frame[5])
                if stack:
                    add(memo[id(frame[0])])
                continue
            if isinstance(key, str):
                add((1, len(key), 0))
            sizes = visit(value, (*frame[1], key))
            if sizes is not None:
                add(sizes)

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
            raise self.error(f"must be at least {minimum}, got {describe(v)}")
        if maximum is not None and v > maximum:
            raise self.error(f"must be at most {maximum}, got {describe(v)}")
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
    except (YAMLError, RecursionError):
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

    try:
        return walk(top, ())
    except RecursionError:
        return None


def _find_value(yaml: Any, text: str, index: int) -> tuple[PathPart, ...] | None:
    """The field path of the value starting at character ``index`` of
    ``text``, found on the composed node graph; None if not found."""
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    try:
        top = yaml.compose(text)
    except (YAMLError, RecursionError):
        return None
    seen: set[int] = set()
    stack: list[tuple[Any, tuple[PathPart, ...]]] = [(top, ())]
    while stack:
        node, parts = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.start_mark.index == index and not isinstance(node, MappingNode | SequenceNode):
            return parts
        if isinstance(node, MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else None
                stack.append((value, (*parts, name) if name is not None else parts))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*parts, i)) for i, item in enumerate(node.value))
    return None


class _LongInt:
    """A JSON integer with more than :data:`MAX_INT_DIGITS` digits, kept
    unconverted until :meth:`Document.check_size` reports it with its field."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | _LongInt:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _LongInt(digits)
    return int(text)


_CONSTRUCTOR: Any = None


def _yaml_constructor() -> Any:
    """ruamel.yaml's round-trip constructor, refusing an integer of more than
    :data:`MAX_INT_DIGITS` digits at its position (instead of a ValueError
    from ``int()`` with none)."""
    global _CONSTRUCTOR
    if _CONSTRUCTOR is None:
        from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor

        class IntegerTooLarge(ConstructorError):
            pass

        class Constructor(RoundTripConstructor):
            too_large = IntegerTooLarge

            def construct_int_checked(self, node: Any) -> Any:
                digits = sum(ch.isdigit() for ch in str(node.value))
                if digits > MAX_INT_DIGITS:
                    raise IntegerTooLarge(
                        problem=f"integer too large ({digits} digits)", problem_mark=node.start_mark
                    )
                return self.construct_yaml_int(node)

        Constructor.add_constructor("tag:yaml.org,2002:int", Constructor.construct_int_checked)
        _CONSTRUCTOR = Constructor
    return _CONSTRUCTOR


_SCANNER: Any = None


def _yaml_scanner() -> Any:
    """ruamel.yaml's round-trip scanner, refusing to nest flow collections
    (``[[[...``) or block indentation deeper than :data:`MAX_DEPTH` levels as
    it reads them: its work grows with the square of the flow depth, so a few
    KiB of brackets would otherwise keep it busy for minutes."""
    global _SCANNER
    if _SCANNER is None:
        from ruamel.yaml.scanner import RoundTripScanner, ScannerError

        class NestedTooDeeply(ScannerError):
            pass

        class Scanner(RoundTripScanner):
            too_deep = NestedTooDeeply

            def _refuse(self) -> None:
                raise NestedTooDeeply(
                    problem=f"nested too deeply (more than {MAX_DEPTH} levels)",
                    problem_mark=self.reader.get_mark(),
                )

            def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
                if self.flow_level >= MAX_DEPTH:
                    self._refuse()
                super().fetch_flow_collection_start(TokenClass, to_push)

            def add_indent(self, column: int) -> bool:
                if len(self.indents) >= MAX_DEPTH:
                    self._refuse()
                added: bool = super().add_indent(column)
                return added

        _SCANNER = Scanner
    return _SCANNER


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of ``mode`` cannot be read as a document, or None."""
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return f"is not a regular file but {kind}"


def read_file(path: Path, name: str) -> str:
    """The text of the regular file ``path``, named ``name`` in messages.

    ConfigError (exit status 2) rather than a hang or an OSError: ``no such
    file``, ``is a directory, not a file``, ``is not a regular file but a
    FIFO`` (devices, FIFOs and sockets are refused before reading),
    ``is larger than 16 MiB``, ``not UTF-8 text``, and ``cannot read: REASON``
    (permission denied, a path too long, ...).
    """
    too_big = f"is larger than {MAX_FILE_BYTES // 2**20} MiB; a spec or deployment is far smaller"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError("no such file", file=name) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {_strerror(e)}", file=name) from None
    if (why := _not_regular(st.st_mode)) is not None:
        raise ConfigError(why, file=name)
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(too_big, file=name)
    try:
        # O_NONBLOCK: a FIFO swapped in since the stat must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise ConfigError("no such file", file=name) from None
        raise ConfigError(f"cannot read: {_strerror(e)}", file=name) from None
    with os.fdopen(fd, "rb") as f:
        if (why := _not_regular(os.fstat(f.fileno()).st_mode)) is not None:
            raise ConfigError(why, file=name)
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"cannot read: {_strerror(e)}", file=name) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(too_big, file=name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e.reason} at byte {e.start}", file=name) from None
