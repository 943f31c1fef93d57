"""One rich progress style for every long loop (sharding, training epochs, scoring, downloads).

A bar's clock runs from the moment its `with` block opens until it closes, not until its count is full: a stage
that opens it first and closes it last (set-up, the final validation and the save included) shows the time the
stage's record says it took.
"""
from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Iterator


class Bar:
    """`bar(n)` advances the count by n; `set_total` gives the count once the stage knows it, `describe` renames the
    phase ("step 2: flow mot: features" -> "step 2: flow mot"). A disabled bar does nothing."""

    def __init__(self, progress=None, task=None):
        self.progress, self.task = progress, task

    def __call__(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def set_total(self, total: int | None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def describe(self, description: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=description)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True, unit: str = "items",
                 completed: int = 0) -> Iterator[Bar]:
    """Yields a `Bar`. Disabled (a no-op) in tests and inside Ray workers, where a live bar is noise.

    unit="bytes" shows sizes and the transfer rate instead of counts (downloads, checksums, unpacking);
    `completed` is where the bar starts (a resumed download)."""
    if not enabled:
        yield Bar()
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    from rich.table import Column
    from rich.text import Text

    class Elapsed(ProgressColumn):
        """Time since the bar opened, frozen when it closes (rich's own column freezes when the count is full)."""

        def render(self, task) -> Text:
            return Text(str(timedelta(seconds=int(task.elapsed or 0))), style="progress.elapsed")

    if unit == "bytes":  # a narrower bar, and figures that never wrap mid-number on an 80-column pipe
        whole = Column(no_wrap=True)
        counts = (BarColumn(bar_width=20), DownloadColumn(table_column=whole), TransferSpeedColumn(table_column=whole))
    else:
        counts = (BarColumn(), MofNCompleteColumn())
    text = TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis"))
    with Progress(text, *counts, Elapsed(), TimeRemainingColumn(), transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed)
        try:
            yield Bar(progress, task)
        finally:
            progress.stop_task(task)
