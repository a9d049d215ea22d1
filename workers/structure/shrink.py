"""Build the physically smaller model a structured candidate describes.

A search scores candidates on the full-shaped model, with removed units zeroed (and the consuming
layers reconstructed); what a user deploys is the model without them. ``shrink`` copies the kept
rows and columns into a new model: per kept block, the kept key/value groups with their query heads
(rows of q/k/v, columns of o_proj) and the kept MLP channels (rows of gate/up, columns of down_proj);
removed blocks are dropped and a sublayer removed alone is skipped. Because a removed unit's consuming
columns are zero in the full-shaped model, the two compute the same function.

The result is a plain ``LlamaForCausalLM`` when every kept block keeps the same widths, both
sublayers, and a head count that divides the hidden size (transformers' ``LlamaConfig`` rejects any
other); otherwise a ``PrunedLlamaForCausalLM`` (``modeling_prunehive_llama``) with per-block widths.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.structure.modeling_prunehive_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM
from prunehive.workers.structure.plan import BlockPlan, StructurePlan

SUPPORTED = ("llama", PrunedLlamaConfig.model_type)


class ShrinkError(ValueError):
    """A plan that does not fit the model, or a model shrink cannot rebuild: the message names which."""


def _widths(config: Any) -> tuple[int, int, int, int]:
    """(query heads, key/value heads, head size, MLP channels) of the model's blocks at full width."""
    heads = int(config.num_attention_heads)
    kv = int(config.num_key_value_heads or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv, head_dim, int(config.intermediate_size)


def check_plan(model: nn.Module, plan: StructurePlan) -> None:
    """Raise ``ShrinkError`` unless ``plan`` describes this full-width Llama: one entry per block, unit
    indices in range, strictly increasing, and at least one unit in every kept sublayer."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED:
        kind = getattr(config, "model_type", type(model).__name__)
        raise ShrinkError(f"shrink rebuilds Llama-architecture causal LMs only, not {kind!r}")
    if isinstance(config, PrunedLlamaConfig):
        raise ShrinkError("shrink needs the full-width model; this one is already shrunk")
    _, kv, _, channels = _widths(config)
    if len(plan.blocks) != config.num_hidden_layers:
        raise ShrinkError(f"the plan lists {len(plan.blocks)} blocks; the model has {config.num_hidden_layers}")
    for i, block in enumerate(plan.blocks):
        for field, kept, limit, used in (
            ("kv_groups", block.kv_groups, kv, block.attention),
            ("channels", block.channels, channels, block.mlp),
        ):
            if kept is None:
                continue
            ordered = all(a < b for a, b in zip(kept, kept[1:], strict=False))
            if not ordered or (kept and not 0 <= kept[0] <= kept[-1] < limit):
                raise ShrinkError(f"block {i}: {field} must be increasing indices below {limit}, got {list(kept)}")
            if used and not kept:
                raise ShrinkError(f"block {i}: {field} is empty; remove the sublayer instead")


def _kept(block: BlockPlan, config: Any) -> tuple[list[int], list[int], list[int]]:
    """(kept query heads, kept KV groups, kept channels) of a block; empty lists for a removed sublayer."""
    heads, kv, _, channels = _widths(config)
    per_group = heads // kv
    groups = list(range(kv)) if block.kv_groups is None else list(block.kv_groups)
    groups = groups if block.attention else []
    query = [g * per_group + j for g in groups for j in range(per_group)]
    chans = list(range(channels)) if block.channels is None else list(block.channels)
    return query, groups, chans if block.mlp else []


def _rows(units: list[int], size: int) -> torch.Tensor:
    """Row (or column) indices of ``units`` that are ``size`` wide each."""
    return torch.tensor([u * size + k for u in units for k in range(size)], dtype=torch.long)


def is_uniform(model: nn.Module, plan: StructurePlan) -> bool:
    """Whether a plain ``LlamaConfig`` describes the shrunk model: every kept block keeps both sublayers,
    the same number of KV groups and of channels, and its query heads divide the hidden size."""
    config: Any = model.config  # type: ignore[union-attr]
    widths = {tuple(len(u) for u in _kept(plan.blocks[i], config)) for i in plan.kept_blocks()}
    if any(not plan.blocks[i].attention or not plan.blocks[i].mlp for i in plan.kept_blocks()):
        return False
    if len(widths) > 1:
        return False
    heads = next(iter(widths))[0] if widths else int(config.num_attention_heads)
    return int(config.hidden_size) % heads == 0


def shrunk_config(model: nn.Module, plan: StructurePlan) -> LlamaConfig:
    """The config of the shrunk model: plain ``LlamaConfig`` when uniform, else ``PrunedLlamaConfig``."""
    check_plan(model, plan)
    config: Any = model.config  # type: ignore[union-attr]
    heads, _, head_dim, _ = _widths(config)
    data = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        data.pop(key, None)
    kept = [_kept(plan.blocks[i], config) for i in plan.kept_blocks()]
    data["num_hidden_layers"] = len(kept)
    data["head_dim"] = head_dim
    if is_uniform(model, plan):
        if kept:
            data["num_attention_heads"] = len(kept[0][0])
            data["num_key_value_heads"] = len(kept[0][1])
            data["intermediate_size"] = len(kept[0][2])
        return LlamaConfig(**data)
    data["layer_num_attention_heads"] = [len(q) for q, _, _ in kept]
    data["layer_num_key_value_heads"] = [len(g) for _, g, _ in kept]
    data["layer_intermediate_sizes"] = [len(c) for _, _, c in kept]
    data["num_attention_heads"] = heads
    return PrunedLlamaConfig(**data)


def _copy(
    dst: nn.Linear,
    src: nn.Linear,
    rows: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    bias: bool = False,
) -> None:
    """``src``'s kept rows/columns into ``dst``; its bias follows the rows (a column cut keeps the whole bias)."""
    weight = src.weight.detach()
    weight = weight if rows is None else weight.index_select(0, rows)
    weight = weight if cols is None else weight.index_select(1, cols)
    dst.weight.data.copy_(weight)
    if src.bias is not None and dst.bias is not None and (rows is not None or bias):
        dst.bias.data.copy_(src.bias.detach() if rows is None else src.bias.detach().index_select(0, rows))


@torch.no_grad()
def shrink(model: nn.Module, plan: StructurePlan) -> nn.Module:
    """A new, physically smaller model holding ``model``'s kept units (``model`` is left unchanged)."""
    config = shrunk_config(model, plan)
    full: Any = model  # Llama's submodules, reached by name
    _, _, head_dim, _ = _widths(full.config)
    cls = PrunedLlamaForCausalLM if isinstance(config, PrunedLlamaConfig) else LlamaForCausalLM
    small: Any = cls(config)
    param = next(model.parameters())
    small.to(dtype=param.dtype, device=param.device)
    small.model.embed_tokens.weight.copy_(full.model.embed_tokens.weight)
    small.model.norm.weight.copy_(full.model.norm.weight)
    small.lm_head.weight.copy_(full.lm_head.weight)
    for new, old in enumerate(plan.kept_blocks()):
        src, dst = full.model.layers[old], small.model.layers[new]
        query, groups, channels = _kept(plan.blocks[old], full.config)
        if query:
            q_rows, kv_rows = _rows(query, head_dim), _rows(groups, head_dim)
            _copy(dst.self_attn.q_proj, src.self_attn.q_proj, rows=q_rows)
            _copy(dst.self_attn.k_proj, src.self_attn.k_proj, rows=kv_rows)
            _copy(dst.self_attn.v_proj, src.self_attn.v_proj, rows=kv_rows)
            _copy(dst.self_attn.o_proj, src.self_attn.o_proj, cols=q_rows, bias=True)
            dst.input_layernorm.weight.copy_(src.input_layernorm.weight)
        if channels:
            rows = torch.tensor(channels, dtype=torch.long)
            _copy(dst.mlp.gate_proj, src.mlp.gate_proj, rows=rows)
            _copy(dst.mlp.up_proj, src.mlp.up_proj, rows=rows)
            _copy(dst.mlp.down_proj, src.mlp.down_proj, cols=rows, bias=True)
            dst.post_attention_layernorm.weight.copy_(src.post_attention_layernorm.weight)
    result: nn.Module = small.eval()
    return result


@torch.no_grad()
def zero_removed(model: nn.Module, plan: StructurePlan) -> None:
    """Zero, in place, the consuming columns (o_proj, down_proj) of every unit ``plan`` removes, and their
    biases where a whole sublayer goes: the full-shaped model that computes what ``shrink`` builds."""
    check_plan(model, plan)
    full: Any = model
    config = full.config
    heads, _, head_dim, channels = _widths(config)
    for i, block in enumerate(plan.blocks):
        layer = full.model.layers[i]
        query, _, kept_channels = _kept(block, config)
        for proj, kept, width, size in (
            (layer.self_attn.o_proj, query, heads, head_dim),
            (layer.mlp.down_proj, kept_channels, channels, 1),
        ):
            keep = torch.zeros(width * size, dtype=torch.bool, device=proj.weight.device)
            if kept:
                keep[_rows(kept, size).to(keep.device)] = True
            proj.weight[:, ~keep] = 0
            if not kept and proj.bias is not None:
                proj.bias.zero_()


def parameter_count(model: nn.Module) -> int:
    """Parameters the model holds (a tied head counted once)."""
    return sum(p.numel() for p in model.parameters())
