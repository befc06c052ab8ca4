"""Checkpoint images (issue 7): the folder a checkpoint writes and a restore reads.

Modules: :mod:`.folder` (publishing a folder atomically), :mod:`.key` (the
HMAC key), :mod:`.progress` (bars or a summary).
"""

from .key import KEY_FILE, read_key, resolve_key, root_key
from .progress import Progress, progress_for

__all__ = [
    "KEY_FILE",
    "Progress",
    "progress_for",
    "read_key",
    "resolve_key",
    "root_key",
]
