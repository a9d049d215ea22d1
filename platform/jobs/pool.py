"""Our own actor pool: ``ray.wait`` over in-flight calls, replacement actors on death.

Ray's ActorPool stalls or shrinks when an actor dies; here a dead actor is replaced and the
candidates it held are sent again, so a search always finishes with its full budget.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError


class WorkerStartError(RuntimeError):
    """An evaluation worker could not be built (bad task, metric, or resources)."""


@dataclass
class _Call:
    actor: int
    items: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # when it reached the head of its actor's queue
    handle: Any = None  # the actor it was sent to: a call failing on an actor already replaced replaces nothing


class ActorPool:
    """``size`` actors made by ``factory``; each may hold ``depth`` queued calls."""

    def __init__(
        self,
        factory: Callable[[], Any],
        size: int,
        depth: int = 2,
        max_restarts: int | None = None,
        eval_timeout: float | None = None,
    ) -> None:
        self.factory = factory
        self.depth = depth
        self.eval_timeout = eval_timeout  # seconds per candidate; a call past it fails its candidates
        self.actors = [factory() for _ in range(size)]
        self.inflight: dict[Any, _Call] = {}
        self.restarts = 0
        self.max_restarts = 3 * size if max_restarts is None else max_restarts

    def start(self) -> list[dict[str, Any]]:
        """Wait until every actor has built its task; a constructor error is a clear failure."""
        try:
            return list(ray.get([a.describe.remote() for a in self.actors]))
        except RayTaskError as exc:
            raise WorkerStartError(_cause(exc)) from None
        except RayActorError as exc:
            raise WorkerStartError(_cause(exc)) from None

    def free_slots(self) -> list[int]:
        busy = [0] * len(self.actors)
        for call in self.inflight.values():
            busy[call.actor] += 1
        return [i for i, n in sorted(enumerate(busy), key=lambda x: x[1]) if n < self.depth]

    @property
    def idle(self) -> bool:
        return not self.inflight

    def submit(self, actor: int, items: list[Any], **kwargs: Any) -> None:
        ref = self.actors[actor].evaluate_batch.remote(items, **kwargs)
        head = not any(c.actor == actor for c in self.inflight.values())
        self.inflight[ref] = _Call(actor, items, kwargs, time.monotonic() if head else None, self.actors[actor])

    def wait(self, timeout: float = 1.0) -> list[tuple[list[Any], list[dict[str, Any]]]]:
        """Finished calls as (items sent, replies). Calls on a dead actor are resubmitted."""
        if not self.inflight:
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout)
        if not ready:
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            call = self.inflight.pop(ref)
            self._advance(call.actor)
            try:
                done.append((call.items, ray.get(ref)))
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                if call.handle is self.actors[call.actor]:  # not yet replaced by an earlier failed call
                    self._replace(call.actor)
                self.submit(call.actor, call.items, **call.kwargs)
        return done + self._expire()

    def _advance(self, actor: int) -> None:
        """The next queued call on ``actor`` starts running now."""
        queued = [c for c in self.inflight.values() if c.actor == actor]
        if queued and all(c.started is None for c in queued):
            queued[0].started = time.monotonic()

    def _expire(self) -> list[tuple[list[Any], list[dict[str, Any]]]]:
        """Calls running past ``eval_timeout`` per candidate: their candidates fail, the actor is
        replaced (a stuck evaluation can't be interrupted), and its queued calls are sent again."""
        if self.eval_timeout is None:
            return []
        now, out = time.monotonic(), []
        for ref, call in list(self.inflight.items()):
            if call.started is None or now - call.started <= self.eval_timeout * len(call.items):
                continue
            del self.inflight[ref]
            error = f"TimeoutError: evaluation took longer than {self.eval_timeout:g} s per candidate"
            out.append((call.items, [{"id": item[0], "error": error} for item in call.items]))
            queued = [(r, c) for r, c in self.inflight.items() if c.actor == call.actor]
            for r, _ in queued:
                del self.inflight[r]
            self.restarts -= 1  # a time-out is not a crash: don't count it towards max_restarts
            self._replace(call.actor)
            for _, c in queued:
                self.submit(c.actor, c.items, **c.kwargs)
        return out

    def _replace(self, index: int) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise RuntimeError(f"evaluation workers died {self.restarts} times; giving up")
        with contextlib.suppress(Exception):  # the actor is already gone
            ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self.factory()
        # The calls still queued on the dead actor fail on their own and are resent then.

    def call_all(self, method: str, *args: Any) -> list[Any]:
        return list(ray.get([getattr(a, method).remote(*args) for a in self.actors]))

    def call_one(self, method: str, *args: Any) -> Any:
        return ray.get(getattr(self.actors[0], method).remote(*args))

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # best effort at exit
                ray.kill(actor, no_restart=True)
        self.inflight.clear()


def _cause(exc: BaseException) -> str:
    """The root error's one-line message from a Ray error."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, BaseException) and cause is not exc:
        return _cause(cause)
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
