"""Parsers for the values of filesystem mount options (``mode=1777``, ``size=64m``).

Linux ``mm/shmem.c`` ``shmem_parse_one`` and ``lib/cmdline.c`` ``memparse``.
Each raises ValueError with a message naming what is wrong.
"""

from __future__ import annotations

_SUFFIXES = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_mode(value: str) -> int:
    """An octal file mode of at most ``07777`` (``mode=1777``)."""
    try:
        mode = int(value, 8)
    except ValueError:
        raise ValueError(f"mode must be octal, got {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be at most 07777, got {value!r}")
    return mode


def parse_id(value: str) -> int:
    """A decimal uid or gid below ``2**32 - 1`` (which means "no id")."""
    if not value.isdigit():
        raise ValueError(f"must be a decimal id, got {value!r}")
    n = int(value)
    if n >= 2**32 - 1:
        raise ValueError(f"id {n} is out of range")
    return n


def memparse(value: str, *, percent: bool = False) -> tuple[int, bool]:
    """A size like ``65536k``, ``64m`` or, with ``percent``, ``50%``.

    Returns (number, is_percent); suffixes k, m, g, t, p, e are powers of 1024.
    """
    text = value.strip()
    is_percent = percent and text.endswith("%")
    if is_percent:
        text = text[:-1]
    shift = 0
    if text and text[-1].lower() in _SUFFIXES and not is_percent:
        shift = _SUFFIXES[text[-1].lower()]
        text = text[:-1]
    if not text.isdigit():
        raise ValueError(f"size must be a number with an optional k, m or g suffix, got {value!r}")
    n = int(text) << shift
    if n >= 2**64:
        raise ValueError(f"size {value!r} is out of range")
    return n, is_percent
