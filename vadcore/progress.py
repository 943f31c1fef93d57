"""One rich progress style for every long loop (sharding, training epochs, scoring, downloads)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, *, enabled: bool = True, unit: str = "items",
                 completed: int = 0) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. Disabled (a no-op) in tests and inside Ray workers, where a live bar is noise.

    unit="bytes" shows sizes and the transfer rate instead of counts (downloads, checksums, unpacking);
    `completed` is where the bar starts (a resumed download)."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    from rich.table import Column

    if unit == "bytes":  # a narrower bar, and figures that never wrap mid-number on an 80-column pipe
        whole = Column(no_wrap=True)
        counts = (BarColumn(bar_width=20), DownloadColumn(table_column=whole), TransferSpeedColumn(table_column=whole))
    else:
        counts = (BarColumn(), MofNCompleteColumn())
    text = TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis"))
    columns = (text, *counts, TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda n=1: bar.advance(task, n)
