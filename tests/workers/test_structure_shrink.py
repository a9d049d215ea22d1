"""shrink: the physically smaller Llama a StructurePlan keeps computes what the zeroed full-shaped model does."""

from __future__ import annotations

import copy

import pytest
import torch
from structure_models import BLOCKS, HEAD_DIM, HEADS, HIDDEN, KV, inputs, logits, tiny_llama
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.structure.modeling_prunehive_llama import PrunedLlamaForCausalLM
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.shrink import ShrinkError, is_uniform, parameter_count, shrink, zero_removed


def masked(model: nn.Module, plan: StructurePlan) -> nn.Module:
    full = copy.deepcopy(model)
    zero_removed(full, plan)
    return full


def test_head_removal_keeps_grouped_query_shapes_valid() -> None:
    """Each block keeps whole KV groups with their query heads: q/k/v/o shapes agree and the model runs."""
    model = tiny_llama()
    plan = StructurePlan((BlockPlan(kv_groups=(1,)), BlockPlan(kv_groups=(0,)), BlockPlan(), BlockPlan(kv_groups=(0,))))
    small = shrink(model, plan)
    assert isinstance(small, PrunedLlamaForCausalLM)  # block 2 keeps both groups: widths differ
    for layer, groups in zip(small.model.layers, (1, 1, 2, 1), strict=True):
        attn = layer.self_attn
        q_heads = groups * HEADS // KV
        assert attn.q_proj.weight.shape == (q_heads * HEAD_DIM, HIDDEN)
        assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (groups * HEAD_DIM, HIDDEN)
        assert attn.o_proj.weight.shape == (HIDDEN, q_heads * HEAD_DIM)
        assert attn.num_key_value_groups == HEADS // KV
    # the kept group's rows are the original ones: group 1's key rows in block 0
    full_k = model.model.layers[0].self_attn.k_proj.weight
    assert torch.equal(small.model.layers[0].self_attn.k_proj.weight, full_k[HEAD_DIM:])
    assert torch.allclose(logits(small), logits(masked(model, plan)), atol=1e-5)
    assert parameter_count(small) < parameter_count(model)


def test_channel_removal_keeps_the_chosen_channels() -> None:
    model = tiny_llama()
    keep = (0, 5, 7, 40)
    plan = StructurePlan(tuple(BlockPlan(channels=keep) for _ in range(BLOCKS)))
    small = shrink(model, plan)
    assert type(small) is LlamaForCausalLM and small.config.intermediate_size == len(keep)
    up = model.model.layers[2].mlp.up_proj.weight
    assert torch.equal(small.model.layers[2].mlp.up_proj.weight, up[list(keep)])
    assert torch.allclose(logits(small), logits(masked(model, plan)), atol=1e-5)


def test_removed_block_equals_the_model_with_that_block_skipped() -> None:
    model = tiny_llama()
    plan = StructurePlan((BlockPlan(), BlockPlan(attention=False, mlp=False), BlockPlan(), BlockPlan()))
    small = shrink(model, plan)
    assert small.config.num_hidden_layers == BLOCKS - 1 and type(small) is LlamaForCausalLM
    skipped = copy.deepcopy(model)
    skipped.model.layers = nn.ModuleList(layer for i, layer in enumerate(skipped.model.layers) if i != 1)
    skipped.config.num_hidden_layers = BLOCKS - 1
    assert torch.allclose(logits(small), logits(skipped), atol=1e-5)
    assert not torch.allclose(logits(small), logits(model), atol=1e-3)  # the block did something
    assert torch.allclose(logits(small), logits(masked(model, plan)), atol=1e-5)  # zeroed = skipped


def test_a_sublayer_removed_alone_is_skipped_and_generation_uses_the_cache() -> None:
    """Block 0 loses its attention, block 2 its MLP: the per-layer model still generates like the masked one."""
    model = tiny_llama()
    plan = StructurePlan((BlockPlan(attention=False), BlockPlan(), BlockPlan(mlp=False), BlockPlan(channels=(1, 2))))
    full, small = masked(model, plan), shrink(model, plan)
    assert small.model.layers[0].self_attn is None and small.model.layers[2].mlp is None
    assert small.model.layers[1].self_attn.layer_idx == 0  # the cache numbers attentions only
    assert torch.allclose(logits(small), logits(full), atol=1e-5)
    prompt = inputs()[:, :4]
    same = small.generate(prompt, max_new_tokens=3, do_sample=False)
    assert torch.equal(same, full.generate(prompt, max_new_tokens=3, do_sample=False))


def test_uniform_needs_equal_widths_both_sublayers_and_heads_dividing_the_hidden_size() -> None:
    model = tiny_llama()
    assert is_uniform(model, StructurePlan((BlockPlan(kv_groups=(1,), channels=(0, 1)),) * BLOCKS))
    assert not is_uniform(model, StructurePlan((BlockPlan(mlp=False),) + (BlockPlan(),) * 3))
    assert not is_uniform(model, StructurePlan((BlockPlan(channels=(0,)),) + (BlockPlan(),) * 3))
    wide = LlamaForCausalLM(LlamaConfig(
        vocab_size=16, hidden_size=48, intermediate_size=8, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=3, head_dim=8, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    ))  # fmt: skip
    # 2 of 3 groups keep 4 of 6 query heads, and 48 % 4 == 0: a plain config describes it
    assert is_uniform(wide, StructurePlan((BlockPlan(kv_groups=(0, 2)),) * 2))
    odd = LlamaForCausalLM(LlamaConfig(
        vocab_size=16, hidden_size=32, intermediate_size=8, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=4, head_dim=4, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    ))  # fmt: skip
    plan = StructurePlan((BlockPlan(kv_groups=(0, 1, 2)),) * 2)  # 6 query heads do not divide 32
    assert not is_uniform(odd, plan)
    assert isinstance(shrink(odd, plan), PrunedLlamaForCausalLM)


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        (StructurePlan.dense(BLOCKS - 1), "lists 3 blocks"),
        (StructurePlan((BlockPlan(kv_groups=(2,)),) + (BlockPlan(),) * 3), "below 2"),
        (StructurePlan((BlockPlan(channels=(3, 1)),) + (BlockPlan(),) * 3), "increasing"),
        (StructurePlan((BlockPlan(kv_groups=()),) + (BlockPlan(),) * 3), "remove the sublayer"),
    ],
)
def test_a_plan_that_does_not_fit_is_one_clear_error(plan: StructurePlan, words: str) -> None:
    with pytest.raises(ShrinkError, match=words):
        shrink(tiny_llama(), plan)


def test_shrinking_a_shrunk_model_is_refused() -> None:
    model = tiny_llama()
    small = shrink(model, StructurePlan((BlockPlan(mlp=False),) + (BlockPlan(),) * 3))
    with pytest.raises(ShrinkError, match="already shrunk"):
        shrink(small, StructurePlan.dense(BLOCKS))
