"""KL fitness: the dense model's validation outputs, cached once per worker, and each candidate's mean
KL(dense ‖ candidate) over the positions it is scored on.

The cache holds full log-probabilities while they fit under a memory cap (classifiers, small vocabularies);
past it, as Týr-the-Pruner does, each position keeps its ``top_k`` dense log-probabilities (the logits
less their log-sum-exp, so the mass outside the top k is known). The KL is then taken between the two
distributions coarsened to those k tokens plus one "rest" bin: a lower bound of the full KL that is
tight when the dense model puts little mass outside its top k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunehive.workers.contracts import SplitMetrics
from prunehive.workers.tasks.base import Split, Task

TOP_K = 64
MEMORY_CAP = 256 * 2**20  # bytes of full log-probabilities kept before switching to top-k


@dataclass
class _Entry:
    """One batch's dense outputs: full log-probabilities (``index`` None) or the top-k ones and their ids."""

    logp: torch.Tensor
    index: torch.Tensor | None = None


class DenseReference:
    """The dense model's outputs on the validation split, batch by batch, in the order the task yields them."""

    def __init__(self, top_k: int = TOP_K, memory_cap: int = MEMORY_CAP) -> None:
        self.top_k, self.memory_cap = int(top_k), int(memory_cap)
        self.entries: list[_Entry] = []
        self.nbytes = 0

    @classmethod
    def build(cls, task: Task, model: nn.Module, top_k: int = TOP_K, memory_cap: int = MEMORY_CAP) -> DenseReference:
        """Score the (dense) model on the whole validation split once, keeping its outputs."""
        ref = cls(top_k, memory_cap)
        Task.evaluate(task, model, "validation", observe=ref._store)  # the base loop: it always observes
        return ref

    @property
    def full(self) -> bool:
        return all(e.index is None for e in self.entries)

    def _store(self, index: int, logits: torch.Tensor) -> None:
        if index != len(self.entries):
            raise RuntimeError(f"dense reference: batch {index} arrived after {len(self.entries)} batches")
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        keep_full = logp.shape[-1] <= self.top_k or (self.full and self.nbytes + logp.numel() * 4 <= self.memory_cap)
        if not keep_full and self.full:  # over the cap: everything kept so far becomes top-k too
            self.entries = [self._top(e.logp) for e in self.entries]
        entry = _Entry(logp) if keep_full else self._top(logp)
        self.entries.append(entry)
        self.nbytes = sum(e.logp.numel() * 4 + (0 if e.index is None else e.index.numel() * 4) for e in self.entries)

    def _top(self, logp: torch.Tensor) -> _Entry:
        values, index = logp.topk(self.top_k, dim=-1)
        return _Entry(values.contiguous(), index.to(torch.int32))

    def summed_kl(self, index: int, logits: torch.Tensor) -> float:
        """Sum over the batch's first positions of KL(dense ‖ candidate), ``logits`` being the candidate's."""
        if index >= len(self.entries) or len(logits) > len(self.entries[index].logp):
            raise RuntimeError("the candidate was scored on more validation data than the dense reference holds")
        entry = self.entries[index]
        p = entry.logp[: len(logits)].to(logits.device, non_blocking=True)
        q = torch.log_softmax(logits.float(), dim=-1)
        if entry.index is None:
            return float((p.exp() * (p - q)).sum())
        ids = entry.index[: len(logits)].to(logits.device, non_blocking=True).long()
        q_top = q.gather(-1, ids)
        head = (p.exp() * (p - q_top)).sum(-1)
        # The mass outside the top k: the dense model's from what its top k leave (float32 is enough: a
        # rest too small to resolve adds nothing), the candidate's summed exactly over the other tokens.
        p_rest = torch.log(-torch.expm1(torch.logsumexp(p, dim=-1).clamp(max=0.0)))
        q_rest = torch.logsumexp(q.scatter(-1, ids, -torch.inf), dim=-1)
        tail = torch.where(p_rest > -torch.inf, p_rest.exp() * (p_rest - q_rest), torch.zeros_like(p_rest))
        return float((head + tail).sum())


class _KLSum:
    """The observer of one evaluation: sums the KL of each batch's scored positions."""

    def __init__(self, reference: DenseReference) -> None:
        self.reference, self.total, self.count = reference, 0.0, 0

    def __call__(self, index: int, logits: torch.Tensor) -> None:
        self.total += self.reference.summed_kl(index, logits)
        self.count += len(logits)


def score_splits(
    task: Task,
    model: nn.Module,
    splits: tuple[Split, ...],
    limit: int | None = None,
    reference: DenseReference | None = None,
) -> dict[str, SplitMetrics]:
    """Each split's scores (the first ``limit`` items of each), with validation's mean KL from the dense
    model where there is a reference; a task that overrides ``evaluate`` gets a second, base-loop pass."""
    metrics = {}
    for split in splits:
        kl_sum = _KLSum(reference) if reference is not None and split == "validation" else None
        if limit is None and kl_sum is None:
            ev = task.evaluate(model, split)  # a task's own evaluate may not take the newer arguments
        elif type(task).evaluate is Task.evaluate:
            ev = task.evaluate(model, split, limit=limit, observe=kl_sum)
        else:
            ev = task.evaluate(model, split, limit=limit)
            if kl_sum is not None:
                Task.evaluate(task, model, split, limit=limit, observe=kl_sum)
        kl = None if kl_sum is None else kl_sum.total / max(kl_sum.count, 1)
        metrics[split] = SplitMetrics(task.quality, ev.quality, ev.loss, task.objective(ev), kl, ev.count)
    return metrics
