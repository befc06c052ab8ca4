"""The one way tests name the sandbox's platforms (issue #8: the end-to-end
suites run on every platform).

``platforms()`` gives the parameters for ``@pytest.mark.parametrize("platform",
...)``: ``"ptrace"`` and ``"kvm"``, each skipped, with the reason its
plugin's ``probe()`` gives, on a host that cannot run it (for kvm: no
/dev/kvm, no permission to open it, or a KVM API it does not speak).
``platform_param`` is the same for one platform with other values alongside
(a tuple parameter, e.g. platform and file access).

This folder is on ``sys.path`` (``pythonpath`` in pyproject.toml): test
modules ``from platforms import platforms``.
"""

from __future__ import annotations

import functools

import pytest
from _pytest.mark import ParameterSet

PLATFORMS = ("ptrace", "kvm")


@functools.cache
def unavailable(platform: str) -> str | None:
    """None when this host can run ``platform``, else why not (one line)."""
    if platform == "ptrace":
        from pyrunsc.plugins.platform_ptrace import PtracePlatform

        return PtracePlatform.probe()
    if platform == "kvm":
        from pyrunsc.plugins.platform_kvm import KVMPlatform

        return KVMPlatform.probe()
    raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")


def skip_unless(platform: str) -> pytest.MarkDecorator:
    """A skip mark for tests that need ``platform``, with the probe's reason."""
    why = unavailable(platform)
    return pytest.mark.skipif(why is not None, reason=f"{platform} platform unavailable: {why}")


def platform_param(platform: str, *values: object, id: str | None = None,
                   marks: tuple[pytest.MarkDecorator, ...] = ()) -> ParameterSet:
    """One parameter for ``platform``: the name alone, or a tuple of it and
    ``values``; skipped where the platform is unavailable."""
    value: object = (platform, *values) if values else platform
    return pytest.param(value, id=id or "-".join(map(str, (platform, *values))),
                        marks=(skip_unless(platform), *marks))


def platforms(*names: str) -> list[ParameterSet]:
    """``platform`` parameters for each of ``names`` (default: all)."""
    return [platform_param(p) for p in names or PLATFORMS]
