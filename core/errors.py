"""Errors raised at pyrunsc's edges.

Inside the kernel, failures are ``SyscallError(errno)`` (added with the kernel).
At the edge (spec, YAML, options, plugins), a user-facing error names the file,
the field path and the value, so that it can be fixed without reading code. The
CLI turns :class:`PyrunscError` into a message on stderr and its ``exit_code``:
2 for bad usage or bad input, 1 for a runtime failure.
"""

from __future__ import annotations


class PyrunscError(Exception):
    """A failure to report to the user without a traceback; exit status 1."""

    exit_code = 1


class ConfigError(PyrunscError):
    """Bad input: a spec, a YAML deployment, a flag or a mount option; exit status 2.

    ``str()`` gives ``FILE:LINE:COL: FIELD: MESSAGE``, leaving out the parts
    that are not known, e.g.
    ``config.json: mounts[2].destination: must be an absolute path, got "tmp"``.
    ``line`` and ``column`` are 1-based.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.field = field
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class PluginError(PyrunscError):
    """A plugin failed to import, validate or register; names the plugin."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        self.message = message
        super().__init__(f"plugin {plugin!r}: {message}")


class SyscallError(Exception):
    """A system call's failure inside the kernel: ``errno`` is returned as ``-errno``.

    Raised by the VFS, mm and kernel; the syscall layer turns it into the
    return value (Linux's ``-ENOENT`` convention). ``str()`` gives the errno
    name and, when given, what failed, e.g. ``ENOENT: /etc/nope``.
    """

    def __init__(self, errno: int, detail: str = "") -> None:
        self.errno = errno
        self.detail = detail
        super().__init__(str(self))

    @property
    def name(self) -> str:
        import errno as _errno

        return _errno.errorcode.get(self.errno, f"E{self.errno}")

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name


class ImageError(ConfigError):
    """A checkpoint image that cannot be used: missing, truncated, altered,
    made with another key or by a newer pyrunsc; exit status 2.

    ``str()`` gives ``FILE: MESSAGE``, naming the image's file (or folder),
    e.g. ``img/pages.img: SHA-256 mismatch: altered or corrupted``.
    """

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message, file=file)
