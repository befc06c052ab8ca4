"""The key that signs checkpoint images (HMAC-SHA256).

Unpickling a kernel runs code, so a restore only trusts an image made with
its own key (gVisor passes such a key to ``pkg/state/statefile``). The key is
either the runtime root's ``<root>/image.key`` (32 random bytes, created
mode 0600 on first use, atomically: two processes racing both end up with the
same key) or a file given with ``--image-key FILE`` (its bytes as they are,
at least 16 of them), so that images can move between hosts that share it.

A key file that others may read or write is refused: whoever reads it can
sign an image that runs code in the next restore.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from pathlib import Path

from ..errors import ConfigError, PyrunscError

#: The key file's name under the runtime root.
KEY_FILE = "image.key"
#: Bytes in a key that pyrunsc makes.
KEY_BYTES = 32
#: The fewest bytes accepted in a key file.
MIN_KEY_BYTES = 16


def read_key(path: str | os.PathLike[str], *, field: str | None = None) -> bytes:
    """The bytes of the key file ``path``.

    :raises ConfigError: (exit status 2, naming ``path``) if it is missing,
        not a regular file, readable or writable by group or others, or
        shorter than :data:`MIN_KEY_BYTES`.
    """
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"cannot read the image key: {e.strerror}", file=shown, field=field) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("the image key is not a regular file", file=shown, field=field)
        if st.st_mode & 0o077:
            raise ConfigError(
                f"the image key is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"`chmod 600 {shown}`, or make a new key",
                file=shown, field=field,
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            key = f.read(1 << 20)
    finally:
        os.close(fd)
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"the image key has {len(key)} bytes; it needs at least {MIN_KEY_BYTES}",
                          file=shown, field=field)
    return key


def root_key(root: Path, *, create: bool = True) -> bytes | None:
    """The runtime root's key, ``<root>/image.key``.

    With ``create``, a missing key (and ``root``) is made: 32 random bytes,
    mode 0600, written to a temporary file and linked into place, so that a
    reader never sees a partial key and concurrent creators agree on one.
    Without ``create``, a missing key gives None.

    :raises ConfigError: the key file is unsafe or too short (see :func:`read_key`).
    :raises PyrunscError: the root or the key cannot be created.
    """
    path = Path(root) / KEY_FILE
    if os.path.lexists(path) or not create:
        return read_key(path) if os.path.lexists(path) else None
    try:
        Path(root).mkdir(parents=True, exist_ok=True, mode=0o711)
        fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=root)  # mode 0600
    except OSError as e:
        raise PyrunscError(f"cannot create the image key in {root}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise PyrunscError(f"cannot create the image key {path}: {e.strerror or e}") from None
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return read_key(path)


def resolve_key(root: Path, key_file: str | os.PathLike[str] | None, *, create: bool = True) -> bytes | None:
    """The key for a command: ``--image-key FILE`` if given, else the root's
    (made if missing and ``create``; None if missing and not)."""
    if key_file is not None:
        return read_key(key_file, field="--image-key")
    return root_key(root, create=create)
