"""Tiny grouped-query Llama tasks built from configs, for the structured-pruning tests.

Real ``LlamaForCausalLM`` modules (4 query heads over 2 KV heads, hidden size 32, a gated MLP of 64
channels) with random weights and token data that repeats short patterns, so activations are not all
alike; everything stays in memory and takes milliseconds.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.tasks.base import Batch, QualityKind, Split, Task

SEQ = 16


def llama(layers: int = 3, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, max_position_embeddings=SEQ, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model.eval()


def tokens(rows: int, seed: int) -> torch.Tensor:
    """Rows of SEQ + 1 tokens: a short random motif repeated, with noise."""
    gen = torch.Generator().manual_seed(seed)
    motif = torch.randint(0, 64, (rows, 5), generator=gen)
    data = motif.repeat(1, (SEQ + 1) // 5 + 1)[:, : SEQ + 1]
    noise = torch.rand(data.shape, generator=gen) < 0.2
    return torch.where(noise, torch.randint(0, 64, data.shape, generator=gen), data)


class TinyLlamaTask(Task):
    name: ClassVar[str] = "tiny-llama"
    quality: ClassVar[QualityKind] = "perplexity"
    batch_size: int = 32
    eval_batch_size: int = 64

    def __init__(self, seed: int = 0, layers: int = 3) -> None:
        super().__init__(seed)
        self.layers = layers

    def load_model(self) -> nn.Module:
        return llama(self.layers)  # type: ignore[no-any-return]

    def split(self, name: Split) -> Batch:
        rows = tokens(
            {"train": 512, "validation": 128, "test": 128}[name], {"train": 1, "validation": 2, "test": 3}[name]
        )
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def tiny_llama(seed: int = 0) -> Task:
    return TinyLlamaTask(seed)


def one_block_llama(seed: int = 0) -> Task:
    return TinyLlamaTask(seed, layers=1)
