"""The pruning engine: a loaded task, its statistics and rankings, and fast candidate evaluation.

Built once per worker. ``evaluate`` applies a per-layer sparsity vector by slicing the cached
rankings (no re-scoring, no model reload), scores the model, optionally fine-tunes for a few
steps, and restores the dense weights afterwards.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from prunehive.search.space import Layer
from prunehive.workers.calibration import collect_stats
from prunehive.workers.contracts import EvalResult, SplitMetrics
from prunehive.workers.flops import ChannelFlops
from prunehive.workers.layers import count_flops, count_params, find_prunable_layers
from prunehive.workers.masks import Granularity, Ranking
from prunehive.workers.metrics import Metric, get_metric, needs_gradients
from prunehive.workers.tasks.base import Split, Task


def _packed(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Copies of ``tensors`` as views of one flat tensor (returned too), so that one call can update them
    all; separate copies and None where their dtypes or devices differ."""
    if len({(t.dtype, t.device) for t in tensors.values()}) != 1:
        return {n: t.clone() for n, t in tensors.items()}, None
    flat = torch.cat([t.reshape(-1) for t in tensors.values()])
    views, offset = {}, 0
    for n, t in tensors.items():
        views[n] = flat[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    return views, flat


class PruningEngine:
    """One task + one metric + one granularity, ready to evaluate any sparsity vector."""

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
        self.task = task
        self.device = torch.device(device)
        self.metric_name = metric
        self.metric: Metric = get_metric(metric)
        self.with_grads = needs_gradients(metric) if with_grads is None else with_grads
        self.granularity = Granularity.parse(granularity, per_row=per_row)
        self.seed = seed
        self.model = task.model().to(self.device)
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
        self.dense, self._dense_flat = _packed({n: m.weight.detach() for n, m in self.modules.items()})
        self.dense_bias = {n: m.bias.detach().clone() for n, m in self.modules.items() if m.bias is not None}
        self.total_flops, _ = count_flops(self.model, self.example)
        self.total_params = count_params(self.model)
        channel = self.granularity.kind == "channel"
        self.channel_flops = ChannelFlops(self.model, self.names, self.example) if channel else None
        self.stats = collect_stats(
            task, self.model, self.names, batches=calibration_batches, with_grads=self.with_grads
        )
        self.rankings = {n: Ranking.build(self.scores(n), self.granularity) for n in self.names}
        self._ranking_cache: OrderedDict[str, dict[str, Ranking]] = OrderedDict({metric: self.rankings})
        # ``evaluate`` writes each candidate's weights here and points the parameters at them (see ``_prune``).
        self._pruned, self._pruned_flat = _packed(self.dense)
        self._pruned_bias = (
            {n: torch.empty_like(b) for n, b in self.dense_bias.items()} if self.granularity.kind == "channel" else {}
        )
        self._swapped: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def scores(self, name: str, metric: Metric | None = None) -> torch.Tensor:
        s = self.stats[name]
        if metric is None and self.metric_name == "random":
            from prunehive.workers.metrics import random_metric

            return random_metric(s, seed=self.seed + self.names.index(name))
        return (metric or self.metric)(s)

    def use_metric(self, name: str) -> None:
        """Rank by another metric (a metric search's candidate expression); the last few
        metrics' rankings are kept, so switching back costs nothing."""
        if name == self.metric_name:
            return
        metric = get_metric(name)
        if needs_gradients(name) and not self.with_grads:
            raise ValueError(f"metric {name!r} needs gradients; build the engine with with_grads=True")
        if name not in self._ranking_cache:
            self._ranking_cache[name] = {n: Ranking.build(metric(self.stats[n]), self.granularity) for n in self.names}
            while len(self._ranking_cache) > 8:
                self._ranking_cache.popitem(last=False)
        self._ranking_cache.move_to_end(name)
        self.metric_name, self.metric, self.rankings = name, metric, self._ranking_cache[name]

    def outlier_ratios(self, m: float = 5.0) -> list[float]:
        """OWL's per-layer share of Wanda scores above ``m`` times the layer mean."""
        from prunehive.workers.metrics import wanda

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

    def _apply(self, masks: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, mask in masks.items():
                module = self.modules[n]
                torch.mul(self.dense[n], mask, out=module.weight.data)
                if self.granularity.kind == "channel" and module.bias is not None:
                    torch.mul(self.dense_bias[n], mask.reshape(mask.shape[0], -1)[:, 0], out=module.bias.data)

    def restore(self) -> None:
        with torch.no_grad():
            for n, module in self.modules.items():
                module.weight.data.copy_(self.dense[n])
                if module.bias is not None:
                    module.bias.data.copy_(self.dense_bias[n])

    def pruned_counts(self, sparsity: Mapping[str, float]) -> dict[str, int]:
        """Weights each layer loses at ``sparsity``: from the rankings alone, equal to counting the masks."""
        return {n: self.rankings[n].pruned_weights(s) for n, s in sparsity.items()}

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(
        self,
        sparsity: Mapping[str, float] | Iterable[float],
        splits: tuple[Split, ...] = ("validation",),
        recovery_steps: int = 0,
    ) -> EvalResult:
        """Prune to ``sparsity``, (optionally fine-tune), score on ``splits``, restore dense."""
        start = time.perf_counter()
        values = self.as_dict(sparsity)
        masks = self.masks(values) if recovery_steps > 0 else None
        snapshot = copy.deepcopy(self.model.state_dict()) if recovery_steps > 0 else None
        try:
            if masks is not None:
                self._apply(masks)
                self.task.train(
                    self.model, recovery_steps, lr=self.task.lr * 0.1, after_step=lambda: self._reapply(masks)
                )
            else:
                self._prune(values)
            metrics = {}
            for split in splits:
                ev = self.task.evaluate(self.model, split)
                metrics[split] = SplitMetrics(self.task.quality, ev.quality, ev.loss, self.task.objective(ev))
        finally:
            self._unprune()
            if snapshot is not None:
                self.model.load_state_dict(snapshot)
                self.restore()
        achieved, per_layer, params, flops = self._measure(values)
        return EvalResult(metrics, achieved, per_layer, params, flops, time.perf_counter() - start)

    def _prune(self, sparsity: Mapping[str, float]) -> None:
        """Point each layer's weight at a buffer holding dense x keep-mask, until ``_unprune``.

        ``sparsity`` names every layer (as ``as_dict`` returns it). The keep-masks are written straight
        into the buffers as 0/1 floats and multiplied by the dense weights in place, all layers in one
        call where the buffers are packed. The parameters' own tensors are never written, so putting
        them back restores the dense model without a copy.
        """
        for n, s in sparsity.items():
            self.rankings[n].keep_into(s, self._pruned[n])
        if self._pruned_flat is not None and self._dense_flat is not None:
            self._pruned_flat.mul_(self._dense_flat)
        else:
            for n in sparsity:
                self._pruned[n].mul_(self.dense[n])
        swapped = self._swapped
        for n, s in sparsity.items():
            module = self.modules[n]
            weight = module.weight
            swapped.append((weight, weight.data))
            weight.data = self._pruned[n]
            bias = module.bias
            if bias is not None and n in self._pruned_bias:  # channel: removed outputs lose their bias
                ranking = self.rankings[n]
                keep = ranking.rank >= ranking.pruned_count(s)
                swapped.append((bias, bias.data))
                bias.data = torch.mul(self.dense_bias[n], keep, out=self._pruned_bias[n])

    def _unprune(self) -> None:
        """Give every parameter ``_prune`` redirected its own (dense) tensor back."""
        swapped = self._swapped
        while swapped:
            param, tensor = swapped.pop()
            param.data = tensor

    def _reapply(self, masks: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, mask in masks.items():
                self.modules[n].weight.data.mul_(mask)

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
    def export(self, sparsity: Mapping[str, float] | Iterable[float]) -> nn.Module:
        """A pruned copy: physically smaller for ``channel``, else torch.nn.utils.prune masks
        (``weight_orig`` and ``weight_mask``), as a user would save or fine-tune it."""
        if self.granularity.kind == "channel":
            from prunehive.workers.structured import prune_channels

            plan = {n: self.rankings[n].removed_channels(s) for n, s in self.as_dict(sparsity).items()}
            return prune_channels(self.model, plan, self.example)
        from torch.nn.utils import prune

        model = copy.deepcopy(self.model)
        modules = dict(model.named_modules())
        for n, mask in self.masks(sparsity).items():
            prune.custom_from_mask(modules[n], "weight", mask.to(modules[n].weight.dtype))
        return model
