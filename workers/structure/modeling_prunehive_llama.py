"""A Llama whose decoder blocks each keep their own number of attention heads and MLP channels.

Structured pruning leaves blocks of different widths, and may remove a block's attention or its MLP
alone; a plain ``LlamaConfig`` describes one width for every block. This file is written next to an
exported model's ``config.json`` (``auto_map``) and loaded with ``trust_remote_code=True``, as
Nemotron-NAS and DeciLM models are, so it imports only torch and transformers: the exported directory
works without prunehive. Per block, the config lists the query heads, the key/value heads and the MLP
channels; 0 heads (or 0 channels) means that sublayer is removed and its residual branch skipped.
Everything else (embeddings, norms, rotary embeddings, the head, generation) is Llama's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)


class PrunedLlamaConfig(LlamaConfig):
    """LlamaConfig plus per-block widths (one entry per kept block, in order).

    ``num_attention_heads``/``num_key_value_heads``/``intermediate_size`` stay the original widths
    (they fix the query heads per KV group and the head size); the ``layer_*`` lists hold what each
    block keeps."""

    model_type = "prunehive_llama"
    layer_num_attention_heads: list[int] | None = None
    layer_num_key_value_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None

    def block_widths(self, index: int) -> tuple[int, int, int]:
        """(query heads, key/value heads, MLP channels) of block ``index``; the full widths when unset."""
        heads = self.layer_num_attention_heads
        kv = self.layer_num_key_value_heads
        mlp = self.layer_intermediate_sizes
        return (
            int(heads[index]) if heads is not None else int(self.num_attention_heads),
            int(kv[index]) if kv is not None else int(self.num_key_value_heads or self.num_attention_heads),
            int(mlp[index]) if mlp is not None else int(self.intermediate_size),
        )


def _linear(rows: int, cols: int, bias: bool) -> nn.Linear:
    return nn.Linear(cols, rows, bias=bias)


class PrunedLlamaDecoderLayer(LlamaDecoderLayer):
    """A Llama block with its own widths; a sublayer of width 0 is absent and its residual branch skipped.

    ``attention_index`` numbers only the blocks that keep attention, so a key/value cache holds one
    entry per attention and its first entry always exists."""

    def __init__(self, config: PrunedLlamaConfig, layer_idx: int, attention_index: int) -> None:
        nn.Module.__init__(self)
        self.hidden_size = config.hidden_size
        heads, kv_heads, channels = config.block_widths(layer_idx)
        head_dim = int(config.head_dim or config.hidden_size // config.num_attention_heads)
        self.self_attn: LlamaAttention | None = None  # type: ignore[assignment]
        self.input_layernorm: LlamaRMSNorm | None = None  # type: ignore[assignment]
        if heads > 0:
            attn = LlamaAttention(config=config, layer_idx=attention_index)
            bias = bool(config.attention_bias)
            attn.q_proj = _linear(heads * head_dim, config.hidden_size, bias)
            attn.k_proj = _linear(kv_heads * head_dim, config.hidden_size, bias)
            attn.v_proj = _linear(kv_heads * head_dim, config.hidden_size, bias)
            attn.o_proj = _linear(config.hidden_size, heads * head_dim, bias)
            attn.num_key_value_groups = heads // kv_heads
            self.self_attn = attn
            self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp: LlamaMLP | None = None  # type: ignore[assignment]
        self.post_attention_layernorm: LlamaRMSNorm | None = None  # type: ignore[assignment]
        if channels > 0:
            mlp = LlamaMLP(config)
            bias = bool(config.mlp_bias)
            mlp.intermediate_size = channels
            mlp.gate_proj = _linear(channels, config.hidden_size, bias)
            mlp.up_proj = _linear(channels, config.hidden_size, bias)
            mlp.down_proj = _linear(config.hidden_size, channels, bias)
            self.mlp = mlp
            self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.self_attn is not None and self.input_layernorm is not None:
            attended, _ = self.self_attn(self.input_layernorm(hidden_states), *args, **kwargs)
            hidden_states = hidden_states + attended
        if self.mlp is not None and self.post_attention_layernorm is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


class PrunedLlamaModel(LlamaModel):
    """LlamaModel built from per-block widths; its forward pass is Llama's."""

    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig) -> None:
        LlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        layers, attention_index = [], 0
        for index in range(config.num_hidden_layers):
            layers.append(PrunedLlamaDecoderLayer(config, index, attention_index))
            attention_index += int(config.block_widths(index)[0] > 0)
        self.layers = nn.ModuleList(layers)
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    """LlamaForCausalLM over a ``PrunedLlamaModel``."""

    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig) -> None:
        LlamaPreTrainedModel.__init__(self, config)
        self.model = PrunedLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
