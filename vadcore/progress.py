"""One rich progress style for every long loop (sharding, training epochs, scoring).

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
def progress_bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Bar]:
    """Yields a `Bar`. Disabled (a no-op) in tests and inside Ray workers, where a live bar is noise."""
    if not enabled:
        yield Bar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Elapsed(ProgressColumn):
        """Time since the bar opened, frozen when it closes (rich's own column freezes when the count is full)."""

        def render(self, task) -> Text:
            return Text(str(timedelta(seconds=int(task.elapsed or 0))), style="progress.elapsed")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Elapsed(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        try:
            yield Bar(progress, task)
        finally:
            progress.stop_task(task)
