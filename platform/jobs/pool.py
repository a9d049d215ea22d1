"""Our own actor pool: ``ray.wait`` over in-flight calls, replacement actors on death.

Ray's ActorPool stalls or shrinks when an actor dies; here a dead actor is replaced and the
candidates it held are sent again, so a search always finishes with its full budget.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from prunehive.platform.jobs.cluster import Demand, Slots, require, wait_placed
from prunehive.workers.contracts import EvalReply, EvalRequest, WorkerInfo


class WorkerStartError(RuntimeError):
    """An evaluation worker could not be built (bad task, metric, or resources)."""


@dataclass
class _Call:
    actor: int
    requests: list[EvalRequest]
    started: float | None = None  # when it reached the head of its actor's queue
    handle: Any = None  # the actor it was sent to: a call failing on an actor already replaced replaces nothing


class ActorPool:
    """``size`` actors made by ``factory``; each may hold ``depth`` queued calls. ``factory(**options)``
    passes ``options`` (Ray actor options: the worker's placement slot) to the actor it makes."""

    def __init__(
        self,
        factory: Callable[..., Any],
        size: int,
        depth: int = 2,
        max_restarts: int | None = None,
        eval_timeout: float | None = None,
        resources: Any = None,
    ) -> None:
        """``resources``: the spec's section; with it, ``size`` is checked against the cluster (see
        ``cluster.require``) and ``start`` waits for placement up to ``resources.placement_timeout``."""
        self.factory = factory
        self.depth = depth
        self.eval_timeout = eval_timeout  # seconds per candidate; a call past it fails its candidates
        self.demand = Demand.of(resources) if resources is not None else None
        self.placement_timeout = float(resources.placement_timeout) if resources is not None else 0.0
        if self.demand is not None:
            size = require(self.demand, size)
        self.slots = Slots(self.demand, size) if self.demand is not None else None
        self.actors = [self._new(i) for i in range(size)]
        self.inflight: dict[Any, _Call] = {}
        self.restarts = 0
        self.max_restarts = 3 * size if max_restarts is None else max_restarts

    def start(self) -> list[WorkerInfo]:
        """Wait until every actor is placed and has built its task; a constructor error is a clear failure."""
        if self.demand is not None and self.slots is not None:
            wait_placed(self.slots, self.demand, self.placement_timeout)
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

    def submit(self, actor: int, requests: list[EvalRequest]) -> None:
        ref = self.actors[actor].evaluate_batch.remote(requests)
        head = not any(c.actor == actor for c in self.inflight.values())
        self.inflight[ref] = _Call(actor, requests, time.monotonic() if head else None, self.actors[actor])

    def wait(self, timeout: float = 1.0) -> list[EvalReply]:
        """The replies of the calls finished by now. Calls on a dead actor are resubmitted."""
        if not self.inflight:
            return []
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout)
        if not ready:
            ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        done: list[EvalReply] = []
        for ref in ready:
            call = self.inflight.pop(ref)
            self._advance(call.actor)
            try:
                done.extend(ray.get(ref))
            except (RayActorError, ActorDiedError, ActorUnavailableError):
                if call.handle is self.actors[call.actor]:  # not yet replaced by an earlier failed call
                    self._replace(call.actor)
                self.submit(call.actor, call.requests)
        return done + self._expire()

    def _advance(self, actor: int) -> None:
        """The next queued call on ``actor`` starts running now."""
        queued = [c for c in self.inflight.values() if c.actor == actor]
        if queued and all(c.started is None for c in queued):
            queued[0].started = time.monotonic()

    def _expire(self) -> list[EvalReply]:
        """Calls running past ``eval_timeout`` per candidate: their candidates fail, the actor is
        replaced (a stuck evaluation can't be interrupted), and its queued calls are sent again."""
        if self.eval_timeout is None:
            return []
        now = time.monotonic()
        out: list[EvalReply] = []
        for ref, call in list(self.inflight.items()):
            if call.started is None or now - call.started <= self.eval_timeout * len(call.requests):
                continue
            del self.inflight[ref]
            error = f"TimeoutError: evaluation took longer than {self.eval_timeout:g} s per candidate"
            out.extend(EvalReply(r.candidate_id, error=error) for r in call.requests)
            queued = [(r, c) for r, c in self.inflight.items() if c.actor == call.actor]
            for r, _ in queued:
                del self.inflight[r]
            self.restarts -= 1  # a time-out is not a crash: don't count it towards max_restarts
            self._replace(call.actor)
            for _, c in queued:
                self.submit(c.actor, c.requests)
        return out

    def _replace(self, index: int) -> None:
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise RuntimeError(f"evaluation workers died {self.restarts} times; giving up")
        with contextlib.suppress(Exception):  # the actor is already gone
            ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._new(index)
        # The calls still queued on the dead actor fail on their own and are resent then.

    def _new(self, index: int) -> Any:
        """A new actor in slot ``index``."""
        return self.factory(**(self.slots.options(index) if self.slots is not None else {}))

    def call_one(self, method: str, *args: Any) -> Any:
        return ray.get(getattr(self.actors[0], method).remote(*args))

    def shutdown(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # best effort at exit
                ray.kill(actor, no_restart=True)
        self.inflight.clear()
        if self.slots is not None:
            self.slots.release()


def _cause(exc: BaseException) -> str:
    """The root error's one-line message from a Ray error."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, BaseException) and cause is not exc:
        return _cause(cause)
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def auto_batch(seconds: float, budget: int, workers: int, depth: int) -> int:
    """Candidates per actor call: enough to make a call last ~50 ms (amortising the Ray call),
    but with no more than a twentieth of the budget in flight, so model-based strategies
    (Bayesian, RL, evolution) still learn from most results before they ask again."""
    amortise = int(0.05 / max(seconds, 1e-4))
    in_flight = max(1, (budget // 20) // (workers * depth))
    return max(1, min(16, amortise, in_flight))
