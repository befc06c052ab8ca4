"""Progress of a checkpoint or a restore: bytes done, shown as the caller wants.

The image code reports one operation at a time through a :class:`Progress`:
``start(label, total)`` once, ``advance(n)`` once per chunk (megabytes, never
per page, so that reporting stays out of the copy loop's way), then
``finish()`` once on success. A failure never reaches ``finish()``; the
caller's ``with`` block (see :func:`progress_for`) closes the display.

:func:`progress_for` picks the display: rich progress bars (bytes, speed,
time left) when stderr is a terminal, otherwise one summary line at the end,
e.g. ``pyrunsc: checkpoint: 512.0 MiB in 0.84 s (610.2 MiB/s)``. Our own
code; runsc shows no progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichBars


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units, one decimal: ``1536`` -> ``1.5 KiB``."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


class Progress:
    """Receives progress; this base class ignores it (no display, no cost).

    Subclass it to show progress, or to observe it in tests. Byte counts are
    of the operation's payload (memory pages and the kernel blob, before
    compression), so that ``advance`` sums to ``total``.
    """

    def start(self, label: str, total: int) -> None:
        """An operation begins: ``label`` (``checkpoint``, ``restore``,
        ``verify``) over ``total`` bytes."""

    def advance(self, n: int) -> None:
        """``n`` more bytes are done."""

    def finish(self) -> None:
        """The operation completed."""


class SummaryProgress(Progress):
    """One line on ``stream`` when an operation finishes: bytes, seconds, speed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.label = ""
        self.done = 0
        self.t0 = 0.0

    def start(self, label: str, total: int) -> None:
        self.label, self.done, self.t0 = label, 0, time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n

    def finish(self) -> None:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        speed = format_bytes(int(self.done / elapsed))
        print(f"pyrunsc: {self.label}: {format_bytes(self.done)} in {elapsed:.2f} s ({speed}/s)",
              file=self.stream, flush=True)


class BarProgress(Progress):
    """rich progress bars on a terminal: bytes done and total, speed, time left.

    rich redraws from its own thread (10 times a second); ``advance`` only
    adds to a counter under rich's lock.
    """

    def __init__(self, stream: TextIO) -> None:
        self.bars = RichBars(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self.task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        self.bars.start()
        self.task = self.bars.add_task(label, total=total)

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bars.advance(self.task, n)

    def finish(self) -> None:
        if self.task is not None:
            task = self.bars.tasks[self.task]
            self.bars.update(self.task, completed=task.total)
        self.bars.stop()

    def close(self) -> None:
        self.bars.stop()


@contextmanager
def progress_for(stream: TextIO | None = None) -> Iterator[Progress]:
    """The progress display for ``stream`` (default: stderr): bars on a
    terminal, a summary line otherwise. The bars are taken down when the
    block ends, also on an exception."""
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        bars = BarProgress(out)
        try:
            yield bars
        finally:
            bars.close()
    else:
        yield SummaryProgress(out)
