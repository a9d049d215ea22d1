"""code-lm-deep: code-lm's data and byte tokenizer with a 12-block grouped-query Llama.

code-lm's four blocks leave depth search little to choose from and make any per-block allocation look
alike. This model has twelve decoder blocks, grouped-query attention (8 query heads sharing 4 key/value
heads, so a head unit is one KV group with its two query heads) and a gated (SwiGLU) MLP, as the Llama,
Qwen and Mistral families have, while staying small enough to train on first use in minutes on a laptop.
Everything else is code-lm's: the fixed standard-library corpus and its splits, deterministic training,
the shipped seed-0 directory under ``weights/code-lm-deep`` and the cache for other seeds.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any, ClassVar

from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from prunehive.workers.tasks.code_corpus import TRAIN_FILES, read_sources
from prunehive.workers.tasks.code_lm import CONTEXT, CodeLMTask

# 128 wide like code-lm; head_dim 16 gives 8 query heads and 4 KV groups to choose from per block;
# 256 MLP channels split into groups of 4 (2:4) and of 32 (channel levels).
DEEP_CONFIG: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "max_position_embeddings": CONTEXT,
    "tie_word_embeddings": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}


class CodeLMDeepTask(CodeLMTask):
    """Next-byte prediction on Python source with a 12-block GQA Llama; quality is held-out perplexity."""

    name: ClassVar[str] = "code-lm-deep"
    description: ClassVar[str] = (
        "Byte-level 12-block grouped-query Hugging Face Llama on Python stdlib source, scored on held-out files."
    )
    # Fewer, larger steps than code-lm: each step costs about three of code-lm's, and first use must train
    # in at most 15 minutes on two cores.
    train_steps: int = 1200
    lr: float = 1.5e-3

    def architecture(self) -> nn.Module:
        return LlamaForCausalLM(LlamaConfig(**DEEP_CONFIG))

    def fingerprint(self) -> str:
        """The configuration, the recipe and the training bytes (held-out files left out, as code-lm)."""
        recipe = f"LlamaForCausalLM|{json.dumps(DEEP_CONFIG, sort_keys=True)}|{self.train_steps}|{self.lr}|"
        recipe += f"{self.batch_size}|{self.seed}|{_training_digest()}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]


@cache
def _training_digest() -> str:
    """One hash over the training files' hashes: a changed corpus makes another model."""
    digest = hashlib.sha256()
    for src in read_sources(TRAIN_FILES):
        digest.update(hashlib.sha256(src).digest())
    return digest.hexdigest()
