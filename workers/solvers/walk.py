"""Calibration block by block: each group of layers' Hessians, from the inputs the model gives it now.

``hessian_groups`` yields the Hessians of one block's layers at a time. Before it moves to the next
block it runs the current block again, so whatever the caller wrote into that block's weights (pruned
weights, for SparseGPT's sequential pruning) shapes the next block's inputs; a caller that writes
nothing gets every block's Hessians from the dense model.

Two ways to reach a block's inputs:
- chained: the blocks are consecutive children of one ModuleList (a Hugging Face decoder's
  ``model.layers``). The inputs of the first block are captured once and each block's outputs become
  the next block's inputs, so only one block's activations are live at a time (as SparseGPT and Wanda
  run large models). The chain is checked on the first batch against the dense model's own inputs
  of the second block; if they differ, the model is walked the other way.
- whole model: every block is reached by running the model from its input (models without blocks, or
  whose blocks do not chain, such as a ResNet's stages). Fine for small models; it costs one pass
  over the calibration data per block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from prunehive.workers.solvers.sparsegpt import Hessian
from prunehive.workers.tasks.base import Batch, Task

CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")  # never grow a KV cache here

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


class _Stop(Exception):
    """Raised by a pre-hook once a block's inputs are captured, so the rest of the model never runs."""


def block_groups(task: Task, model: nn.Module, names: list[str]) -> list[tuple[str, list[str]]]:
    """The named layers grouped by ``task.layer_blocks``, blocks in the order their layers come."""
    blocks = task.layer_blocks(model)
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(blocks.get(name, name), []).append(name)
    return list(groups.items())


def hessian_groups(
    task: Task, model: nn.Module, names: list[str], batches: list[Batch]
) -> Iterator[tuple[list[str], dict[str, Hessian]]]:
    """For each block in order, its layers and their Hessians; see the module docstring."""
    groups = block_groups(task, model, names)
    chain = _chain(model, [block for block, _ in groups])
    with torch.no_grad():
        if chain is not None:
            inputs = _chained_inputs(model, chain, batches)
            if inputs is not None:
                yield from _walk_chain(model, chain, groups, inputs)
                return
        for _, layers in groups:

            def run() -> None:
                for x, _ in batches:
                    _run_model(model, x)

            yield layers, _collect(model, layers, run)


def _chain(model: nn.Module, blocks: list[str]) -> list[nn.Module] | None:
    """The ModuleList children from the first block on, when every block is one of them."""
    parents = {block.rpartition(".")[0] for block in blocks}
    if len(parents) != 1 or len(blocks) < 2:
        return None
    parent = dict(model.named_modules()).get(parents.pop())
    if not isinstance(parent, nn.ModuleList):
        return None
    index = {f"{i}": child for i, child in enumerate(parent)}
    positions = [block.rpartition(".")[2] for block in blocks]
    if any(p not in index for p in positions):
        return None
    first = int(positions[0])
    return list(parent)[first:]


def _run_model(model: nn.Module, x: torch.Tensor) -> None:
    device = next(model.parameters()).device
    with contextlib.suppress(_Stop):
        model(x.to(device))


def _captured(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Inputs:
    kwargs = dict(kwargs)
    for key in CACHE_KWARGS:
        if key in kwargs:
            kwargs[key] = None
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return args, kwargs


def _chained_inputs(model: nn.Module, chain: list[nn.Module], batches: list[Batch]) -> list[Inputs] | None:
    """The first block's inputs for every batch, or None when the second block's dense inputs are not
    the first block's outputs (the blocks do not chain)."""
    seen: list[Inputs] = []
    second: list[Inputs] = []

    def first_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(_captured(args, kwargs))
        if len(seen) > 1:
            raise _Stop

    def second_hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        second.append(_captured(args, kwargs))
        raise _Stop

    handles = [chain[0].register_forward_pre_hook(first_hook, with_kwargs=True)]
    handles.append(chain[1].register_forward_pre_hook(second_hook, with_kwargs=True))
    try:
        for x, _ in batches:
            _run_model(model, x)
    finally:
        for h in handles:
            h.remove()
    if not seen or not second:
        return None
    out = _hidden(chain[0](*seen[0][0], **seen[0][1]))
    expected = _hidden_input(second[0])
    if not isinstance(expected, torch.Tensor) or out.shape != expected.shape or not torch.allclose(out, expected):
        return None
    return seen


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _hidden_input(inputs: Inputs) -> Any:
    args, kwargs = inputs
    return args[0] if args else kwargs.get("hidden_states")


def _with_hidden(inputs: Inputs, hidden: torch.Tensor) -> Inputs:
    args, kwargs = inputs
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _walk_chain(
    model: nn.Module, chain: list[nn.Module], groups: list[tuple[str, list[str]]], inputs: list[Inputs]
) -> Iterator[tuple[list[str], dict[str, Hessian]]]:
    modules = dict(model.named_modules())
    by_block = {id(modules[block]): layers for block, layers in groups}
    remaining = len(groups)
    for block in chain:
        layers = by_block.get(id(block))
        if layers is not None:

            def run(b: nn.Module = block, feed: list[Inputs] = inputs) -> None:
                for args, kwargs in feed:
                    b(*args, **kwargs)

            yield layers, _collect(model, layers, run)
            remaining -= 1
            if remaining == 0:
                return
        inputs = [_with_hidden(inp, _hidden(block(*inp[0], **inp[1]))) for inp in inputs]


def _collect(model: nn.Module, layers: list[str], run: Any) -> dict[str, Hessian]:
    """Hessians of ``layers`` while ``run()`` feeds them."""
    modules = dict(model.named_modules())
    hessians = {n: Hessian(modules[n]) for n in layers}  # type: ignore[arg-type]
    handles = [modules[n].register_forward_hook(lambda _m, args, _o, h=hessians[n]: h.add(args[0])) for n in layers]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return hessians
