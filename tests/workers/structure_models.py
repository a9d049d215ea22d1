"""Tiny grouped-query Llamas built from configs, shared by the structure tests (seconds, no training)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

HIDDEN, HEADS, KV, HEAD_DIM, CHANNELS, BLOCKS = 32, 4, 2, 8, 48, 4


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """Four GQA blocks (4 query heads over 2 KV groups), random weights: a fast stand-in for a real Llama."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=CHANNELS, num_hidden_layers=BLOCKS,
        num_attention_heads=HEADS, num_key_value_heads=KV, head_dim=HEAD_DIM, max_position_embeddings=32,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def inputs() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(inputs(), use_cache=False).logits
    return out
