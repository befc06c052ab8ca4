"""The contract between the kernel and platform plugins.

A platform runs application code and reports back on each system call, fault or
interrupt (gVisor ``pkg/sentry/platform/platform.go``). Platform plugins
contribute :class:`Platform` subclasses through the ``register_types`` hook
(``register.add_platform(PtracePlatform)``); the ``platform_create`` hook builds
the one that a :class:`~.config.Config` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .config import Config


class Platform:
    """A way to run application code; subclass it in a plugin.

    ``name`` is what ``--platform`` and ``runtime.platform`` select.
    """

    name: ClassVar[str] = ""

    @classmethod
    def probe(cls) -> str | None:
        """None when this platform can run on this host, else why not (one line).

        Must be cheap and must not leave anything open; ``pyrunsc plugins``
        calls it for every platform.
        """
        return None

    def __init__(self, config: Config) -> None:
        self.config = config
