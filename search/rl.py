"""AMC-style reinforcement learning (He et al. 2018): a DDPG agent walks the layers in order.

At layer t the agent sees an embedding of the layer and of the budget spent so far, and picks
how far that layer's sparsity departs (by up to ``spread``) from the average the remaining
layers need. AMC's budget rule clips each action so the layers still to come can
reach the target inside their bounds; the base's repair then only fixes rounding. Every step of
an episode gets the episode's objective as its reward, as in AMC. The buffer keeps raw values and
rewards are normalised when sampled (minus the current moving-average baseline, over the running
std), so old and new transitions stay on one scale whatever the metric. With one reward for the
whole episode the critic is trained with discount 0 (it regresses the episode outcome of
(state, action)), which needs no target networks and is stable on ~100 episodes.

All randomness comes from one private ``torch.Generator``; the state dict stores weights, Adam
moments and the generator as plain lists. Each candidate's meta keeps its episode's unrepaired
sparsities, from which the episode's states and actions follow exactly, so the replay buffer is
rebuilt from the told history on resume and a restored agent continues exactly like the original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy

STATE_DIM = 10


def clamp_sparsity(
    t: int, proposed: float, placed: float, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float
) -> float:
    """AMC's rule: clip layer t's sparsity so the later layers can still meet the target.

    ``placed`` is sum_{j<t} w_j x_j. With R = target - placed still to remove, layer t must lie in
    [(R - sum_{j>t} w_j hi_j) / w_t, (R - sum_{j>t} w_j lo_j) / w_t] intersected with its bounds.
    """
    w_t = float(weights[t])
    lower, upper = float(lo[t]), float(hi[t])
    if w_t > 1e-15:
        rest_lo = float(weights[t + 1 :] @ lo[t + 1 :])
        rest_hi = float(weights[t + 1 :] @ hi[t + 1 :])
        remaining = target - placed
        lower = max(lower, (remaining - rest_hi) / w_t)
        upper = min(upper, (remaining - rest_lo) / w_t)
    return float(min(max(proposed, lower), upper))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run tiny-network maths on one thread: intra-op threads only add contention at this size
    (on a busy 2-core box, 120 episodes took 90 s with 2 threads and 3 s with 1) and one thread
    keeps float reductions in a fixed order, so a restored agent matches bit for bit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _welford(stats: tuple[int, float, float], x: float) -> tuple[int, float, float]:
    n, mean, m2 = stats
    n += 1
    delta = x - mean
    mean += delta / n
    return n, mean, m2 + delta * (x - mean)


def _mlp(n_in: int, hidden: int, sigmoid: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _tensor_to_json(x: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(x.dtype).removeprefix("torch."), "shape": list(x.shape), "data": x.flatten().tolist()}


def _tensor_from_json(d: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(d["data"], dtype=getattr(torch, d["dtype"])).reshape(d["shape"])


def _optim_state(opt: torch.optim.Optimizer) -> list[list[Any]]:
    return [
        [int(k), {name: _tensor_to_json(v) if torch.is_tensor(v) else v for name, v in s.items()}]
        for k, s in opt.state_dict()["state"].items()
    ]


def _load_optim_state(opt: torch.optim.Optimizer, data: list[list[Any]]) -> None:
    state = {int(k): {n: _tensor_from_json(v) if isinstance(v, dict) else v for n, v in s.items()} for k, s in data}
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


class RLStrategy(Strategy):
    """DDPG layer-by-layer agent with AMC's budget clamp, truncated-normal exploration and a
    moving-average reward baseline. Failed evaluations add nothing to the replay buffer.
    """

    name = "rl"

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        warmup: int | None = None,
        hidden: int = 64,
        lr_actor: float = 3e-4,
        lr_critic: float = 2e-3,
        noise: float = 0.3,
        noise_decay: float = 0.98,
        updates_per_tell: int = 8,
        batch_size: int = 64,
        buffer_size: int = 4000,
        baseline_decay: float = 0.9,
        spread: float = 0.3,
    ) -> None:
        super().__init__(space, budget, seed)
        if hidden < 1 or updates_per_tell < 0 or batch_size < 1 or buffer_size < 1:
            raise ValueError("hidden, batch_size and buffer_size must be >= 1, updates_per_tell >= 0")
        if noise < 0 or not 0 < noise_decay <= 1 or not 0 <= baseline_decay < 1:
            raise ValueError("need noise >= 0, 0 < noise_decay <= 1 and 0 <= baseline_decay < 1")
        self.warmup = min(10, max(1, budget // 5)) if warmup is None else int(warmup)
        self.noise, self.noise_decay = float(noise), float(noise_decay)
        self.updates_per_tell, self.batch_size, self.buffer_size = updates_per_tell, batch_size, buffer_size
        self.baseline_decay = float(baseline_decay)
        if spread <= 0:
            raise ValueError("spread must be > 0")
        self.spread = float(spread)
        self.gen = torch.Generator().manual_seed(seed)
        self.actor = _mlp(STATE_DIM, hidden, sigmoid=True)
        self.critic = _mlp(STATE_DIM + 1, hidden, sigmoid=False)
        with torch.no_grad():  # initialise from the private generator, not torch's global RNG
            for net in (self.actor, self.critic):
                for p in net.parameters():
                    bound = 1.0 / np.sqrt(p.shape[-1]) if p.dim() > 1 else 0.05
                    p.uniform_(-bound, bound, generator=self.gen)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.buffer: list[tuple[list[float], float, float]] = []  # (state, action in [0, 1], value)
        self.baseline: float | None = None  # moving average of the objective (AMC's baseline)
        self.stats = (0, 0.0, 0.0)  # Welford count, mean, M2 of the objective: rewards in std units
        self.learned_episodes = 0
        self._static = self._layer_features()

    def _layer_features(self) -> np.ndarray:
        """Per-layer part of the state: index, conv or not, out, in, kernel, params, FLOPs."""
        layers = self.space.layers
        rows = []
        for i, layer in enumerate(layers):
            kernel = int(np.prod(layer.shape[2:])) if len(layer.shape) > 2 else 1
            n_in = layer.shape[1] if len(layer.shape) > 1 else 1
            rows.append(
                [i, float(layer.kind.startswith("conv")), layer.shape[0], n_in, kernel, layer.params, layer.flops]
            )
        feats = np.asarray(rows, dtype=np.float64)
        return feats / np.maximum(feats.max(axis=0), 1.0)

    def _sigma(self) -> float:
        return self.noise * self.noise_decay ** max(0, self.learned_episodes)

    def _truncnorm(self, mean: float, sigma: float) -> float:
        """One draw of Normal(mean, sigma) truncated to [0, 1], by inverse CDF."""
        if sigma <= 0:
            return mean
        m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
        a, b = torch.special.ndtr((0 - m) / s), torch.special.ndtr((1 - m) / s)
        u = a + (b - a) * torch.rand((), generator=self.gen, dtype=torch.float64)
        return float((m + s * torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12))).clamp(0.0, 1.0))

    # ---- ask/tell ----------------------------------------------------------------------
    def _propose(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        with _one_thread():
            return self._rollouts(n)

    def _rollouts(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        lo, hi = self.space.bounds()
        w, target = self.space.weights(), self.space.target

        def choose(explore: bool, t: int, s: list[float], needed: float, placed: float) -> float:
            """Layer t's action (uniform in the warm-up, else the actor's plus noise), clamped."""
            if explore:
                a = float(torch.rand((), generator=self.gen, dtype=torch.float64))
            else:
                with torch.no_grad():
                    mu = float(self.actor(torch.tensor(s, dtype=torch.float32)).item())
                a = self._truncnorm(mu, self._sigma())
            return clamp_sparsity(t, needed + (a - 0.5) * 2.0 * self.spread, placed, w, lo, hi, target)

        out: list[tuple[np.ndarray, dict[str, Any]]] = []
        for k in range(n):
            explore = self.next_id + k < self.warmup
            x, _, _ = self._walk(partial(choose, explore))
            out.append((x, {"origin": "warmup" if explore else "agent", "raw": x.tolist()}))
        return out

    def _walk(self, choose: Callable[..., float]) -> tuple[np.ndarray, list[list[float]], list[float]]:
        """One episode: ``choose(t, state, needed, placed)`` gives layer t's sparsity.

        An action moves its layer away from the sparsity the remaining layers need on average
        (a = 0.5 keeps it there), so early layers can't starve the later ones, as raw [lo, hi]
        actions would. The recorded action is the clamped one, a function of the sparsity, so
        replaying the sparsities (``_remember``) gives back the same states and actions.
        """
        space, w = self.space, self.space.weights()
        rest = np.concatenate([np.cumsum(w[::-1])[::-1][1:], [0.0]])  # weight share after layer t
        x = np.zeros(space.dim)
        states: list[list[float]] = []
        actions: list[float] = []
        placed, prev = 0.0, 0.0
        for t in range(space.dim):
            used = placed / space.target if space.target > 0 else 0.0  # share of the target already met
            s = [*self._static[t].tolist(), used, float(rest[t]), prev]  # rest: budget weight still to place
            needed = (space.target - placed) / max(float(w[t] + rest[t]), 1e-12)
            x[t] = choose(t, s, needed, placed)
            prev = float(np.clip(0.5 + (x[t] - needed) / (2.0 * self.spread), 0.0, 1.0))
            placed += float(w[t] * x[t])
            states.append(s)
            actions.append(prev)
        return x, states, actions

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        if outcome.state != "complete":
            return
        value = float(outcome.values[0])
        self.stats = _welford(self.stats, value)
        previous = value if self.baseline is None else self.baseline
        self.baseline = self.baseline_decay * previous + (1 - self.baseline_decay) * value
        self._remember(candidate, value)
        if candidate.id >= self.warmup:
            self.learned_episodes += 1
        if self.told >= self.warmup and len(self.buffer) >= self.batch_size:
            with _one_thread():
                for _ in range(self.updates_per_tell):
                    self._update()

    def _remember(self, candidate: Candidate, value: float) -> None:
        """Replay the candidate's episode from its unrepaired sparsities into the buffer."""
        raw = [float(v) for v in candidate.meta["raw"]]
        _, states, actions = self._walk(lambda t, s, needed, placed: raw[t])
        self.buffer.extend((s, a, value) for s, a in zip(states, actions, strict=True))
        del self.buffer[: max(0, len(self.buffer) - self.buffer_size)]

    def _update(self) -> None:
        idx = torch.randint(len(self.buffer), (self.batch_size,), generator=self.gen).tolist()
        s = torch.tensor([self.buffer[i][0] for i in idx], dtype=torch.float32)
        a = torch.tensor([[self.buffer[i][1]] for i in idx], dtype=torch.float32)
        n, _, m2 = self.stats
        scale = float(np.sqrt(m2 / (n - 1))) if n > 1 and m2 > 0 else 1.0
        baseline = self.baseline or 0.0
        r = torch.tensor([[(self.buffer[i][2] - baseline) / scale] for i in idx], dtype=torch.float32)
        critic_loss = nn.functional.mse_loss(self.critic(torch.cat([s, a], dim=1)), r)
        self.opt_critic.zero_grad()
        critic_loss.backward()
        self.opt_critic.step()
        actor_loss = -self.critic(torch.cat([s, self.actor(s)], dim=1)).mean()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()

    # ---- state -------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "actor": {k: _tensor_to_json(v) for k, v in self.actor.state_dict().items()},
            "critic": {k: _tensor_to_json(v) for k, v in self.critic.state_dict().items()},
            "opt_actor": _optim_state(self.opt_actor),
            "opt_critic": _optim_state(self.opt_critic),
            "generator": self.gen.get_state().tolist(),
            "baseline": self.baseline,
            "stats": list(self.stats),
            "learned_episodes": self.learned_episodes,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict({k: _tensor_from_json(v) for k, v in state["actor"].items()})
        self.critic.load_state_dict({k: _tensor_from_json(v) for k, v in state["critic"].items()})
        _load_optim_state(self.opt_actor, state["opt_actor"])
        _load_optim_state(self.opt_critic, state["opt_critic"])
        self.gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.buffer = []
        for cand, outcome in self.history:
            if outcome.state == "complete":
                self._remember(cand, float(outcome.values[0]))
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        n, mean, m2 = state["stats"]
        self.stats = (int(n), float(mean), float(m2))
        self.learned_episodes = int(state["learned_episodes"])
