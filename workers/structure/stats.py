"""Calibration statistics of a decoder LM's structured units, collected with hooks in one pass.

Per block: the mean |activation| of each query head's output and of each MLP intermediate channel (the
inputs of ``o_proj`` and ``down_proj``: Minitron's activation importance), the mean cosine similarity
between the residual stream before and after the block and each of its sublayers (ShortGPT's block
influence is one minus it), and, where reconstruction needs them, the Gram matrices X^T X / n of the
``o_proj`` and ``down_proj`` inputs. Taylor scores (LLM-Pruner: |w * grad| summed over a unit) come from
backward passes over the same batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunehive.workers.structure.units import ATTENTION, MLP, BlockUnits, DecoderStructure
from prunehive.workers.tasks.base import Batch, Task


@dataclass
class BlockStats:
    """One block's sums over calibration tokens; ``finish`` turns them into means."""

    tokens: int = 0
    head_abs: torch.Tensor | None = None  # (heads * head_dim,) summed |o_proj input|
    channel_abs: torch.Tensor | None = None  # (channels,) summed |down_proj input|
    o_gram: torch.Tensor | None = None  # o_proj input Gram, summed
    down_gram: torch.Tensor | None = None
    cos: dict[str, float] = field(default_factory=lambda: {"block": 0.0, "attention": 0.0, "mlp": 0.0})

    def finish(self) -> BlockStats:
        n = max(self.tokens, 1)
        for name in ("head_abs", "channel_abs", "o_gram", "down_gram"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value / n)
        self.cos = {k: v / n for k, v in self.cos.items()}
        return self


def _add(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if old is None else old + new


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).float()


def _cos_sum(before: torch.Tensor, after: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(_rows(before), _rows(after), dim=-1).sum())


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class _Recorder:
    """The hooks of one block: its input, the residual stream after attention, and the consumers' inputs."""

    def __init__(self, stats: BlockStats, grams: bool) -> None:
        self.s, self.grams = stats, grams
        self.before = self.middle = torch.zeros(())

    def block_in(self, _m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = (args[0] if args else kwargs["hidden_states"]).detach()
        self.before = self.middle = hidden
        self.s.tokens += hidden.numel() // hidden.shape[-1]

    def block_out(self, _m: nn.Module, _args: Any, out: Any) -> None:
        self.s.cos["block"] += _cos_sum(self.before, _first(out))

    def attention_out(self, _m: nn.Module, _args: Any, out: Any) -> None:
        self.middle = self.before + _first(out).detach()
        self.s.cos["attention"] += _cos_sum(self.before, self.middle)

    def mlp_out(self, _m: nn.Module, _args: Any, out: Any) -> None:
        self.s.cos["mlp"] += _cos_sum(self.middle, self.middle + _first(out).detach())

    def o_in(self, _m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = _rows(args[0])
        self.s.head_abs = _add(self.s.head_abs, x.abs().sum(0))
        if self.grams:
            self.s.o_gram = _add(self.s.o_gram, x.T @ x)

    def down_in(self, _m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = _rows(args[0])
        self.s.channel_abs = _add(self.s.channel_abs, x.abs().sum(0))
        if self.grams:
            self.s.down_gram = _add(self.s.down_gram, x.T @ x)


def _hooks(
    model: nn.Module, structure: DecoderStructure, blocks: Iterable[int], stats: dict[int, BlockStats], grams: bool
) -> list[RemovableHandle]:
    """Hooks recording ``stats`` of the listed blocks: activations, cosines and (``grams``) Gram matrices."""
    modules = dict(model.named_modules())
    handles: list[RemovableHandle] = []
    for i in blocks:
        b, rec = structure.blocks[i], _Recorder(stats[i], grams)
        handles.append(modules[b.path].register_forward_pre_hook(rec.block_in, with_kwargs=True))
        handles.append(modules[b.path].register_forward_hook(rec.block_out))
        if b.attention:
            handles.append(modules[b.attention].register_forward_hook(rec.attention_out))
            handles.append(modules[b.proj("o_proj")].register_forward_pre_hook(rec.o_in))
        if b.mlp:
            handles.append(modules[b.mlp].register_forward_hook(rec.mlp_out))
            handles.append(modules[b.proj("down_proj")].register_forward_pre_hook(rec.down_in))
    return handles


def collect(
    model: nn.Module,
    structure: DecoderStructure,
    batches: list[Batch],
    blocks: Iterable[int] | None = None,
    grams: bool = True,
) -> dict[int, BlockStats]:
    """Forward ``batches`` through ``model`` (as it computes now: a partly pruned model too) and return the
    statistics of ``blocks`` (default all)."""
    chosen = list(range(len(structure.blocks))) if blocks is None else list(blocks)
    stats = {i: BlockStats() for i in chosen}
    handles = _hooks(model, structure, chosen, stats, grams)
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
    return {i: s.finish() for i, s in stats.items()}


@dataclass
class TaylorScores:
    """|w * grad| summed over each unit, with grad the mean loss gradient over the calibration batches."""

    groups: dict[int, torch.Tensor]  # block -> (kv_heads,)
    channels: dict[int, torch.Tensor]  # block -> (channels,)
    blocks: dict[int, float]
    sublayers: dict[int, dict[str, float]]  # block -> attention (with its norm) / mlp (with its norm)


def _group_taylor(b: BlockUnits, wg: dict[str, torch.Tensor], bias: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per KV group: its query heads' q rows, its k and v rows (with biases) and its o_proj columns."""
    d, g = b.head_dim, b.group_size
    q = wg["q_proj"].sum(1) + bias.get("q_proj", 0)
    k = wg["k_proj"].sum(1) + bias.get("k_proj", 0)
    v = wg["v_proj"].sum(1) + bias.get("v_proj", 0)
    o = wg["o_proj"].sum(0)
    per_q = (q + o).reshape(b.kv_heads, g * d).sum(1)
    return per_q + (k + v).reshape(b.kv_heads, d).sum(1)


def taylor(task: Task, model: nn.Module, structure: DecoderStructure, batches: list[Batch]) -> TaylorScores:
    """First-order Taylor scores of every unit (LLM-Pruner), from the mean gradient over ``batches``."""
    modules = dict(model.named_modules())
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            task.loss_fn(model(x.to(device)), y.to(device)).backward()
            for acc, p in zip(grads, params, strict=True):
                if p.grad is not None:
                    acc += p.grad
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    score = {id(p): (p.detach() * g / max(len(batches), 1)).abs() for p, g in zip(params, grads, strict=True)}
    out = TaylorScores({}, {}, {}, {})

    def total(*names: str | None) -> float:
        return float(sum(score[id(p)].sum() for n in names if n for p in modules[n].parameters() if id(p) in score))

    for b in structure.blocks:
        out.blocks[b.index] = total(b.path)
        norms = (f"{b.path}.input_layernorm", f"{b.path}.post_attention_layernorm")
        out.sublayers[b.index] = {
            "attention": total(b.attention, norms[0] if norms[0] in modules else None),
            "mlp": total(b.mlp, norms[1] if norms[1] in modules else None),
        }
        if b.attention:
            lin = {n: modules[b.proj(n)] for n in ATTENTION}
            wg = {n: score[id(m.weight)] for n, m in lin.items()}
            bias = {n: score[id(m.bias)] for n, m in lin.items() if m.bias is not None and n != "o_proj"}
            out.groups[b.index] = _group_taylor(b, wg, bias)
        if b.mlp:
            lin = {n: modules[b.proj(n)] for n in MLP}
            per = score[id(lin["gate_proj"].weight)].sum(1) + score[id(lin["up_proj"].weight)].sum(1)
            per = per + score[id(lin["down_proj"].weight)].sum(0)
            for n in ("gate_proj", "up_proj"):
                if lin[n].bias is not None:
                    per = per + score[id(lin[n].bias)]
            out.channels[b.index] = per
    return out
