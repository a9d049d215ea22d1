"""The pruning engine: a loaded task, its statistics and rankings, and fast candidate evaluation.

Built once per worker, it holds the model once. ``evaluate`` applies a per-layer sparsity vector from
the rankings (no re-scoring of small layers, no model reload) while the task scores the model: each
layer's weight is swapped for its pruned version only inside that layer's own forward pass, so at most
one layer's pruned copy exists at a time and the parameters never stop holding the dense weights.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunehive.search.space import Layer
from prunehive.workers.allocator import release_freed
from prunehive.workers.apply import CandidateMasks, candidate_masks, output_keep, recover
from prunehive.workers.calibration import ALL, Statistics
from prunehive.workers.contracts import EvalResult, SplitMetrics
from prunehive.workers.flops import ChannelFlops
from prunehive.workers.kl import DenseReference, score_splits
from prunehive.workers.layers import count_flops, count_params, find_prunable_layers
from prunehive.workers.masks import Granularity, Ranking
from prunehive.workers.metrics import Metric, get_metric, random_metric, statistics_read, wanda
from prunehive.workers.structured import prune_channels
from prunehive.workers.tasks.base import Split, Task

Swapped = list[tuple[torch.Tensor, torch.Tensor]]


def _put_back(swapped: Swapped) -> None:
    """Give every parameter a hook redirected its own tensor back."""
    while swapped:
        param, tensor = swapped.pop()
        param.data = tensor


class PruningEngine:
    """One task + one metric + one granularity, ready to evaluate any sparsity vector."""

    reference: DenseReference | None = None  # the dense model's validation outputs (fitness kl; workers/kl.py)

    def __init__(
        self,
        task: Task,
        metric: str = "magnitude",
        granularity: str = "unstructured",
        per_row: bool = False,
        calibration_batches: int = 8,
        seed: int = 0,
        device: str = "cpu",
        with_grads: bool | None = None,
    ) -> None:
        """``with_grads``: collect G and F whatever the metric (a metric search's formulas may read G);
        None collects exactly what ``metric`` reads."""
        self.task = task
        self.device = torch.device(device)
        self.metric_name = metric
        self.metric: Metric = get_metric(metric)
        self.granularity = Granularity.parse(granularity, per_row=per_row)
        self.seed = seed
        self.model = task.model().to(self.device)  # on a GPU too, in the dtype it was loaded in
        self.example = task.example_input().to(self.device)
        names = (
            task.channel_prunable_layers(self.model)
            if self.granularity.kind == "channel"
            else task.prunable_layers(self.model)
        )
        all_layers = find_prunable_layers(self.model, names, self.example)
        # N:M skips layers whose rows don't split into whole groups; they stay dense.
        self.layers: list[Layer] = [lay for lay in all_layers if self.granularity.supports(lay.shape)]
        self.skipped = [lay.name for lay in all_layers if lay not in self.layers]
        if not self.layers:
            raise ValueError(f"task {task.name!r} has no layer that {self.granularity.label} pruning can apply to")
        modules = dict(self.model.named_modules())
        self.modules: dict[str, nn.Linear | nn.Conv2d] = {lay.name: modules[lay.name] for lay in self.layers}  # type: ignore[misc]
        self.total_flops, _ = count_flops(self.model, self.example)
        self.total_params = count_params(self.model)
        channel = self.granularity.kind == "channel"
        self.channel_flops = ChannelFlops(self.model, self.names, self.example) if channel else None
        reads = statistics_read(metric) | (ALL if with_grads else frozenset())
        if with_grads is False:
            reads -= {"G", "F"}
        self.stats = Statistics(task, self.model, self.names, calibration_batches, reads)
        self.rankings = self._rank()

    @property
    def names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    @property
    def dense(self) -> dict[str, torch.Tensor]:
        """The prunable layers' dense weights: the parameters themselves (no copy is kept)."""
        return {n: m.weight.detach() for n, m in self.modules.items()}

    def scores(self, name: str, metric: Metric | None = None) -> torch.Tensor:
        if metric is not None:
            return metric(self.stats.layer(name, ALL - {"G", "F"} | self.stats.gradients))
        return self._score(name, self.metric_name, self.metric)

    def _score(self, name: str, metric_name: str, metric: Metric) -> torch.Tensor:
        """Scores of one layer by one metric, reading only the statistics it reads."""
        stats = self.stats.layer(name, statistics_read(metric_name))
        if metric_name == "random":
            return random_metric(stats, seed=self.seed + self.names.index(name))
        return metric(stats)

    def _rank(self) -> dict[str, Ranking]:
        """The current metric's rankings; each recomputes its scores from the statistics when it keeps no rank."""
        out = {}
        for n, module in self.modules.items():
            scores = functools.partial(self._score, n, self.metric_name, self.metric)
            out[n] = Ranking.build(scores, self.granularity, module.weight.element_size())
        return out

    def use_metric(self, name: str) -> None:
        """Rank by another metric (a metric search's candidate expression). Only the current metric's
        rankings are kept: re-ranking costs a sort of the small layers, keeping more would cost memory."""
        if name == self.metric_name:
            return
        metric = get_metric(name)
        missing = statistics_read(name) & {"G", "F"} - self.stats.gradients
        if missing:
            raise ValueError(f"metric {name!r} needs gradients; build the engine with with_grads=True")
        self.metric_name, self.metric = name, metric
        self.rankings = self._rank()

    def outlier_ratios(self, m: float = 5.0) -> list[float]:
        """OWL's per-layer share of Wanda scores above ``m`` times the layer mean."""
        out = []
        for n in self.names:
            score = wanda(self.stats[n])
            out.append(float((score > m * score.mean()).float().mean()))
        return out

    # ---- masks --------------------------------------------------------------------------
    def as_dict(self, sparsity: Mapping[str, float] | Iterable[float]) -> dict[str, float]:
        """Accept a name->sparsity mapping or a vector in layer order; check names and range."""
        if isinstance(sparsity, Mapping):
            unknown = set(sparsity) - set(self.names)
            if unknown:
                raise ValueError(f"unknown layers {sorted(unknown)}; prunable layers are {self.names}")
            out = {n: float(sparsity.get(n, 0.0)) for n in self.names}
        else:
            values = [float(v) for v in sparsity]
            if len(values) != len(self.names):
                raise ValueError(f"expected {len(self.names)} per-layer sparsities, got {len(values)}")
            out = dict(zip(self.names, values, strict=False))
        for n, v in out.items():
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"sparsity of layer {n!r} is {v}, outside [0, 1]")
        return out

    def masks(self, sparsity: Mapping[str, float] | Iterable[float]) -> dict[str, torch.Tensor]:
        return {n: self.rankings[n].mask(s) for n, s in self.as_dict(sparsity).items()}

    def candidate(self, sparsity: Mapping[str, float] | Iterable[float]) -> CandidateMasks:
        """The candidate's keep-masks by parameter name, as ``workers/apply.py`` applies them."""
        return candidate_masks(self.model, self.masks(sparsity), self.granularity.kind == "channel")

    def pruned_counts(self, sparsity: Mapping[str, float]) -> dict[str, int]:
        """Weights each layer loses at ``sparsity``: from the rankings alone, equal to counting the masks."""
        return {n: self.rankings[n].pruned_weights(s) for n, s in sparsity.items()}

    @contextlib.contextmanager
    def pruned(self, sparsity: Mapping[str, float] | Iterable[float]) -> Iterator[nn.Module]:
        """The model computing as if pruned to ``sparsity`` while the block runs (forward passes only).

        A hook before each pruned layer's forward puts back the weight the previous one swapped and swaps
        this layer's weight for dense x keep-mask, so at most one layer's pruned copy exists at a time
        (Linear and Conv2d layers never nest) and the dense weights are never written: they come back bit
        for bit. Layers kept dense get no hook.
        """
        swapped: Swapped = []
        handles: list[RemovableHandle] = []
        try:
            for n, s in self.as_dict(sparsity).items():
                if self.rankings[n].pruned_count(s) > 0:
                    handles.append(self._hook(self.modules[n], self.rankings[n], s, swapped))
            yield self.model
        finally:
            for handle in handles:
                handle.remove()
            _put_back(swapped)

    def _hook(self, module: nn.Module, ranking: Ranking, s: float, swapped: Swapped) -> RemovableHandle:
        prune = ranking.pruner(s)  # dense x ranking.mask(s): the weight ``apply`` writes, never written here
        channel = self.granularity.kind == "channel" and module.bias is not None
        bias_keep = output_keep(ranking.mask(s)) if channel else None  # the bias rule ``apply`` uses
        large = ranking.stored is None  # no stored rank: a big layer, whose temporaries go back to the OS

        def pre(mod: nn.Module, _args: Any) -> None:
            _put_back(swapped)
            if large:
                release_freed()
            weight: torch.Tensor = mod.weight  # type: ignore[assignment]
            swapped.append((weight, weight.data))
            weight.data = prune(weight.data)
            if bias_keep is not None:  # channel: removed outputs lose their bias
                bias: torch.Tensor = mod.bias  # type: ignore[assignment]
                swapped.append((bias, bias.data))
                bias.data = bias.data * bias_keep

        return module.register_forward_pre_hook(pre)

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(
        self,
        sparsity: Mapping[str, float] | Iterable[float],
        splits: tuple[Split, ...] = ("validation",),
        recovery_steps: int = 0,
        limit: int | None = None,
    ) -> EvalResult:
        """Prune to ``sparsity``, (optionally fine-tune), score on ``splits`` (their first ``limit`` items
        where given), restore dense."""
        start = time.perf_counter()
        values = self.as_dict(sparsity)
        if recovery_steps > 0:
            metrics = self._finetuned(values, splits, recovery_steps, limit)
        else:
            with self.pruned(values):
                metrics = self._score_splits(splits, limit)
        achieved, per_layer, params, flops = self._measure(values)
        return EvalResult(metrics, achieved, per_layer, params, flops, time.perf_counter() - start)

    def _score_splits(self, splits: tuple[Split, ...], limit: int | None = None) -> dict[str, SplitMetrics]:
        return score_splits(self.task, self.model, splits, limit, self.reference)

    def _finetuned(
        self, values: dict[str, float], splits: tuple[Split, ...], steps: int, limit: int | None = None
    ) -> dict[str, SplitMetrics]:
        """Recovery (``workers/apply.py:recover``) in place, score, and load back a snapshot of the whole
        model (training moves every parameter, pruned or not)."""
        candidate = self.candidate(values)  # all masks first: zeroing weights must not change the ranking
        snapshot = copy.deepcopy(self.model.state_dict())
        try:
            recover(self.task, self.model, candidate, steps)
            return self._score_splits(splits, limit)
        finally:
            self.model.load_state_dict(snapshot)

    def _measure(self, sparsity: Mapping[str, float]) -> tuple[float, dict[str, float], int, int]:
        """Achieved sparsity, per-layer sparsity, nonzero parameters and forward FLOPs of a candidate.

        Unstructured and N:M: each layer's FLOPs scale with its density, i.e. the multiply-adds of its
        nonzero weights (what a sparse kernel executes; a dense kernel would run them all). Channel: the
        FLOPs of the physically smaller model ``export`` builds, with the consumers' removed inputs too
        (see ``ChannelFlops``).
        """
        pruned = self.pruned_counts(sparsity)
        per_layer: dict[str, float] = {}
        removed, prunable, saved = 0, 0, 0.0
        for lay in self.layers:
            k = pruned[lay.name]
            per_layer[lay.name] = k / lay.params
            saved += lay.flops * k / lay.params
            removed += k
            prunable += lay.params
        if self.channel_flops is not None:
            channels = {n: self.rankings[n].pruned_count(s) for n, s in sparsity.items()}
            which = {n: self.rankings[n].rank < k for n, k in channels.items()} if self.channel_flops.coupled else None
            flops = self.channel_flops.count(channels, which)
        else:
            flops = int(self.total_flops - saved)
        return removed / prunable, per_layer, self.total_params - removed, flops

    # ---- export -------------------------------------------------------------------------
    def export(
        self, sparsity: Mapping[str, float] | Iterable[float], recovery_steps: int = 0, shrink: bool = True
    ) -> nn.Module:
        """The candidate as a user saves it: a copy with the pruned weights zeroed in plain parameters (no
        ``torch.nn.utils.prune`` reparametrisation), fine-tuned first where ``recovery_steps`` asks; for
        ``channel`` with ``shrink``, the physically smaller model (removed channels taken out)."""
        values = self.as_dict(sparsity)
        shrunk = self.granularity.kind == "channel" and shrink
        if shrunk and recovery_steps == 0:  # every zeroed entry is removed: no masked copy needed first
            model = self.model
        else:
            model = copy.deepcopy(self.model)
            recover(self.task, model, self.candidate(values), recovery_steps)
        if not shrunk:
            return model
        plan = {n: self.rankings[n].removed_channels(s) for n, s in values.items()}
        return prune_channels(model, plan, self.example)  # a copy
