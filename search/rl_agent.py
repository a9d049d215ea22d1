"""The RL strategy's pieces that know nothing of ask/tell: AMC's budget rule, the action map onto
the feasible band, the small networks and their JSON form.

The action map is why the agent can explore at all at high sparsity (see ``search/rl.py``): an
action in [0, 1] is spread over the sparsities layer t can actually take, so two different actions
are always two different sparsities, never one clamped value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn


def feasible_range(
    t: int, placed: float, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float
) -> tuple[float, float]:
    """AMC's rule: the sparsities layer t may take so the later layers can still meet the target.

    ``placed`` is sum_{j<t} w_j x_j. With R = target - placed still to remove, layer t must lie in
    [(R - sum_{j>t} w_j hi_j) / w_t, (R - sum_{j>t} w_j lo_j) / w_t] intersected with its bounds.
    """
    w_t = float(weights[t])
    lower, upper = float(lo[t]), float(hi[t])
    if w_t > 1e-15:
        remaining = target - placed
        lower = max(lower, (remaining - float(weights[t + 1 :] @ hi[t + 1 :])) / w_t)
        upper = min(upper, (remaining - float(weights[t + 1 :] @ lo[t + 1 :])) / w_t)
    return min(lower, upper), upper  # rounding can cross them: the upper end wins, as in AMC


def clamp_sparsity(
    t: int, proposed: float, placed: float, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float
) -> float:
    """Clip layer t's proposed sparsity into ``feasible_range``."""
    lower, upper = feasible_range(t, placed, weights, lo, hi, target)
    return float(min(max(proposed, lower), upper))


def action_band(centre: float, spread: float, lower: float, upper: float) -> tuple[float, float, float]:
    """(low, centre, high): ``centre`` (clipped into [lower, upper]) give or take ``spread``, inside
    [lower, upper]. Actions 0, 0.5 and 1 land on low, centre and high."""
    c = min(max(centre, lower), upper)
    return max(lower, c - spread), c, min(upper, c + spread)


def to_sparsity(a: float, band: tuple[float, float, float]) -> float:
    """Piecewise-linear map of an action in [0, 1] onto the band: strictly increasing wherever the
    band has width, so exploration noise always changes the sparsity."""
    low, c, high = band
    return c - (1.0 - 2.0 * a) * (c - low) if a < 0.5 else c + (2.0 * a - 1.0) * (high - c)


def to_action(x: float, band: tuple[float, float, float]) -> float:
    """The inverse of ``to_sparsity`` (a sparsity outside the band, such as a heuristic's, gives the
    nearer end); a band without width gives 0.5."""
    low, c, high = band
    if x < c and c - low > 1e-12:
        return max(0.0, 0.5 - 0.5 * (c - x) / (c - low))
    if x > c and high - c > 1e-12:
        return min(1.0, 0.5 + 0.5 * (x - c) / (high - c))
    return 0.5


@contextmanager
def one_thread() -> Iterator[None]:
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


def welford(stats: tuple[int, float, float], x: float) -> tuple[int, float, float]:
    n, mean, m2 = stats
    n += 1
    delta = x - mean
    mean += delta / n
    return n, mean, m2 + delta * (x - mean)


def mlp(n_in: int, hidden: int, sigmoid: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, 1))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def tensor_to_json(x: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(x.dtype).removeprefix("torch."), "shape": list(x.shape), "data": x.flatten().tolist()}


def tensor_from_json(d: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(d["data"], dtype=getattr(torch, d["dtype"])).reshape(d["shape"])


def optim_state(opt: torch.optim.Optimizer) -> list[list[Any]]:
    return [
        [int(k), {name: tensor_to_json(v) if torch.is_tensor(v) else v for name, v in s.items()}]
        for k, s in opt.state_dict()["state"].items()
    ]


def load_optim_state(opt: torch.optim.Optimizer, data: list[list[Any]]) -> None:
    state = {int(k): {n: tensor_from_json(v) if isinstance(v, dict) else v for n, v in s.items()} for k, s in data}
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
