"""Live progress bars on stderr (so ``--json`` stdout stays one object): searches, and a base for others."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunehive.workers.quality import Quality


class StderrBar:
    """A rich bar on stderr: a label, the bar, done of total, the given columns, elapsed time; a no-op when
    disabled. Used as a context manager."""

    def __init__(self, label: str, *columns: TextColumn, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            *columns,
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)


class SearchProgress(StderrBar):
    """Trials done of budget, best so far, trials per second."""

    def __init__(self, budget: int, done: int, quality: Quality, enabled: bool = True) -> None:
        super().__init__(
            "[bold]search", TextColumn("{task.fields[best]}"), TextColumn("{task.fields[rate]}"), enabled=enabled
        )
        self.enabled = enabled
        self.start = time.perf_counter()
        self.done0 = done
        self.done = done
        self.label = f"best val {quality.name}" if quality.higher_is_better else "best objective"
        self.task = self.progress.add_task("search", total=budget, completed=done, best="", rate="")

    def update(self, n: int, best: float | None) -> None:
        self.done += n
        rate = (self.done - self.done0) / max(time.perf_counter() - self.start, 1e-9)
        best_text = f"{self.label} {best:.4f}" if best is not None else ""
        self.progress.update(self.task, completed=self.done, best=best_text, rate=f"{rate:.1f} trials/s")
