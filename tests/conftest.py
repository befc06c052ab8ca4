"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyrunsc.core.mm.memfile import MemoryFile


@pytest.fixture
def memfile() -> Iterator[MemoryFile]:
    """A real memory file (a memfd) of 1 GiB, sparse; closed afterwards."""
    mf = MemoryFile(size=1 << 30)
    yield mf
    mf.close()
