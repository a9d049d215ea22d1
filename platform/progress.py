"""A live progress bar for searches: trials done of budget, best so far, trials per second."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SearchProgress:
    """Rich bar on stderr (so ``--json`` stdout stays one object); a no-op when disabled."""

    def __init__(self, budget: int, done: int, quality: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()
        self.done0 = done
        self.done = done
        self.label = "best objective" if quality != "accuracy" else "best val accuracy"
        self.progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task = self.progress.add_task("search", total=budget, completed=done, best="", rate="")

    def __enter__(self) -> SearchProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def update(self, n: int, best: float | None) -> None:
        self.done += n
        rate = (self.done - self.done0) / max(time.perf_counter() - self.start, 1e-9)
        best_text = f"{self.label} {best:.4f}" if best is not None else ""
        self.progress.update(self.task, completed=self.done, best=best_text, rate=f"{rate:.1f} trials/s")
