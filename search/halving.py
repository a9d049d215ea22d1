"""Stage bookkeeping for multi-fidelity selection: successive halving (random, bayesian) and
multi-step selection (evolution, evopress), as EvoPress does it.

A rung of fresh candidates is asked at stage 0; once all of them are told (a barrier), the best
``survivors[0]`` are asked again at stage 1, and so on up to the last stage. A promoted candidate is
a new candidate with the same vector and meta, ``meta["fidelity"]`` one higher and ``meta["tokens"]``
that stage's tokens, so every trial row says what it was scored on and the budget counts every
evaluation at every stage. Values at different stages are not comparable, so :func:`top_stage_best`
only compares candidates of the highest stage reached. Without ``fidelity`` there is one stage at
full fidelity (no ``tokens``): a rung is then a plain generation with a barrier at its end.

The state (rung, stage, what is left to ask) is a few integers; promoted vectors are read back from
the told history the runner hands over on resume, so no (id, stage) is ever asked twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal

if TYPE_CHECKING:
    from prunehive.search.space import SearchSpace
    from prunehive.search.strategy import Strategy

Fresh = Callable[[int, int], Proposal]  # (offset in this ask, ordinal among fresh candidates) -> proposal
Told = list[tuple[Candidate, Outcome]]
RungKey = Literal["rung", "generation"]  # the CandidateMeta key a rung number is recorded under
StageKey = Literal["rung", "generation", "fidelity", "tokens", "origin", "promoted_from", "levels"]
STAGE_KEYS: tuple[StageKey, ...] = ("rung", "fidelity", "tokens", "origin", "promoted_from")


def check_stages(fidelity: list[int] | None, survivors: list[int] | None) -> tuple[list[int] | None, list[int]]:
    """Stages as the spec states them: both lists or neither, of equal length, fidelity increasing,
    survivors decreasing, all at least one. No stages is one stage that keeps its best."""
    if fidelity is None and survivors is None:
        return None, [1]
    if fidelity is None or survivors is None:
        raise ValueError("give fidelity and survivors together (one entry per selection stage)")
    if len(fidelity) != len(survivors) or not fidelity:
        raise ValueError(f"fidelity {fidelity} and survivors {survivors} must have the same, non-zero length")
    if any(int(v) < 1 for v in [*fidelity, *survivors]):
        raise ValueError("fidelity and survivors must be at least 1")
    if any(b <= a for a, b in zip(fidelity, fidelity[1:], strict=False)):
        raise ValueError(f"fidelity must increase from stage to stage, got {fidelity}")
    if any(b >= a for a, b in zip(survivors, survivors[1:], strict=False)):
        raise ValueError(f"survivors must decrease from stage to stage, got {survivors}")
    return [int(v) for v in fidelity], [int(v) for v in survivors]


def top_stage_best(history: list[tuple[Candidate, Outcome]], k: int = 1) -> list[Candidate]:
    """The ``k`` best complete candidates, best first, among those scored at the highest stage reached (a
    lower stage's value is measured on fewer tokens and does not compete with it)."""
    done = [(c, o) for c, o in history if o.state == "complete"]
    if not done:
        return []
    top = max(int(c.meta.get("fidelity", 0)) for c, _ in done)
    ranked = sorted((co for co in done if co[0].meta.get("fidelity", 0) == top), key=lambda co: -co[1].values[0])
    return [c for c, _ in ranked[:k]]


def staged_candidate(
    space: SearchSpace, ident: int, vector: np.ndarray, meta: CandidateMeta, keep_on_grid: bool = False
) -> Candidate:
    """A proposal as a candidate: repaired onto the budget, unless it is a promoted one (whose vector
    must stay bit for bit the one already scored) or, with ``keep_on_grid``, already one level per
    layer meeting the budget (a level switch, which repairing again could undo); level indices
    recorded in a discrete space."""
    keep = "promoted_from" in meta or (keep_on_grid and space.on_grid(vector))
    x = np.asarray(vector, dtype=np.float64) if keep else space.repair(vector)
    if space.discrete:
        meta = {**meta, "levels": space.level_indices(x)}
    return Candidate(ident, [float(v) for v in x], meta=meta)


class Halving:
    """One rung at a time: ``size`` fresh candidates at stage 0 (``first`` for the first rung), then the
    best ``survivors[i]`` of stage i at stage i + 1.

    Options for the strategies that use it differently:
      size: a number, or a function asked at the start of each rung (a rung's size may depend on
        what the last one found).
      key: the meta key (a ``RungKey``) the rung number is recorded under ("generation" for a
        generational search).
      shrink: shrink a rung when the budget left cannot pay for it and its promotions, so the last
        rung still reaches the last stage (else a rung is cut wherever the budget ends).
      rescore_origin: the origin of a candidate of an earlier rung that ``propose``'s ``rescore``
        sends to the last stage again, next to this rung's survivors.
    """

    def __init__(
        self,
        fidelity: list[int] | None,
        survivors: list[int] | None,
        size: int | Callable[[], int],
        first: int | None = None,
        *,
        key: RungKey = "rung",
        shrink: bool = True,
        rescore_origin: str = "rescored",
    ) -> None:
        self.fidelity, self.survivors = check_stages(fidelity, survivors)
        if (isinstance(size, int) and size < 1) or (first is not None and first < 1):
            raise ValueError(f"a rung needs at least one candidate, got {size}")
        self.size, self.first = size, first
        self.key, self.shrink, self.rescore_origin = key, shrink, rescore_origin
        self.rung = 0
        self.stage = 0
        self.left: int | None = None  # fresh candidates still to ask in this rung; None: rung not started
        self.fresh = 0  # fresh candidates asked so far (warm starts and seeds go first)
        self.promote: list[int] = []  # ids to ask again at the current stage (> 0)

    @property
    def last(self) -> int:
        return len(self.survivors) - 1

    def meta(self) -> CandidateMeta:
        """The rung (under ``key``), the stage and its tokens, in that order (the trial rows' key order)."""
        meta = CandidateMeta()
        meta[self.key] = self.rung
        meta["fidelity"] = self.stage
        if self.fidelity is not None:
            meta["tokens"] = self.fidelity[self.stage]
        return meta

    def _rung_size(self, remaining: int) -> int:
        """The rung's size, or (``shrink``) the largest whose promotions still fit in ``remaining``."""
        if self.rung == 0 and self.first is not None:
            n = self.first
        else:
            n = self.size() if callable(self.size) else self.size
        while self.shrink and n > 1 and n + sum(min(n, s) for s in self.survivors[:-1]) > remaining:
            n -= 1
        return n

    def propose(
        self,
        n: int,
        strategy: Strategy,
        fresh: Fresh,
        dropped: Callable[[list[Candidate]], None] | None = None,
        *,
        rescore: Callable[[], list[int]] | None = None,
        ended: Callable[[Told], None] | None = None,
    ) -> list[Proposal]:
        """Up to ``n`` proposals: fresh ones at stage 0, promoted ones later; none while a stage's last
        results are out. ``dropped`` hears of the candidates a stage did not promote; ``rescore`` names
        earlier candidates to score again at the last stage; ``ended`` hears a rung's last stage,
        ranked best first, when the rung ends."""
        out: list[Proposal] = []
        while len(out) < n:
            if self.left is None:  # a new rung starts at a barrier: nothing is pending
                self.left = self._rung_size(strategy.budget - strategy.told)
            if self.stage == 0 and self.left > 0:
                self.left -= 1
                self.fresh += 1
                vector, meta = fresh(len(out), self.fresh - 1)
                out.append((vector, {**meta, **self.meta()}))
            elif self.stage > 0 and self.promote:
                out.append(self._promoted(self.promote.pop(0), strategy.history))
            elif not strategy.pending and not out:
                self._advance(strategy.history, dropped, rescore, ended)
            else:
                break  # the stage's barrier: wait for its last results
        return out

    def _promoted(self, ident: int, history: Told) -> Proposal:
        """A told candidate asked again at the current stage: promoted from this rung, or re-scored."""
        source = next(c for c, _ in reversed(history) if c.id == ident)
        kept = source.meta.copy()  # the source's own keys, in their order, less those of its stage
        for key in (*STAGE_KEYS, self.key, "levels"):
            kept.pop(key, None)
        origin = "promoted" if source.meta.get(self.key) == self.rung else self.rescore_origin
        meta: CandidateMeta = {**kept, "origin": origin, "promoted_from": ident, **self.meta()}
        return np.asarray(source.sparsity, dtype=np.float64), meta

    def this_rung(self, history: Told, stage: int | None = None) -> Told:
        """Told candidates of the current rung (at ``stage``), newest first: the newest entries of the
        history, so the scan stops at the first older one."""
        out = []
        for cand, outcome in reversed(history):
            if cand.meta.get(self.key) != self.rung:
                break
            if stage is None or cand.meta.get("fidelity") == stage:
                out.append((cand, outcome))
        return out

    def _advance(
        self,
        history: Told,
        dropped: Callable[[list[Candidate]], None] | None,
        rescore: Callable[[], list[int]] | None,
        ended: Callable[[Told], None] | None,
    ) -> None:
        """The current stage is fully told: promote its best, or end the rung."""
        scored = [(c, o) for c, o in self.this_rung(history, self.stage) if o.state == "complete"]
        ranked = sorted(
            (co for co in scored if math.isfinite(co[1].values[0])), key=lambda co: (-co[1].values[0], co[0].id)
        )
        if self.stage < self.last:
            promote = [c.id for c, _ in ranked[: self.survivors[self.stage]]]
            if dropped is not None:
                dropped([c for c, _ in scored if c.id not in promote])
            if promote:
                self.stage += 1
                self.promote = promote + (rescore() if rescore is not None and self.stage == self.last else [])
                return
        if ended is not None:
            ended(ranked)
        self.rung += 1
        self.stage = 0
        self.promote = []
        self.left = None

    def decided(self, rung: int, stage: int) -> bool:
        """Whether the promotions out of ``stage`` of ``rung`` have been made (so a candidate scored
        there and not promoted is out of the running)."""
        return rung < self.rung or (rung == self.rung and stage < self.stage)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rung": self.rung,
            "stage": self.stage,
            "left": self.left,
            "fresh": self.fresh,
            "promote": list(self.promote),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rung = int(state["rung"])
        self.stage = int(state["stage"])
        self.left = None if state["left"] is None else int(state["left"])
        self.fresh = int(state["fresh"])
        self.promote = [int(i) for i in state["promote"]]


def make_halving(
    fidelity: list[int] | None,
    survivors: list[int] | None,
    rung: int | None,
    *,
    default: int | None = None,
    first: int | None = None,
) -> Halving | None:
    """Stages when the spec gives them, else None. A rung holds ``rung`` fresh candidates, by default
    ``default`` or else twice ``survivors[0]`` (halving: half of the first stage goes on)."""
    checked, kept = check_stages(fidelity, survivors)
    if checked is None:
        if rung is not None:
            raise ValueError("rung: only with fidelity and survivors (a multi-fidelity search)")
        return None
    size = rung if rung is not None else default if default is not None else 2 * kept[0]
    return Halving(checked, kept, size, first)
