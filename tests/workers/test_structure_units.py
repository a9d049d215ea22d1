"""Structured units of a grouped-query Llama: discovery, removal that equals the smaller or shallower model,
and weights that come back exactly."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from structured_tasks import TinyLlamaTask, llama, tokens
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.structure.apply import applied
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.pruner import StructuredPruner
from prunehive.workers.structure.select import choose
from prunehive.workers.structure.shrink import parameter_count, shrink
from prunehive.workers.structure.units import discover

X = tokens(4, 9)[:, :-1]


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(X).logits  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pruner() -> StructuredPruner:
    return StructuredPruner(TinyLlamaTask(), "structured", "magnitude", calibration_batches=2)


def test_units_of_a_grouped_query_llama() -> None:
    s = discover(llama(), "structured")
    assert [b.path for b in s.blocks] == ["model.layers.0", "model.layers.1", "model.layers.2"]
    b = s.blocks[0]
    assert (b.heads, b.kv_heads, b.group_size, b.head_dim, b.channels) == (4, 2, 2, 8, 64)
    assert b.kv_heads * b.group_params == 4 * 32 * 32 - 2 * 16 * 32  # q, o: 32x32; k, v: 16x32
    assert b.channels * b.channel_params == 3 * 32 * 64
    assert b.block_params == b.attention_params + b.mlp_params


def test_models_without_the_structure_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="granularity head: the model has no attention heads to remove"):
        discover(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "head")
    with pytest.raises(ValueError, match="granularity block: the model has a single decoder block"):
        discover(llama(layers=1), "block")
    assert discover(llama(layers=1), "head").blocks[0].kv_heads == 2


def _smaller(model: Any, plan: StructurePlan) -> Any:
    """The physically smaller Llama a uniform plan describes, its weights sliced from ``model``."""
    kept_g, kept_c = plan.blocks[0].kv_groups, plan.blocks[0].channels
    assert kept_g is not None and kept_c is not None
    cfg = model.config
    small = LlamaForCausalLM(
        LlamaConfig(**{**cfg.to_dict(), "num_attention_heads": 2 * len(kept_g), "num_key_value_heads": len(kept_g),
                       "head_dim": 8, "intermediate_size": len(kept_c)})
    ).eval()  # fmt: skip
    state = model.state_dict()
    for key, value in state.items():
        target = small.state_dict()[key]
        i = int(key.split(".")[2]) if key.startswith("model.layers.") else -1
        if value.shape == target.shape:
            target.copy_(value)
            continue
        p = plan.blocks[i]
        q_rows = torch.cat([torch.arange(g * 16, g * 16 + 16) for g in p.kv_groups or ()])
        kv_rows = torch.cat([torch.arange(g * 8, g * 8 + 8) for g in p.kv_groups or ()])
        ch = torch.tensor(p.channels or ())
        part = {"q_proj": (0, q_rows), "k_proj": (0, kv_rows), "v_proj": (0, kv_rows), "o_proj": (1, q_rows),
                "gate_proj": (0, ch), "up_proj": (0, ch), "down_proj": (1, ch)}[key.split(".")[-2]]  # fmt: skip
        target.copy_(value.index_select(*part))
    return small


def test_head_and_channel_removal_equal_the_smaller_grouped_query_model(pruner: StructuredPruner) -> None:
    groups = choose(pruner.structure, pruner.scores, "head", 0.5, "uniform")  # one of two KV groups per block
    channels = choose(pruner.structure, pruner.scores, "channel", 0.25, "uniform")  # 16 of 64 per block
    heads = StructurePlan(
        tuple(
            BlockPlan(kv_groups=g.kv_groups, channels=c.channels)
            for g, c in zip(groups.blocks, channels.blocks, strict=True)
        )
    )
    per_block = [(len(b.kv_groups or ()), len(b.channels or ())) for b in heads.blocks]
    assert per_block == [(1, 48)] * 3, per_block
    model = pruner.model
    small = _smaller(model, heads)
    assert small.config.num_key_value_heads == 1 and small.config.num_attention_heads == 2
    with applied(model, pruner.structure, heads):
        zeroed = logits(model)
    torch.testing.assert_close(logits(small), zeroed, atol=1e-5, rtol=1e-5)


def test_a_removed_block_equals_the_model_without_it(pruner: StructuredPruner) -> None:
    model = pruner.model
    plan = StructurePlan((BlockPlan(), BlockPlan(attention=False, mlp=False), BlockPlan()))
    shallow = copy.deepcopy(model)
    del shallow.model.layers[1]
    shallow.config.num_hidden_layers = 2
    with applied(model, pruner.structure, plan):
        skipped = logits(model)
    torch.testing.assert_close(skipped, logits(shallow), atol=0, rtol=0)
    assert not torch.allclose(skipped, logits(model))


def test_a_removed_sublayer_adds_nothing_to_the_residual(pruner: StructuredPruner) -> None:
    model = pruner.model
    for attention in (False, True):
        plan = StructurePlan((BlockPlan(), BlockPlan(attention=attention, mlp=not attention), BlockPlan()))
        silent = copy.deepcopy(model)
        proj = "self_attn.o_proj" if not attention else "mlp.down_proj"
        dict(silent.named_modules())[f"model.layers.1.{proj}"].weight.data.zero_()
        with applied(model, pruner.structure, plan):
            removed = logits(model)
        torch.testing.assert_close(removed, logits(silent), atol=1e-6, rtol=1e-6)


def test_applied_puts_every_weight_and_hook_back(pruner: StructuredPruner) -> None:
    model = pruner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = logits(model)
    plan = pruner.plan(0.4, "global")
    assert any(b.removed for b in plan.blocks) or any(b.kv_groups for b in plan.blocks)
    with applied(model, pruner.structure, plan, pruner.weights(plan, "sparsegpt")):
        assert not torch.allclose(logits(model), dense)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits(model), dense)


def test_the_plan_and_its_refitted_weights_shrink_to_the_same_model(pruner: StructuredPruner) -> None:
    """What ``applied`` computes is what the physically smaller model (workers/structure/shrink.py) computes,
    with the same parameter count as the plan's accounting."""
    widths = pruner.plan(0.4, "global").blocks
    plan = StructurePlan((widths[0], BlockPlan(attention=False, mlp=False), widths[2]))
    weights = pruner.weights(plan, "sparsegpt")
    with applied(pruner.model, pruner.structure, plan, weights):
        expected = logits(pruner.model)
    full = copy.deepcopy(pruner.model)
    params = dict(full.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    small = shrink(full, plan)
    torch.testing.assert_close(logits(small), expected, atol=1e-5, rtol=1e-5)
    assert parameter_count(small) == pruner.measure(plan)[2]
