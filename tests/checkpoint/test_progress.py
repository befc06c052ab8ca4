"""Progress: rich bars on a terminal, one summary line otherwise."""

from __future__ import annotations

import io
import os
import re
import select
from pathlib import Path
from typing import Any

from pyrunsc.core.checkpoint import progress_for, write_image
from pyrunsc.core.checkpoint.progress import BarProgress, SummaryProgress, format_bytes
from pyrunsc.core.mm.memfile import MemoryFile


def drain(fd: int) -> str:
    """All a pty has for its controller now."""
    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 64 << 20, 3 << 40)] == [
        "0 B", "1023 B", "1.5 KiB", "64.0 MiB", "3.0 TiB"]


def test_summary_line_when_not_a_terminal(tmp_path: Path, memfile: MemoryFile, key: bytes,
                                          header: dict[str, Any]) -> None:
    memfile.write(memfile.allocate(3 << 20), os.urandom(3 << 20))
    out = io.StringIO()
    with progress_for(out) as progress:
        assert isinstance(progress, SummaryProgress)
        write_image(tmp_path / "img", header, b"k" * 1024, memfile, key=key, progress=progress)
    assert re.fullmatch(r"pyrunsc: checkpoint: 3\.0 MiB in \d+\.\d\d s \(\d+\.\d (KiB|MiB|GiB)/s\)\n", out.getvalue())


def test_bars_on_a_terminal(tmp_path: Path, memfile: MemoryFile, key: bytes, header: dict[str, Any]) -> None:
    memfile.write(memfile.allocate(2 << 20), os.urandom(2 << 20))
    controller, terminal = os.openpty()
    with open(terminal, "w", closefd=True) as tty:
        with progress_for(tty) as progress:
            assert isinstance(progress, BarProgress)
            write_image(tmp_path / "img", header, b"k" * 1024, memfile, key=key, progress=progress)
        tty.flush()
        shown = drain(controller)
    os.close(controller)
    assert "checkpoint" in shown
    assert "2.0/2.0 MiB" in shown  # bytes done of the total


def test_bars_come_down_on_failure() -> None:
    controller, terminal = os.openpty()
    with open(terminal, "w", closefd=True) as tty:
        try:
            with progress_for(tty) as progress:
                progress.start("restore", 100)
                progress.advance(10)
                raise RuntimeError("stop")
        except RuntimeError:
            pass
        assert isinstance(progress, BarProgress)
        assert not progress.bars.live.is_started
    os.close(controller)
