"""A long build's progress on stderr: ``layer k/n``, elapsed time and an ETA.

Workers run inside Ray actors whose stderr reaches the driver (and the job log) line by line, so this
writes plain lines, not a live bar: on a terminal one line rewritten in place, elsewhere one line when
the first layer is done, then at most one every ``every`` seconds, and always the last.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class LayerProgress:
    """Reports ``done`` of ``total`` layers for ``label``; the ETA extrapolates the mean time per layer."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.perf_counter()
        self.done = 0

    def step(self, layer: str) -> None:
        """One more layer finished."""
        self.done += 1
        now = time.perf_counter()
        elapsed = now - self.start
        final = self.done >= self.total
        if not (self.live or final or self.done == 1 or now - self.last >= self.every):
            return
        self.last = now
        eta = elapsed / self.done * (self.total - self.done)
        line = (
            f"{self.label}: layer {self.done}/{self.total} ({layer}), "
            f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}"
        )
        if self.live:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        """The closing line: what was built, in how long."""
        if self.live and self.done < self.total:
            self.stream.write("\n")
        self.stream.write(f"{self.label}: {summary} in {_duration(time.perf_counter() - self.start)}\n")
        self.stream.flush()
