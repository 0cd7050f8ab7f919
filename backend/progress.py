"""Progress display for the command line (rich, on stderr)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)


class StageProgress:
    """One progress bar for an assessment, driven by ``(stage, fraction, message)`` calls."""

    def __init__(self, progress: Progress):
        self._progress = progress
        self._task = progress.add_task("starting", total=1.0)

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        """Update the bar (the signature of the engine's progress callbacks)."""
        self._progress.update(self._task, completed=fraction, description=f"[bold]{stage}[/] {message}")

    def counter(self, label: str, total: int) -> "CounterProgress":
        """A ``(done, total)`` callback shown as its own bar."""
        return CounterProgress(self._progress, label, total)


class CounterProgress:
    """A ``(done, total)`` progress callback."""

    def __init__(self, progress: Progress, label: str, total: int):
        self._progress = progress
        self._task = progress.add_task(label, total=total)

    def __call__(self, done: int, total: int) -> None:
        """Update the bar."""
        self._progress.update(self._task, completed=done, total=total)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[StageProgress]:
    """A live progress bar on stderr (hidden when ``enabled`` is False or stderr is not a terminal)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield StageProgress(progress)
