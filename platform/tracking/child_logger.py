"""Creates an MLflow job's child runs on a background thread, so the search loop never waits on MLflow."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prunehive.platform.tracking.tracker import Tracker


MAX_BATCH = 256  # child runs written in one go at most


class ChildLogger:
    """Creates child runs on a background thread so the search loop never waits on MLflow.

    What queued up while the last batch was written goes in the next one (see ``Tracker.log_children``).

    ``submit`` returns at once; finished run ids come back through ``on_logged(key, run_id)`` (called on
    the logger thread) and through :meth:`drain`. An error in the thread is re-raised by the next
    ``drain``/``close``; the thread keeps logging the items after it.
    """

    _STOP = object()

    def __init__(
        self, tracker: Tracker, parent_run_id: str, on_logged: Callable[[Any, str], None] | None = None
    ) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.on_logged = on_logged
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._done: dict[Any, str] = {}
        self._errors: list[BaseException] = []
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="prunehive-child-logger", daemon=True)
        self._thread.start()

    def submit(
        self, key: Any, name: str, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, Any]
    ) -> None:
        if self._closed:
            raise RuntimeError("ChildLogger is closed")
        self._queue.put((key, name, dict(params), dict(metrics), dict(tags)))

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _work(self) -> None:
        """Log whatever is queued as one batch (one transaction on MLflow's SQL store), until stopped."""
        while True:
            items = [self._queue.get()]
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            runs = [item for item in items if item is not self._STOP]
            try:
                if len(runs) == 1:
                    ids = [self.tracker.log_child(self.parent_run_id, *runs[0][1:])]
                else:
                    ids = self.tracker.log_children(self.parent_run_id, [item[1:] for item in runs]) if runs else []
                logged = {item[0]: run_id for item, run_id in zip(runs, ids, strict=True)}
                with self._lock:
                    self._done.update(logged)
                if self.on_logged is not None:
                    for key, run_id in logged.items():
                        self.on_logged(key, run_id)
            except BaseException as exc:  # surfaced on drain/close
                with self._lock:
                    self._errors.append(exc)
            finally:
                for _ in items:
                    self._queue.task_done()
            if len(runs) < len(items):
                return

    def _raise(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise RuntimeError(f"MLflow child logging failed for {len(errors)} run(s): {errors[0]!r}") from errors[0]

    def drain(self) -> dict[Any, str]:
        """Run ids logged since the last drain, by key. Raises (once) if logging failed; results are kept."""
        self._raise()
        with self._lock:
            done, self._done = self._done, {}
        return done

    def close(self, timeout: float | None = 60.0) -> dict[Any, str]:
        """Log everything still queued, stop the thread and return what ``drain`` would."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.pending} child run(s) still queued after {timeout}s")
        return self.drain()

    def __enter__(self) -> ChildLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
