"""The ask/tell contract every search strategy follows.

Strategies maximise ``Outcome.values`` (a tuple: one objective, or two for NSGA-II). They never
touch Ray, MLflow or SQL: the runner asks, evaluates wherever it likes, and tells. All state is
plain JSON-able data so a job can resume in another process. The runner keeps the told history
(it has to record every trial anyway), so a checkpoint stays the same size as a job grows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypedDict, cast

import numpy as np

from prunehive.search.options import StrategyOptions
from prunehive.search.space import SearchSpace

OutcomeState = Literal["complete", "failed"]


class CandidateMeta(TypedDict, total=False):
    """What a candidate records beside its vector: how it was made and what it is scored at. It is
    stored as is in the trial row and the checkpoint, so a key's name and type are part of the JSON."""

    origin: str  # every strategy: how the vector was made (uniform, warm-start, random, offspring, promoted...)
    parents: list[int]  # evolution, evopress, gp: the ids an offspring was bred from
    rung: int  # halving (random, bayesian, evolution with stages): the rung, so a stage is ranked within it
    generation: int  # evopress (its halving rung) and nsga2: the generation the candidate belongs to
    fidelity: int  # halving: the stage index (0 cheapest); the driver scores at it, best() ranks the top one
    tokens: int  # halving, when the spec gives fidelity: that stage's tokens, which the driver evaluates on
    promoted_from: int  # halving: the told candidate whose vector this one scores again at a higher stage
    levels: list[int]  # staged_candidate, evopress: each layer's level index in a discrete space
    trial: int  # bayesian: the Optuna trial (kept by promotions, so every stage reports to the same trial)
    raw: list[float]  # bayesian: the trial's unrepaired params; rl: the episode's sparsities, to replay it
    target: float  # nsga2: the overall sparsity this individual is repaired to (its own gene)
    anchor: list[float]  # rl: the prior episode's sparsities the episode's bands were centred on
    anchor_value: float  # rl: that prior's value; a replayed episode is rewarded by its gain over it
    expression: str  # gp: carried from _propose to _candidate, which moves it to Candidate.expression


Proposal = tuple[np.ndarray, CandidateMeta]  # a raw vector and its meta, as ``_propose`` returns them


def load_meta(data: Mapping[str, Any]) -> CandidateMeta:
    """A meta read back from JSON (a trial row, a checkpoint) as it was written. Its keys are not
    checked, so a checkpoint that holds a key no longer written still loads."""
    return cast(CandidateMeta, dict(data))


@dataclass
class Candidate:
    """One point to evaluate: per-layer sparsities in the space's layer order."""

    id: int
    sparsity: list[float]
    expression: str | None = None
    meta: CandidateMeta = field(default_factory=CandidateMeta)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "sparsity": list(self.sparsity), "expression": self.expression, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        sparsity = [float(x) for x in data["sparsity"]]
        return cls(int(data["id"]), sparsity, data.get("expression"), load_meta(data.get("meta", {})))


@dataclass
class Outcome:
    """What an evaluation gave: objective values to maximise, or a failure."""

    values: tuple[float, ...] = ()
    state: OutcomeState = "complete"

    @classmethod
    def failed(cls) -> Outcome:
        return cls((), "failed")


class Strategy(ABC):
    """Base class: id bookkeeping, budget, pending candidates, best-so-far, state_dict.

    Subclasses implement ``_propose`` (raw vectors; repaired here), ``_observe`` and, if they
    keep state of their own, ``_extra_state`` / ``_load_extra_state``.
    """

    name: ClassVar[str] = "base"
    n_objectives: ClassVar[int] = 1
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions  # the keyword arguments a spec may set
    warm_startable: ClassVar[bool] = False  # takes ``initial`` vectors: the baselines' allocations
    multi_fidelity: ClassVar[bool] = False  # takes ``fidelity`` / ``survivors`` stages

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The capabilities are declared once, on ``Options`` (which the spec reads without importing
        the strategy and its torch, optuna or deap), and mirrored here."""
        super().__init_subclass__(**kwargs)
        cls.warm_startable = cls.Options.warm_startable
        cls.multi_fidelity = cls.Options.multi_fidelity

    def __init__(self, space: SearchSpace, budget: int, seed: int = 0) -> None:
        if budget < 1:
            raise ValueError("search.budget must be at least 1 evaluation")
        self.space = space
        self.budget = budget
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.next_id = 0
        self.told = 0
        self.pending: dict[int, Candidate] = {}
        self.history: list[tuple[Candidate, Outcome]] = []

    # ---- the contract -------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.told >= self.budget

    def remaining_asks(self) -> int:
        return max(0, self.budget - self.told - len(self.pending))

    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to ``n`` new candidates; fewer (even none) while a generation is still out."""
        n = min(n, self.remaining_asks())
        if n <= 0:
            return []
        out = []
        for vector, meta in self._propose(n):
            cand = self._candidate(self.next_id, vector, meta)
            self.next_id += 1
            self.pending[cand.id] = cand
            out.append(cand)
        return out

    def tell(self, candidate_id: int, outcome: Outcome) -> None:
        if candidate_id not in self.pending:
            raise KeyError(f"candidate {candidate_id} was not asked or was already told")
        if outcome.state == "complete" and len(outcome.values) != self.n_objectives:
            raise ValueError(f"{self.name} expects {self.n_objectives} objective value(s), got {outcome.values}")
        cand = self.pending.pop(candidate_id)
        self.told += 1
        self.history.append((cand, outcome))
        self._observe(cand, outcome)

    def best(self) -> list[Candidate]:
        """The best candidate (one objective) or the Pareto front (several)."""
        done = [(c, o) for c, o in self.history if o.state == "complete"]
        if not done:
            return []
        if self.n_objectives == 1:
            return [max(done, key=lambda co: co[1].values[0])[0]]
        front = []
        for c, o in done:
            dominated = any(
                all(a >= b for a, b in zip(p.values, o.values, strict=True)) and p.values != o.values for _, p in done
            )
            if not dominated:
                front.append(c)
        return front

    def state_dict(self) -> dict[str, Any]:
        """The strategy's own state, of a size that does not grow with the trials told: the told
        candidates and their outcomes are the caller's to keep (the job store's trial rows)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "budget": self.budget,
            "next_id": self.next_id,
            "told": self.told,
            "rng": self.rng.bit_generator.state,
            "pending": [c.to_dict() for c in self.pending.values()],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any], history: Sequence[tuple[Candidate, Outcome]]) -> None:
        """Restore ``state`` together with every told candidate and outcome, in the order told."""
        if state.get("name") != self.name:
            raise ValueError(f"state belongs to strategy {state.get('name')!r}, not {self.name!r}")
        if len(history) != int(state["told"]):
            raise ValueError(f"the state was saved after {state['told']} tells, but the history holds {len(history)}")
        self.next_id = int(state["next_id"])
        self.told = int(state["told"])
        self.rng.bit_generator.state = state["rng"]
        self.pending = {c["id"]: Candidate.from_dict(c) for c in state["pending"]}
        self.history = list(history)
        self._load_extra_state(state["extra"])

    # ---- for subclasses -----------------------------------------------------------------
    @abstractmethod
    def _propose(self, n: int) -> list[Proposal]:
        """Return up to ``n`` raw vectors (any values; the base repairs them) with metadata."""

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        """Turn one proposal into a candidate; the default repairs the vector onto the budget."""
        return Candidate(ident, [float(x) for x in self.space.repair(vector)], meta=meta)

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:  # noqa: B027
        """React to a told outcome (default: nothing beyond the shared history)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what ``_extra_state`` saved; ``self.history`` is already restored, so anything
        that grows with the trials (caches, replay buffers, a surrogate's data) is rebuilt from it."""
